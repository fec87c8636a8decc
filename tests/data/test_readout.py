"""SSReadout: byte layout of the original SSDAQ, round trips, malformed input, helpers."""

import struct

import numpy as np
import pytest

from ssdaq.core.errors import FormatError
from ssdaq.data.mapping import ssl2asic_ch, ssl2colrow
from ssdaq.data.readout import (
    N_CAM_PIX,
    N_TM,
    N_TM_PIX,
    SSREADOUT_BYTES,
    SSReadout,
    iro_tack,
    peek,
)

IRO, TACK, CPU_S, CPU_NS = 41, 1_573_000_000_123_456_789, 1_573_000_000, 987_654_321


def sample_data(absent: tuple[int, ...] = (4, 31)) -> np.ndarray:
    data = np.arange(N_CAM_PIX, dtype=float).reshape(N_TM, N_TM_PIX) * 0.0763
    data[list(absent)] = np.nan
    return data


def wire_bytes(data: np.ndarray) -> bytes:
    """The readout built independently of SSReadout: "<4Q" then 2048 little-endian doubles."""
    values = [float(v) for v in data.ravel()]
    return struct.pack("<4Q", IRO, TACK, CPU_S, CPU_NS) + struct.pack(f"<{N_CAM_PIX}d", *values)


def test_layout_constants_match_the_original_format() -> None:
    assert (N_TM, N_TM_PIX, N_CAM_PIX, SSREADOUT_BYTES) == (32, 64, 2048, 16416)


def test_pack_gives_the_original_bytes() -> None:
    data = sample_data()
    assert SSReadout(TACK, IRO, CPU_S, CPU_NS, data).pack() == wire_bytes(data)


def test_serialize_is_pack() -> None:
    readout = SSReadout(TACK, IRO, CPU_S, CPU_NS, sample_data())
    assert readout.serialize() == readout.pack()


def test_unpack_fills_the_instance_from_original_bytes() -> None:
    data = sample_data()
    readout = SSReadout()
    readout.unpack(wire_bytes(data))
    assert (readout.iro, readout.time, readout.cpu_t_s, readout.cpu_t_ns) == (
        IRO,
        TACK,
        CPU_S,
        CPU_NS,
    )
    np.testing.assert_array_equal(readout.data, data)


@pytest.mark.parametrize("decode", [SSReadout.from_bytes, SSReadout.deserialize])
def test_decode_then_pack_gives_the_same_bytes(decode) -> None:
    raw = wire_bytes(sample_data())
    assert decode(raw).pack() == raw


def test_new_readout_has_every_module_absent() -> None:
    readout = SSReadout()
    assert readout.data.shape == (N_TM, N_TM_PIX)
    assert np.isnan(readout.data).all()
    assert len(readout.modules_present) == 0


@pytest.mark.parametrize("size", [0, 32, SSREADOUT_BYTES - 1, SSREADOUT_BYTES + 1, 2 * 16416])
def test_wrong_length_raises_bad_size(size: int) -> None:
    with pytest.raises(FormatError) as err:
        SSReadout.from_bytes(bytes(size))
    assert err.value.reason == "bad_size"


def test_pack_refuses_data_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError):
        SSReadout(data=np.zeros((N_TM, N_TM_PIX - 1))).pack()


def test_cpu_t_adds_the_nanoseconds_to_the_seconds() -> None:
    assert SSReadout(cpu_t_s=10, cpu_t_ns=250_000_000).cpu_t == pytest.approx(10.25)


def test_modules_present_lists_the_rows_that_are_not_nan() -> None:
    absent = (0, 4, 17, 31)
    readout = SSReadout(data=sample_data(absent))
    assert readout.modules_present.tolist() == [m for m in range(N_TM) if m not in absent]


@pytest.mark.parametrize(
    ("attribute", "table"),
    [("asic_mapped_data", ssl2asic_ch), ("colrow_mapped_data", ssl2colrow)],
)
def test_mapped_data_takes_column_table_j_into_column_j(attribute: str, table) -> None:
    data = sample_data()
    mapped = getattr(SSReadout(data=data), attribute)
    for j, raw_column in enumerate(table):
        np.testing.assert_array_equal(mapped[:, j], data[:, raw_column])


def test_peek_reads_readout_number_and_tack() -> None:
    assert peek(wire_bytes(sample_data())) == (IRO, TACK)


def test_peek_rejects_a_wrong_length() -> None:
    with pytest.raises(FormatError) as err:
        peek(bytes(100))
    assert err.value.reason == "bad_size"


def test_iro_tack_reads_a_batch_of_readouts() -> None:
    batch = [SSReadout(1000 + i, i, data=sample_data()).pack() for i in (5, 6, 8)]
    iro, tack = iro_tack(batch)
    assert iro.tolist() == [5, 6, 8]
    assert tack.tolist() == [1005, 1006, 1008]


def test_iro_tack_of_an_empty_batch_is_empty() -> None:
    iro, tack = iro_tack([])
    assert len(iro) == len(tack) == 0


def test_iro_tack_rejects_a_message_of_the_wrong_length() -> None:
    with pytest.raises(FormatError) as err:
        iro_tack([SSReadout().pack(), b"short"])
    assert err.value.reason == "bad_size"
