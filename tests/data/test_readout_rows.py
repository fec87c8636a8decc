"""Closed readouts -> SSReadout rows: mV conversion, absent modules, headers, numbering."""

import numpy as np

from ssdaq.data.readout import SSREADOUT_BYTES, SSReadout
from ssdaq.data.readout_rows import Published, close, records_to_mv
from ssdaq.data.slowsignal import (
    CHANNEL_WORDS,
    ModuleMap,
    adc_to_mv,
    decode,
    encode_records,
    ipv4_raw,
    to_batch,
)

RNG = np.random.default_rng(7)


def records(tacks: list[int]) -> np.ndarray:
    """Decoded records (n, 72 big-endian words) with random ADC words."""
    words = RNG.integers(0, 0x10000, (len(tacks), 64), dtype=np.uint16)
    data = encode_records(np.array(tacks, np.uint64), words).tobytes()
    return decode(*to_batch([data]), ipv4_raw(["1.1.1.100"]), ModuleMap()).words


def test_records_to_mv_equals_adc_to_mv_of_the_channel_words():
    words = records([1, 2, 3])
    out = records_to_mv(words, np.empty((3, 64)))
    assert (out == adc_to_mv(words[:, CHANNEL_WORDS])).all()


def test_closed_readouts_become_subscriber_readable_rows():
    raw = np.zeros((2, 32, 72), ">u2")
    raw[0, 5], raw[0, 7], raw[1, 3] = records([1005, 1007, 2003])
    present = np.zeros((2, 32), bool)
    present[0, [5, 7]] = present[1, 3] = True
    unexpected = np.ones(32, bool)
    unexpected[[3, 5, 7]] = False
    pub = close(raw, present, unexpected, np.array([3 * 10**9 + 4, -1]), np.array([11, 12]))
    assert pub.complete.tolist() == [False, False] and pub.n_modules.tolist() == [2, 1]
    assert pub.arrived_ns.tolist() == [11, 12]
    first, second = (SSReadout.from_bytes(row.tobytes()) for row in pub.rows)
    assert pub.rows.shape[1] * 8 == SSREADOUT_BYTES
    assert (first.iro, first.time, first.cpu_t_s, first.cpu_t_ns) == (0, 1005, 3, 4)
    assert (second.time, second.cpu_t_s, second.cpu_t_ns) == (2003, 0, 0)  # CPU time clipped at 0
    assert first.modules_present.tolist() == [5, 7] and second.modules_present.tolist() == [3]
    assert (first.data[5] == adc_to_mv(raw[0, 5, CHANNEL_WORDS])).all()
    assert np.isnan(first.data[6]).all()


def test_numbers_are_written_into_the_headers():
    raw, present = np.zeros((3, 32, 72), ">u2"), np.ones((3, 32), bool)
    pub = Published.concat([Published.empty(), close(raw, present, ~present[0], np.zeros(3, int),
                                                      np.zeros(3, int))])
    assert pub.number(7) == 10 and pub.header[:, 0].tolist() == [7, 8, 9]
    assert pub.complete.all()
