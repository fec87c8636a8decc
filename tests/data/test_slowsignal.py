"""The TM datagram format: layout, ADC -> mV, batch decoding, rejects and sender -> slot mapping."""

import re
import struct

import numpy as np
import pytest

from ssdaq.data.slowsignal import (
    MV_PER_COUNT,
    RECORD_BYTES,
    TACK_LIMIT,
    UNKNOWN_SLOT,
    ModuleMap,
    adc_to_mv,
    decode,
    encode_records,
    ipv4_raw,
    mv_to_adc,
    to_batch,
)

RECORD = struct.Struct(">Q32HQ32H")
ALL_WORDS = np.arange(0x10000, dtype=np.uint16)


def struct_datagram(tacks: list[int], first_word: int) -> bytes:
    """A datagram packed with the original ``>Q32HQ32H`` struct, words counting up."""
    out = b""
    for i, tack in enumerate(tacks):
        w = [(first_word + 64 * i + c) & 0xFFFF for c in range(64)]
        out += RECORD.pack(tack, *w[:32], tack // 2, *w[32:])
    return out


def words_of(datagram: bytes) -> np.ndarray:
    """Channel words 0..63 of each record, unpacked with the original struct."""
    return np.array([(lambda t: t[1:33] + t[34:66])(RECORD.unpack_from(datagram, off))
                     for off in range(0, len(datagram), RECORD_BYTES)], np.uint16)


def test_record_size_is_144_bytes():
    assert RECORD.size == RECORD_BYTES == encode_records([0], np.zeros((1, 64), int)).itemsize


def test_scale_is_the_camera_constant_exactly():
    assert MV_PER_COUNT == 0.03815 * 2.0 == 0.0763


def test_adc_to_mv_matches_the_original_branchy_conversion_for_every_word():
    original = [((w + 0x8000) if w < 0x8000 else (w & 0x7FFF)) * 0.03815 * 2.0
                for w in range(0x10000)]
    assert adc_to_mv(ALL_WORDS).tolist() == original


def test_count_500_is_38_15_mv():
    assert adc_to_mv(np.uint16(500 ^ 0x8000)) == 500 * 0.0763


def test_mv_to_adc_inverts_adc_to_mv_for_every_word():
    assert (mv_to_adc(adc_to_mv(ALL_WORDS)) == ALL_WORDS).all()


def test_mv_to_adc_clips_out_of_range_values():
    assert mv_to_adc(np.array([-5.0, 1e9])).tolist() == [0 ^ 0x8000, 0xFFFF ^ 0x8000]


def test_encode_records_is_byte_identical_to_the_original_struct():
    tacks = [10**18 + i * 100_000_000 for i in range(3)]
    expected = struct_datagram(tacks, 1000)
    words = words_of(expected)
    assert encode_records(np.array(tacks), words, np.array(tacks) // 2).tobytes() == expected


def test_decode_gives_tack_slot_and_words_of_each_record_with_different_n_per_datagram():
    a = struct_datagram([5_000, 6_000, 7_000], 0)
    b = struct_datagram([5_001], 9000)
    batch = decode(*to_batch([a, b]), ipv4_raw(["10.1.1.103", "10.1.1.131"]), ModuleMap())
    assert batch.tack.tolist() == [5_000, 6_000, 7_000, 5_001]
    assert batch.slot.tolist() == [3, 3, 3, 31]
    assert batch.datagram.tolist() == [0, 0, 0, 1]
    assert batch.datagram_slot.tolist() == [3, 31]
    assert (batch.mv() == adc_to_mv(np.concatenate([words_of(a), words_of(b)]))).all()
    assert batch.rejected == {}


def test_age_is_the_tack_distance_to_the_last_record_of_the_datagram():
    batch = decode(*to_batch([struct_datagram([100, 250, 400], 0)]), ipv4_raw(["1.2.3.100"]),
                   ModuleMap())
    assert batch.age_ns.tolist() == [300, 150, 0]


def test_uniform_and_mixed_batches_decode_alike():
    good = [struct_datagram([1000 * i + j for j in range(4)], 7 * i) for i in range(5)]
    senders = [f"127.0.0.{100 + i}" for i in range(5)]
    uniform = decode(*to_batch(good), ipv4_raw(senders), ModuleMap())
    mixed = decode(*to_batch(good + [b"x" * 10]), ipv4_raw(senders + ["127.0.0.100"]), ModuleMap())
    for field in ("tack", "slot", "datagram", "age_ns", "datagram_slot"):
        assert getattr(uniform, field).tolist() == getattr(mixed, field).tolist()
    assert (uniform.words == mixed.words).all()


def test_bad_datagrams_are_counted_per_reason_with_a_sender_and_never_raise():
    good = struct_datagram([1, 2], 0)
    datagrams = [b"", good[:100], good + b"\0", good, good, b"\0" * 144]
    senders = ["127.0.0.100", "127.0.0.101", "127.0.0.102", "127.0.0.150", "127.0.0.104",
               "127.0.0.105"]
    batch = decode(*to_batch(datagrams), ipv4_raw(senders), ModuleMap())
    assert batch.rejected == {"empty": 1, "bad_size": 2, "unknown_source": 1}
    assert batch.rejected_from == {"empty": "127.0.0.100", "bad_size": "127.0.0.101",
                                   "unknown_source": "127.0.0.150"}
    assert batch.slot.tolist() == [4, 4, 5]


def test_datagram_longer_than_the_buffer_is_a_bad_size():
    good = struct_datagram([1, 2], 0)
    buf, lengths = to_batch([good])
    lengths[0] = len(good) + RECORD_BYTES  # the reader saw it truncated to the buffer
    batch = decode(buf, lengths, ipv4_raw(["127.0.0.100"]), ModuleMap())
    assert batch.rejected == {"bad_size": 1} and len(batch) == 0


def test_empty_batch_decodes_to_nothing():
    batch = decode(np.zeros((0, 1472), np.uint8), np.zeros(0, int), ipv4_raw([]), ModuleMap())
    assert len(batch) == 0 and batch.rejected == {}


def test_tack_beyond_the_limit_is_clipped_not_wrapped():
    batch = decode(*to_batch([struct_datagram([2**64 - 1, 2**63], 0)]), ipv4_raw(["1.1.1.100"]),
                   ModuleMap())
    assert batch.tack.tolist() == [TACK_LIMIT, TACK_LIMIT]


@pytest.mark.parametrize(("address", "slot"), [
    ("192.168.1.100", 0), ("192.168.1.120", 20), ("172.18.0.131", 31), ("10.0.0.220", 20),
    ("127.0.0.99", UNKNOWN_SLOT), ("127.0.0.132", UNKNOWN_SLOT), ("127.0.0.150", UNKNOWN_SLOT),
])
def test_default_slot_is_last_octet_mod_100_within_the_camera_range(address, slot):
    assert ModuleMap().slots(ipv4_raw([address])).tolist() == [slot]
    assert ModuleMap().slots([address]).tolist() == [slot]


def test_relaxed_rule_keeps_the_old_octet_mod_100_mod_32():
    raw = ipv4_raw(["1.1.1.150", "1.1.1.5", "1.1.1.231"])
    assert ModuleMap(relaxed=True).slots(raw).tolist() == [50 % 32, 5, 31]


def test_raw_addresses_in_native_uint32_from_sockaddr_give_the_same_slots():
    as_from_sin_addr = ipv4_raw(["127.0.0.101", "127.0.0.130"]).view(np.uint32)
    assert ModuleMap().slots(as_from_sin_addr).tolist() == [1, 30]


def test_ipv4_mapped_ipv6_sender_follows_the_ipv4_rule():
    assert ModuleMap().slots(["::ffff:127.0.0.107", "fe80::1", "not an address"]).tolist() == [
        7, UNKNOWN_SLOT, UNKNOWN_SLOT]


def test_explicit_table_replaces_the_default_rule_and_serves_ipv6():
    modules = ModuleMap({"10.0.0.1": 4, "fd00::17": 9, "127.0.0.105": 12})
    assert modules.expected == (4, 9, 12)
    assert modules.slots(ipv4_raw(["10.0.0.1", "127.0.0.105", "127.0.0.104"])).tolist() == [
        4, 12, UNKNOWN_SLOT]
    assert modules.slots(["fd00:0::17", "::ffff:10.0.0.1", "127.0.0.104"]).tolist() == [
        9, 4, UNKNOWN_SLOT]


def test_table_with_only_ipv6_addresses_rejects_every_ipv4_sender():
    assert ModuleMap({"fd00::1": 0}).slots(ipv4_raw(["127.0.0.100"])).tolist() == [UNKNOWN_SLOT]


@pytest.mark.parametrize("table", [
    {"10.0.0.1": 32}, {"10.0.0.1": -1}, {"10.0.0.1": True}, {"nonsense": 1},
    {"10.0.0.1": 1, "10.0.0.2": 1}, {"10.0.0.1": 1, "::ffff:10.0.0.1": 2},
])
def test_bad_table_is_rejected_naming_the_entry(table):
    with pytest.raises(ValueError, match=re.escape(list(table)[-1])):
        ModuleMap(table)

