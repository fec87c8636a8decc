"""Event builder benchmark: decode + TACK matching + SSReadout rows, with no sockets.

The input is what a ``recvmmsg`` reader hands the assembler: batches of 64 datagrams in a
``uint8`` buffer, with lengths and raw sender addresses, from 32 modules sending 10 records per
datagram, readouts 100 us apart (10 000 readouts/s of camera time). The readout pipeline is
driven as the receiver drives it: ``feed`` per batch (decode, match, rows, counts and the next
deadline), and ``expire`` once that deadline passes, with the clock following camera time. Each
figure is per published readout, the best of five rounds (CPU time of this process), beside two
baselines measured in the same run: a plain numpy copy of the same bytes (the floor) and the
old assembler's way, ``struct.unpack`` of every record with the mV conversion in Python. A batch
costs a fixed number of numpy calls, so larger batches (a reader draining more per wake-up) cost
less per readout; batches that do not hold whole readouts leave readouts open for the next batch
to match, as a live reader's do.
Bounded: about 15 s.
"""

import struct
import time
from collections.abc import Callable

import numpy as np

from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.readout_pipeline import ReadoutPipeline
from ssdaq.data.slowsignal import RECORD_BYTES, ModuleMap, decode, ipv4_raw
from ssdaq.receivers.readout_assembler import READ_BATCH
from ssdaq.simulators.tm import Packets, TMSimConfig, source_address

MODULES, RECORDS, BATCH, READOUTS = 32, 10, 64, 20_000
RATE = 10_000.0
MAX_BYTES = 1472  # a 1500 B MTU's UDP payload: what the reader's buffer rows hold
RECORD = struct.Struct(">Q32HQ32H")
TACK0, WALL_NS = 1_750_000_000 * 10**9, 1_760_000_000 * 10**9


def _stream(jitter_ns: int = 0, modules: int = MODULES,
            batch: int = BATCH) -> list[tuple[np.ndarray, ...]]:
    """The simulator's datagrams, cut into reader batches of (buffer, lengths, senders)."""
    cfg = TMSimConfig(modules=modules, rate=RATE, records_per_packet=RECORDS,
                      duration=READOUTS / RATE, tack0=TACK0, jitter_ns=jitter_ns)
    packets = Packets(cfg)
    data = np.zeros((cfg.packets_per_module * modules, MAX_BYTES), np.uint8)
    size = RECORDS * RECORD_BYTES
    for g in range(cfg.packets_per_module):
        data[g * modules : (g + 1) * modules, :size] = packets.group(g, WALL_NS)
    senders = ipv4_raw([source_address(m) for m in range(modules)])[np.arange(len(data)) % modules]
    return [(data[i : i + batch], np.full(len(data[i : i + batch]), size), senders[i : i + batch])
            for i in range(0, len(data), batch)]


def _best(stages: list[tuple[str, Callable[[], int]]], rounds: int) -> list[tuple[str, float]]:
    """CPU us per readout of each stage, the best over ``rounds`` rounds that run every stage
    in turn, so that a burst of load from other processes hits all stages alike."""
    best = {name: float("inf") for name, _ in stages}
    for _ in range(rounds):
        for name, fn in stages:
            start = time.process_time()
            n = fn()
            best[name] = min(best[name], (time.process_time() - start) / n * 1e6)
    return list(best.items())


def _build(stream: list, modules: int = MODULES) -> Callable[[], int]:
    """The receiver's calls over ``stream``. A module that never sends is absent after
    ``module_timeout_s`` of camera time; until then its readouts wait ``max_wait_s``."""
    settings = AssemblerSettings(readout_window_ns=20_000, max_wait_s=0.002, module_timeout_s=0.005)
    datagram_s = RECORDS / RATE / modules  # camera time per datagram

    def go() -> int:
        pipeline, published, now = ReadoutPipeline(settings, ModuleMap(), now=0.0), 0, 0.0
        for buf, lengths, senders in stream:
            now += len(lengths) * datagram_s
            out = pipeline.feed(buf, lengths, senders, WALL_NS, now, published + 1)
            published += len(out.readouts.rows)
            if out.next_deadline is not None and out.next_deadline <= now:
                published += len(pipeline.expire(now, published + 1).readouts.rows)
        published += len(pipeline.flush(published + 1).readouts.rows)
        counts = pipeline.builder.counts
        assert counts.late == counts.duplicate == counts.evicted == 0
        return published

    return go


def _decode_only(stream: list) -> Callable[[], int]:
    module_map = ModuleMap()
    return lambda: sum(len(decode(*batch, module_map)) for batch in stream) // MODULES


def _copy(stream: list) -> Callable[[], int]:
    out = np.empty_like(stream[0][0])

    def go() -> int:
        for buf, _, _ in stream:
            np.copyto(out[: len(buf)], buf)
        return READOUTS

    return go


def _struct_unpack(stream: list, readouts: int) -> Callable[[], int]:
    """The old assembler: per datagram, per record ``struct.unpack`` and a Python mV loop."""
    datagrams = [bytes(buf[i, : n[i]]) for buf, n, _ in stream for i in range(len(n))]
    datagrams = datagrams[: readouts // RECORDS * MODULES]

    def go() -> int:
        rows: dict[int, np.ndarray] = {}
        for i, data in enumerate(datagrams):
            module = i % MODULES
            for off in range(0, len(data), RECORD_BYTES):
                rec = RECORD.unpack_from(data, off)
                row = rows.setdefault(rec[0], np.full((MODULES, 64), np.nan))
                row[module, :32] = [(w ^ 0x8000) * 0.0763 for w in rec[1:33]]
                row[module, 32:] = [(w ^ 0x8000) * 0.0763 for w in rec[34:66]]
        return len(rows)

    return go


def run() -> None:
    stream = _stream()
    print(f"event builder: {MODULES} modules x {RECORDS} records/datagram, {BATCH}-datagram "
          f"batches, {READOUTS} readouts 100 us apart (CPU time, best of 5 rounds)")
    rows = _best([
        ("numpy copy of the same bytes (floor)", _copy(stream)),
        ("decode only", _decode_only(stream)),
        ("decode + build, all 32 modules", _build(stream)),
        ("  same, TACKs jittered +-5 us", _build(_stream(jitter_ns=5_000))),
        ("  same, 1 module absent (NaN rows)", _build(_stream(modules=31), 31)),
        ("  same, 50-datagram batches", _build(_stream(batch=50))),
        (f"  same, {READ_BATCH}-datagram batches (the receiver's)", _build(_stream(batch=READ_BATCH))),
    ], rounds=5)
    rows += _best([("per-record struct.unpack (old way)", _struct_unpack(stream, 1000))], 1)
    builder_us = rows[2][1]
    print(f"  {'stage':<44} {'us/readout':>10} {'readouts/s':>11} {'vs builder':>10}")
    for name, us in rows:
        print(f"  {name:<44} {us:>10.2f} {1e6 / us:>11,.0f} {us / builder_us:>9.2f}x")
    print(f"  builder CPU at 10 000 readouts/s: {builder_us * 1e4 / 1e6:.0%} of a core "
          f"(old way: {rows[-1][1] * 1e4 / 1e6:.0%})")
