"""Replay a recorded slow-signal file: its readouts sent again as the camera's module datagrams.

Each stored readout becomes one 144-byte record per module present (its TACK, and the ADC
counts recovered exactly from the stored mV by ``mv_to_adc``: the float32 of a count times
0.0763 mV rounds back to the count), sent from the module's own address as ``ssdaq-sim tm``
does, ``--records-per-packet`` readouts to a datagram. A module absent from a readout (NaN in
the file) sends nothing for it, so a partial readout replays as partial. Groups leave with the
recorded TACK spacing divided by ``--speed``; a TACK counter reset (a backward jump beyond 10 s)
starts a new segment, and within a segment readouts go in TACK order (the file holds them in
publication order, where a partial readout comes after the complete ones that overtook it).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ssdaq import streams
from ssdaq.core.cli import add_settings, settings_from
from ssdaq.core.config import setting
from ssdaq.data.readout import N_TM
from ssdaq.data.slowsignal import RECORD_BYTES, encode_records, mv_to_adc
from ssdaq.simulators.tm import ModuleSender

NAME = "replay"
RESET_NS = 10 * 10**9  # a backward TACK jump beyond this is the camera's counter restarting


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay."""

    speed: float = setting(1.0, help="replay this many times faster than recorded", min=1e-3)
    records_per_packet: int = setting(10, help="readouts per datagram (per module)", min=1, max=10)


@dataclass
class ReplaySummary:
    """What was sent."""

    readouts: int = 0
    partial_readouts: int = 0
    records: int = 0
    packets: int = 0
    send_errors: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        return (f"replay: {self.readouts} readouts ({self.partial_readouts} partial) in "
                f"{self.elapsed_s:.2f} s: sent {self.packets} packets, {self.records} records; "
                f"send errors {self.send_errors}")


def replay_order(tack: np.ndarray) -> np.ndarray:
    """Row indices in sending order: segments split at counter resets, each in TACK order."""
    t = tack.astype(np.int64)
    cuts = np.flatnonzero(np.diff(t) < -RESET_NS) + 1
    return np.concatenate([seg[np.argsort(t[seg], kind="stable")]
                           for seg in np.split(np.arange(len(t)), cuts)]) if len(t) else t


def groups(rows: np.ndarray, records_per_packet: int
           ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """(ns after the first readout, [(module, datagram), …]) for each group of readouts."""
    tack = rows["time"].astype(np.int64)
    elapsed = np.concatenate(([0], np.cumsum(np.maximum(np.diff(tack), 0))))
    present = ~np.isnan(rows["data"]).all(axis=2)  # (n, 32): the module sent this readout
    for start in range(0, len(rows), records_per_packet):
        g = slice(start, start + records_per_packet)
        data = rows["data"][g]
        words = mv_to_adc(np.where(np.isnan(data), 0.0, data))
        sends = []
        for module in range(N_TM):
            k = np.flatnonzero(present[g, module])
            if len(k):
                sends.append((module, encode_records(tack[g][k].astype(np.uint64),
                                                     words[k, module]).tobytes()))
        yield int(elapsed[min(start + records_per_packet, len(rows)) - 1]), sends


def read_rows(paths: list[Path]) -> np.ndarray:
    from ssdaq.io.reader import read_table  # h5py: only when replaying

    tables = [read_table(p) for p in paths]
    return np.concatenate(tables) if tables else np.empty(0)


def replay(rows: np.ndarray, cfg: ReplayConfig, host: str, port: int) -> ReplaySummary:
    """Send ``rows`` (``/SlowSignal/readout`` rows) to ``host:port``, paced; what was sent."""
    rows = rows[replay_order(rows["time"])]
    summary = ReplaySummary(readouts=len(rows))
    summary.partial_readouts = int((np.isnan(rows["data"]).all(axis=2).any(axis=1)).sum())
    sender = ModuleSender(N_TM, (host, port))
    start = time.monotonic()
    try:
        for offset_ns, sends in groups(rows, cfg.records_per_packet):
            due = start + offset_ns / 1e9 / cfg.speed
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            for module, payload in sends:
                ok = sender.send_copy(module, payload)
                summary.packets += ok
                summary.send_errors += not ok
                summary.records += ok * (len(payload) // RECORD_BYTES)
    finally:
        sender.close()
    summary.elapsed_s = time.monotonic() - start
    return summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help="a recorded slow-signal file, sent again as module "
                              "datagrams", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.hdf5",
                   help="readout files (ssdaq-writer readout), replayed in the order given")
    add_settings(p, ReplayConfig)
    p.add_argument("--port", type=int, default=streams.get("readout").input_port)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = settings_from(args, ReplayConfig)
    try:
        rows = read_rows(args.files)
    except (OSError, KeyError) as e:  # not HDF5, or no /SlowSignal/readout in it
        print(f"ssdaq-sim replay: cannot read readouts: {e}", file=sys.stderr)
        return os.EX_DATAERR
    summary = replay(rows, cfg, args.host, args.port)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
