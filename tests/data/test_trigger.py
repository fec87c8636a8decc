"""Trigger packets V1/V2/V3: wire layout, round trips, sparse V3, validation reasons, tables.

Expected bytes are built here with struct and plain bit arithmetic, independently of the numpy
code under test.
"""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdaq.core.errors import FormatError
from ssdaq.data.trigger import (
    BusyTriggerPacketV1,
    NominalTriggerPacketV1,
    TriggerPacket,
    TriggerPacketV2,
    TriggerPacketV3,
    expected_size,
    split_valid,
    unpack,
    validate,
)

N_SP = 512


def msb_bytes(bits: list[int]) -> bytes:
    """Bits packed most significant first, as the backplane sends them."""
    assert len(bits) % 8 == 0
    return bytes(
        sum(bit << (7 - i) for i, bit in enumerate(bits[k : k + 8])) for k in range(0, len(bits), 8)
    )


def sp_major(patterns: np.ndarray, sps: list[int]) -> bytes:
    return msb_bytes([int(patterns[t, sp]) for sp in sps for t in range(patterns.shape[0])])


def v1_wire(
    mtype: int,
    tack: int,
    wire_phase: int,
    patterns: np.ndarray,
    union: list[int],
    counters: tuple[int, int, int, int],
    spare: int = 22,
) -> bytes:
    return (
        struct.pack("<HBBQB", 0xCAFE, mtype, spare, tack, wire_phase)
        + sp_major(patterns, list(range(N_SP)))
        + msb_bytes(union)
        + struct.pack("<3IH", *counters)
    )


def v2_head(
    mtype: int,
    samples: int,
    wire_phase: int,
    union: list[int],
    message_type: int = 0,
    error_flags: int = 0,
) -> bytes:
    body = struct.pack(
        "<2BHBQB3I", message_type, error_flags, 7, samples // 8, 123456789, wire_phase, 1, 2, 3
    )
    return struct.pack("<HB", 0xCAFE, mtype) + body + msb_bytes(union)


def random_patterns(seed: int, samples: int, sps: list[int] | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patterns = np.zeros((samples, N_SP), np.uint8)
    chosen = range(N_SP) if sps is None else sps
    for sp in chosen:
        patterns[:, sp] = rng.integers(0, 2, samples)
        patterns[rng.integers(samples), sp] = 1  # every chosen SP triggers at least once
    return patterns


def union_of(patterns: np.ndarray) -> list[int]:
    return [int(patterns[:, sp].any()) for sp in range(N_SP)]


# --- V1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NominalTriggerPacketV1, BusyTriggerPacketV1])
def test_v1_pack_gives_the_backplane_bytes(cls) -> None:
    patterns = random_patterns(1, 16)
    union = union_of(random_patterns(2, 16, sps=[3, 77, 500]))
    packet = cls(
        tack_time=2**60 + 5,
        phase=8,
        trigger_patterns=patterns,
        trigg_union=union,
        ro_count=11,
        pps_count=12,
        clock_count=13,
        source=14,
    )
    expected = v1_wire(cls.mtype, 2**60 + 5, 0b00010000, patterns, union, (11, 12, 13, 14))
    assert len(expected) == 1115
    assert packet.pack() == expected


def test_v1_unpack_reads_every_field() -> None:
    patterns = random_patterns(3, 16)
    union = union_of(random_patterns(4, 16, sps=[0, 511]))
    packet = unpack(v1_wire(1, 99, 0b00000001, patterns, union, (5, 6, 7, 8), spare=0))
    assert isinstance(packet, BusyTriggerPacketV1)
    assert packet.busy
    assert (packet.tack_time, packet.phase, packet.phase_index) == (99, 128, 7)
    assert (packet.ro_count, packet.pps_count, packet.clock_count, packet.source) == (5, 6, 7, 8)
    np.testing.assert_array_equal(packet.trigger_patterns, patterns)
    np.testing.assert_array_equal(packet.trigg_union, np.array(union, bool))
    np.testing.assert_array_equal(packet.trigg, patterns[7])
    assert packet.readout_length == 16


def test_v1_nominal_is_not_busy() -> None:
    assert not NominalTriggerPacketV1().busy


def test_v1_decode_then_pack_keeps_every_byte() -> None:
    raw = v1_wire(0, 1, 0b01000000, random_patterns(5, 16), [1] * N_SP, (1, 2, 3, 4), spare=9)
    assert unpack(raw).pack() == raw


# --- phase ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", range(8))
def test_phase_index_is_the_position_of_the_phase_bit(bit: int) -> None:
    patterns = random_patterns(bit, 16)
    raw = v1_wire(0, 1, 1 << (7 - bit), patterns, [0] * N_SP, (0, 0, 0, 0))
    packet = unpack(raw)
    assert packet.phase == 1 << bit
    assert packet.phase_index == bit
    np.testing.assert_array_equal(packet.trigg, patterns[bit])


@pytest.mark.parametrize("bit", range(8))
def test_phase_is_sent_bit_reversed(bit: int) -> None:
    raw = TriggerPacketV2(phase=1 << bit, trigger_patterns=np.zeros((8, N_SP))).pack()
    assert raw[16] == 1 << (7 - bit)


@pytest.mark.parametrize("wire_phase", [0, 0b11, 0xFF])
def test_phase_byte_that_is_not_one_bit_raises_bad_phase(wire_phase: int) -> None:
    raw = v1_wire(0, 1, wire_phase, np.zeros((16, N_SP), int), [0] * N_SP, (0, 0, 0, 0))
    with pytest.raises(FormatError) as err:
        unpack(raw)
    assert err.value.reason == "bad_phase"


@pytest.mark.parametrize("phase", [0, 3, 256])
def test_constructor_refuses_a_phase_that_is_not_one_bit(phase: int) -> None:
    with pytest.raises(ValueError):
        NominalTriggerPacketV1(phase=phase)


# --- V2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [8, 128, 2040])
def test_v2_pack_gives_the_backplane_bytes(samples: int) -> None:
    patterns = random_patterns(samples, samples)
    packet = TriggerPacketV2(
        message_type=1,
        error_flags=2,
        source=7,
        tack_time=123456789,
        phase=4,
        ro_count=1,
        pps_count=2,
        clock_count=3,
        trigger_patterns=patterns,
    )
    head = v2_head(2, samples, 0b00100000, union_of(patterns), message_type=1, error_flags=2)
    expected = head + sp_major(patterns, list(range(N_SP)))
    assert len(expected) == 93 + 64 * samples
    assert packet.pack() == expected


def test_v2_unpack_reads_every_field() -> None:
    patterns = random_patterns(6, 32)
    raw = v2_head(2, 32, 0b00000010, union_of(patterns), message_type=3, error_flags=5)
    packet = unpack(raw + sp_major(patterns, list(range(N_SP))))
    assert isinstance(packet, TriggerPacketV2)
    assert (packet.message_type, packet.error_flags, packet.source) == (3, 5, 7)
    assert (packet.tack_time, packet.phase_index, packet.readout_length) == (123456789, 6, 32)
    assert (packet.ro_count, packet.pps_count, packet.clock_count) == (1, 2, 3)
    assert packet.busy
    np.testing.assert_array_equal(packet.trigger_patterns, patterns)
    np.testing.assert_array_equal(packet.trigg_pattrns, patterns)


def test_v2_busy_is_bit_0_of_message_type() -> None:
    assert not TriggerPacketV2(message_type=0b10).busy
    assert TriggerPacketV2(message_type=0b11).busy


def test_v2_keeps_the_union_sent_on_the_wire() -> None:
    patterns = random_patterns(7, 8, sps=[10])
    union = [1] * N_SP  # wider than the patterns imply
    raw = v2_head(2, 8, 0b10000000, union) + sp_major(patterns, list(range(N_SP)))
    packet = unpack(raw)
    assert packet.trigg_union.all()
    assert packet.pack() == raw


def test_union_defaults_to_the_sps_that_triggered() -> None:
    patterns = random_patterns(8, 16, sps=[2, 300])
    packet = TriggerPacketV2(trigger_patterns=patterns)
    assert np.flatnonzero(packet.trigg_union).tolist() == [2, 300]


@pytest.mark.parametrize("samples", [0, 4, 12, 2048])
def test_v2_constructor_refuses_an_impossible_readout_length(samples: int) -> None:
    with pytest.raises(ValueError):
        TriggerPacketV2(trigger_patterns=np.zeros((samples, N_SP)))


# --- V3 -------------------------------------------------------------------------------------


def test_v3_with_one_sp_of_16_samples_decodes() -> None:
    union = [0] * N_SP
    union[100] = 1
    raw = v2_head(3, 16, 0b00001000, union) + bytes([0b10100000, 0b00000001])
    assert len(raw) == 95
    packet = unpack(raw)
    assert isinstance(packet, TriggerPacketV3)
    expected = np.zeros((16, N_SP), np.uint8)
    expected[[0, 2, 15], 100] = 1
    np.testing.assert_array_equal(packet.trigger_patterns, expected)
    assert np.flatnonzero(packet.trigg_union).tolist() == [100]
    assert packet.pack() == raw


def test_v3_with_an_empty_union_is_a_bare_header() -> None:
    raw = v2_head(3, 64, 0b00000001, [0] * N_SP)
    packet = unpack(raw)
    assert not packet.trigger_patterns.any()
    assert packet.pack() == raw


@settings(max_examples=60, deadline=None)
@given(
    sps=st.lists(st.integers(0, N_SP - 1), unique=True, max_size=40).map(sorted),
    blocks=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    bit=st.integers(0, 7),
)
def test_v3_sparse_packets_carry_patterns_for_union_sps_in_ascending_order(
    sps: list[int], blocks: int, seed: int, bit: int
) -> None:
    samples = blocks * 8
    patterns = random_patterns(seed, samples, sps=sps)
    expected = v2_head(3, samples, 1 << (7 - bit), union_of(patterns)) + sp_major(patterns, sps)
    packet = TriggerPacketV3(
        phase=1 << bit,
        trigger_patterns=patterns,
        source=7,
        tack_time=123456789,
        ro_count=1,
        pps_count=2,
        clock_count=3,
    )
    assert packet.pack() == expected
    assert len(expected) == 93 + len(sps) * samples // 8
    assert expected_size(expected[:93]) == len(expected)
    decoded = unpack(expected)
    np.testing.assert_array_equal(decoded.trigger_patterns, patterns)
    assert decoded == packet


def test_v3_refuses_patterns_outside_its_union() -> None:
    patterns = random_patterns(9, 8, sps=[1, 2])
    union = np.zeros(N_SP, bool)
    union[1] = True
    with pytest.raises(ValueError):
        TriggerPacketV3(trigger_patterns=patterns, trigg_union=union)


# --- validation -----------------------------------------------------------------------------


def valid_packets() -> list[bytes]:
    return [
        NominalTriggerPacketV1().pack(),
        BusyTriggerPacketV1().pack(),
        TriggerPacketV2(trigger_patterns=random_patterns(10, 24)).pack(),
        TriggerPacketV3(trigger_patterns=random_patterns(11, 24, sps=[5, 6, 400])).pack(),
    ]


@pytest.mark.parametrize("raw", valid_packets())
def test_valid_packets_pass_validation_and_size_from_their_header(raw: bytes) -> None:
    validate(raw)
    assert expected_size(raw[:93]) == len(raw)


def malformed() -> dict[str, tuple[bytes, str]]:
    v1 = NominalTriggerPacketV1().pack()
    v2 = TriggerPacketV2(trigger_patterns=np.ones((8, N_SP))).pack()
    v3 = TriggerPacketV3(trigger_patterns=random_patterns(12, 8, sps=[7, 8])).pack()
    zero_length = bytearray(v2)
    zero_length[7] = 0
    return {
        "empty": (b"", "bad_size"),
        "two bytes": (b"\xfe\xca", "bad_size"),
        "byte-swapped magic": (b"\xca\xfe" + v1[2:], "bad_magic"),
        "no magic": (bytes(1115), "bad_magic"),
        "type 4": (v1[:2] + b"\x04" + v1[3:], "unknown_type"),
        "type 255": (v1[:2] + b"\xff" + v1[3:], "unknown_type"),
        "V1 one byte short": (v1[:-1], "bad_size"),
        "V1 one byte long": (v1 + b"\x00", "bad_size"),
        "V2 header cut": (v2[:50], "bad_size"),
        "V2 one byte short": (v2[:-1], "bad_size"),
        "V2 readout length 0": (bytes(zero_length), "bad_size"),
        "V3 union promises more SPs": (v3[:-1], "bad_size"),
        "V3 extra byte": (v3 + b"\x00", "bad_size"),
    }


@pytest.mark.parametrize(("raw", "reason"), malformed().values(), ids=malformed().keys())
def test_malformed_packet_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    for check in (validate, unpack):
        with pytest.raises(FormatError) as err:
            check(raw)
        assert err.value.reason == reason


def test_validate_accepts_bytearray_and_memoryview() -> None:
    raw = NominalTriggerPacketV1().pack()
    validate(bytearray(raw))
    validate(memoryview(raw))
    assert unpack(memoryview(raw)) == unpack(raw)


# --- original API ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", valid_packets())
def test_triggerpacket_unpack_dispatches_on_the_type_byte(raw: bytes) -> None:
    packet = TriggerPacket.unpack(raw)
    assert packet.mtype == raw[2]
    assert type(packet).deserialize(raw).serialize() == raw


def test_subclass_unpack_refuses_another_type() -> None:
    with pytest.raises(FormatError) as err:
        TriggerPacketV2.unpack(NominalTriggerPacketV1().pack())
    assert err.value.reason == "unknown_type"


def test_repr_names_the_class_and_the_counters() -> None:
    text = repr(TriggerPacketV3(tack_time=42, ro_count=7, phase=2))
    assert text.startswith("<TriggerPacketV3 ")
    assert "tack_time=42" in text and "ro_count=7" in text and "phase_index=1" in text


def test_decoded_arrays_are_read_only() -> None:
    packet = unpack(NominalTriggerPacketV1().pack())
    with pytest.raises(ValueError):
        packet.trigger_patterns[0, 0] = 1


def test_a_batch_is_split_into_its_trigger_packets_and_the_reasons_of_the_rest() -> None:
    """What split_valid keeps is what validate accepts, in order, as views of the batch."""
    v1 = NominalTriggerPacketV1().pack()
    v2 = TriggerPacketV2(phase=1, trigger_patterns=np.zeros((8, N_SP))).pack()
    busy = BusyTriggerPacketV1().pack()
    datagrams = [v1, b"\x00" * len(v1), v2, v1[:-1], busy, b"\xfe\xca\x07" + bytes(1112), b""]
    row = max(map(len, datagrams))
    flat = bytearray(row * len(datagrams))
    for i, d in enumerate(datagrams):
        flat[i * row:i * row + len(d)] = d
    valid, bad = split_valid(memoryview(flat), row, [len(d) for d in datagrams])
    assert [bytes(v) for v in valid] == [v1, v2, busy]
    assert [(i, e.reason) for i, e in bad] == [(1, "bad_magic"), (3, "bad_size"), (5, "unknown_type"),
                                               (6, "bad_size")]
    for i, d in enumerate(datagrams):  # the same verdict as one packet at a time
        try:
            validate(d)
            assert d in map(bytes, valid)
        except FormatError as e:
            assert (i, e.reason) in [(j, f.reason) for j, f in bad]
