"""The TARGET module (TM) slow-signal datagram: decoded a whole receive batch at a time.

A datagram holds N >= 1 records of 144 bytes, big-endian ``>Q32HQ32H``: the TACK (ns) of the first
channel group, ADC words of channels 0-31, a second stamp (ignored by the assembler) and channels
32-63. Different modules may send different N.

The receiver reads datagrams in batches (``recvmmsg``) into one 2-D ``uint8`` buffer; ``decode``
turns such a batch into per-record arrays with numpy alone, because per-datagram Python costs
more than the whole budget at 10 000 readouts/s (see the performance guide).
"""

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ssdaq.data.readout import N_TM

RECORD_BYTES = 144
RECORD_DTYPE = np.dtype(
    [("tack", ">u8"), ("adc_lo", ">u2", 32), ("stamp2", ">u8"), ("adc_hi", ">u2", 32)]
)
assert RECORD_DTYPE.itemsize == RECORD_BYTES
WORDS_PER_RECORD = RECORD_BYTES // 2
# Positions of channels 0..63 among a record's 72 big-endian 16-bit words (4 words per u64 stamp).
CHANNEL_WORDS = np.r_[4:36, 40:72]

MV_PER_COUNT = 0.03815 * 2  # the camera's scale; the same double as 0.0763
ADC_SIGN = 0x8000  # the ADC word is offset binary: XOR with it gives the count

# TACKs are clipped to 0..2**62 (146 years of ns) so that differences of two fit in int64; a
# value beyond is garbage anyway, and the published header keeps the record's own bits.
TACK_LIMIT = 2**62
REJECT_REASONS = ("empty", "bad_size", "unknown_source")
UNKNOWN_SLOT = -1
_IPV4_SLOT_MOD = 100  # the camera wires module i to x.y.z.(100 + i); the old rule: octet % 100

Addresses = np.ndarray | Sequence[str]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def adc_to_mv(words: np.ndarray) -> np.ndarray:
    """Raw ADC words (any integer dtype, either byte order) to mV as float64."""
    return (np.asarray(words) ^ ADC_SIGN) * MV_PER_COUNT


def mv_to_adc(mv: np.ndarray | float) -> np.ndarray:
    """The inverse of ``adc_to_mv``, for simulators: the nearest count, clipped to 16 bits.

    It rounds where the old simulator truncated, so that a word survives the round trip
    ``mv_to_adc(adc_to_mv(w)) == w`` exactly.
    """
    counts = np.clip(np.rint(np.asarray(mv, dtype=np.float64) / MV_PER_COUNT), 0, 0xFFFF)
    return counts.astype(np.uint16) ^ np.uint16(ADC_SIGN)


def encode_records(tack: np.ndarray, words: np.ndarray, stamp2: np.ndarray | int = 0,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Records in wire layout: ``tack`` shape S, ``words`` shape S + (64,), ADC words.

    ``.tobytes()`` of the result (or of one row of it) is a datagram. ``out``: a ``RECORD_DTYPE``
    array of shape S to fill instead of a new one.
    """
    tack = np.asarray(tack)
    out = np.empty(tack.shape, RECORD_DTYPE) if out is None else out
    out["tack"] = tack
    out["stamp2"] = stamp2
    out["adc_lo"] = words[..., :32]
    out["adc_hi"] = words[..., 32:]
    return out


def to_batch(datagrams: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Copy single datagrams into the ``(buf, lengths)`` form that ``decode`` takes.

    For callers that receive one datagram at a time (and for tests); a ``recvmmsg`` reader fills
    such a buffer directly.
    """
    width = max((len(d) for d in datagrams), default=0)
    buf = np.zeros((len(datagrams), max(width, 1)), np.uint8)
    for row, data in zip(buf, datagrams):
        row[: len(data)] = np.frombuffer(data, np.uint8)
    return buf, np.fromiter((len(d) for d in datagrams), np.int64, len(datagrams))


def ipv4_raw(addresses: Sequence[str]) -> np.ndarray:
    """IPv4 address strings as the raw array a ``recvmmsg`` reader hands over (network order)."""
    return np.frombuffer(b"".join(socket.inet_aton(a) for a in addresses), ">u4")


class ModuleMap:
    """Sender address -> module slot (0..31), vectorised over a batch of senders.

    Default (the old rule): the last IPv4 octet mod 100, so x.y.z.100 .. x.y.z.131 are slots 0..31
    as the camera is wired; a result above 31 (e.g. x.y.z.150) is ``UNKNOWN_SLOT``.
    ``relaxed=True`` keeps the old ``relaxed_ip_range`` rule instead: ``octet % 100 % 32``. An explicit ``table``
    ``{address: slot}`` (IPv4 or IPv6 text) replaces the default rule entirely, and its slots are
    then the modules a readout waits for (``expected``).
    """

    def __init__(self, table: Mapping[str, int] | None = None, relaxed: bool = False) -> None:
        self.relaxed = relaxed
        self._table: dict[IPAddress, int] | None = None
        self._cache: dict[str, int] = {}
        self.expected: tuple[int, ...] = tuple(range(N_TM))
        if table is None:
            return
        self._table = {}
        for text, slot in table.items():
            try:
                addr = _unmapped(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(f"{text!r}: not an IP address") from None
            if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < N_TM:
                raise ValueError(f"{text}: slot must be an int in 0..{N_TM - 1}, got {slot!r}")
            if slot in self._table.values():
                raise ValueError(f"{text}: slot {slot} is already given to another address")
            if addr in self._table:
                raise ValueError(f"{text}: address listed twice")
            self._table[addr] = slot
        v4 = sorted((int(a), s) for a, s in self._table.items() if a.version == 4)
        self._v4_keys = np.array([a for a, _ in v4], np.uint32)
        self._v4_slots = np.array([s for _, s in v4], np.int16)
        self.expected = tuple(sorted(self._table.values()))

    def slots(self, sources: Addresses) -> np.ndarray:
        """Slots (int16, ``UNKNOWN_SLOT`` where unmapped) of a batch of senders.

        ``sources`` is either an array of raw IPv4 addresses whose bytes are in network order
        (``sockaddr_in.sin_addr`` copied as ``uint32``, or a ``>u4`` array of address values), or a
        sequence of address strings (IPv6 sockets; IPv4-mapped IPv6 addresses follow IPv4 rules).
        """
        if isinstance(sources, np.ndarray):
            return self._slots_ipv4(sources)
        return self._slots_text(sources)

    def _slots_ipv4(self, raw: np.ndarray) -> np.ndarray:
        octets = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, 4)
        if self._table is not None:
            value = octets.view(">u4").ravel()
            if not len(self._v4_keys):
                return np.full(len(value), UNKNOWN_SLOT, np.int16)
            pos = np.minimum(np.searchsorted(self._v4_keys, value), len(self._v4_keys) - 1)
            return np.where(self._v4_keys[pos] == value, self._v4_slots[pos], UNKNOWN_SLOT)
        slot = octets[:, 3].astype(np.int16) % _IPV4_SLOT_MOD
        if self.relaxed:
            return slot % N_TM
        return np.where(slot < N_TM, slot, UNKNOWN_SLOT).astype(np.int16)

    def _slots_text(self, sources: Sequence[str]) -> np.ndarray:
        cache = self._cache
        if len(cache) > 4096:  # bounded: a spray of unknown senders must not grow it forever
            cache.clear()
        for text in set(sources).difference(cache):
            cache[text] = self._slot_of(text)
        return np.array([cache[s] for s in sources], np.int16).reshape(len(sources))

    def _slot_of(self, text: str) -> int:
        try:
            addr = _unmapped(ipaddress.ip_address(text))
        except ValueError:
            return UNKNOWN_SLOT
        if self._table is not None:
            return self._table.get(addr, UNKNOWN_SLOT)
        if addr.version != 4:
            return UNKNOWN_SLOT
        return int(self._slots_ipv4(np.array([int(addr)], ">u4"))[0])


def _unmapped(addr: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` (an IPv4 sender seen on a dual-stack socket) as the IPv4 address."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, eq=False)
class RecordBatch:
    """The records of one batch of datagrams, in arrival order.

    ``tack``: int64, the TACK clipped to ``TACK_LIMIT``; ``slot``: module slot; ``words``: the
    record as 72 big-endian words (channels at ``CHANNEL_WORDS``); ``datagram``: index of the
    record's datagram in the input batch; ``age_ns``: TACK distance from this record to the last
    record of its datagram (>= 0), to estimate when a record was sampled from when its datagram
    arrived. ``datagram_slot``: slot of each accepted datagram. ``rejected``: datagrams dropped,
    per reason in ``REJECT_REASONS``; ``rejected_from``: one sender per reason, for the log line.
    """

    tack: np.ndarray
    slot: np.ndarray
    words: np.ndarray
    datagram: np.ndarray
    age_ns: np.ndarray
    datagram_slot: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_from: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tack)

    def mv(self) -> np.ndarray:
        """The (n, 64) amplitudes in mV."""
        return adc_to_mv(self.words[:, CHANNEL_WORDS])


def decode(
    buf: np.ndarray, lengths: np.ndarray, sources: Addresses, modules: ModuleMap
) -> RecordBatch:
    """Decode a batch of TM datagrams: never raises on bad input, counts it instead.

    ``buf``: ``uint8`` array (>= batch rows, max_bytes); row i holds datagram i from column 0.
    ``lengths``: bytes received per datagram (batch,); a length above ``max_bytes`` (truncated by
    the reader) counts as ``bad_size``. ``sources``: the senders, see ``ModuleMap.slots``.
    Each rejected datagram is counted once, under the first failing check: ``empty`` (length 0),
    ``bad_size`` (not a multiple of 144, or truncated), ``unknown_source``.
    """
    lengths = np.asarray(lengths, np.int64)
    batch = len(lengths)
    per_record = buf.shape[1] // RECORD_BYTES if buf.ndim == 2 else 0
    slot = modules.slots(sources) if batch else np.empty(0, np.int16)
    if batch:
        size = int(lengths[0])
        uniform = size and size % RECORD_BYTES == 0 and size <= per_record * RECORD_BYTES
        uniform = uniform and not np.count_nonzero(lengths != size)
        if uniform and not np.count_nonzero(slot == UNKNOWN_SLOT):
            return _decode_uniform(buf[:batch, :size], slot)

    n_rec = lengths // RECORD_BYTES
    empty = lengths == 0
    bad_size = ~empty & ((lengths % RECORD_BYTES != 0) | (lengths > per_record * RECORD_BYTES))
    unknown = ~empty & ~bad_size & (slot == UNKNOWN_SLOT)
    rejected, rejected_from = {}, {}
    for reason, mask in zip(REJECT_REASONS, (empty, bad_size, unknown)):
        if mask.any():
            rejected[reason] = int(mask.sum())
            rejected_from[reason] = _sender_text(sources, int(np.argmax(mask)))
    dgram = np.flatnonzero(~(empty | bad_size | unknown))
    counts = n_rec[dgram]
    record_dgram = np.repeat(dgram, counts)
    within = np.arange(len(record_dgram)) - np.repeat(np.cumsum(counts) - counts, counts)
    # Views of the buffer as records: only the last axis must be contiguous (numpy >= 1.23).
    rows = np.ascontiguousarray(buf[:batch]) if buf.strides[-1] != 1 else buf[:batch]
    cut = rows[:, : per_record * RECORD_BYTES]
    words = cut.view(">u2").reshape(batch, per_record, WORDS_PER_RECORD)[record_dgram, within]
    stamps = cut.view(">u8").reshape(batch, per_record, RECORD_BYTES // 8)[:, :, 0]
    tack = _tacks(stamps[record_dgram, within])
    last = _tacks(stamps[dgram, counts - 1])
    return RecordBatch(
        tack=tack,
        slot=np.repeat(slot[dgram], counts).astype(np.intp),
        words=words,
        datagram=record_dgram,
        age_ns=np.maximum(np.repeat(last, counts) - tack, 0),
        datagram_slot=slot[dgram].astype(np.intp),
        rejected=rejected,
        rejected_from=rejected_from,
    )


def _decode_uniform(rows: np.ndarray, slot: np.ndarray) -> RecordBatch:
    """``decode`` of the common batch: every datagram accepted and of one size (fewer calls)."""
    batch, size = rows.shape
    per = size // RECORD_BYTES
    data = np.ascontiguousarray(rows)
    stamps = _tacks(data.view(">u8").reshape(batch, per, RECORD_BYTES // 8)[:, :, 0])
    slot = slot.astype(np.intp)
    return RecordBatch(
        tack=stamps.reshape(-1),
        slot=np.repeat(slot, per),
        words=data.view(">u2").reshape(batch * per, WORDS_PER_RECORD),
        datagram=np.repeat(np.arange(batch), per),
        age_ns=np.maximum(stamps[:, -1:] - stamps, 0).reshape(-1),
        datagram_slot=slot,
    )


def _tacks(stamps: np.ndarray) -> np.ndarray:
    tacks: np.ndarray = np.minimum(stamps, TACK_LIMIT).astype(np.int64)
    return tacks


def _sender_text(sources: Addresses, i: int) -> str:
    if isinstance(sources, np.ndarray):
        return socket.inet_ntoa(np.ascontiguousarray(sources[i : i + 1]).tobytes())
    return str(sources[i])

