"""Trigger simulator: backplane trigger packets (V1, V2 or V3) over UDP at a given rate.

Packet ``k`` is a fixed template (built with :mod:`ssdaq.data.trigger`, so the bytes are the
camera's format) whose TACK is ``tack0 + k * period`` and whose readout counter is ``k``;
:class:`PacketMaker` recomputes any of them, so a test can check every relayed byte. Every
``busy_every``-th packet is a busy trigger. Sending follows an absolute schedule (no drift), in
batches of up to 64 packets per ``sendmmsg``; ``rate = 0`` sends as fast as the socket takes
them (a 1 µs TACK step then).
"""

import argparse
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ssdaq import streams
from ssdaq.core import mmsg
from ssdaq.core.errors import EX_USAGE
from ssdaq.data import trigger

NAME = "trigger"
# Byte offsets of the fields that change from packet to packet (format facts, see data/trigger.py)
_V1_TACK_AT, _V1_COUNT_AT = 4, trigger.V1_SIZE - 14
_V2_TACK_AT, _V2_COUNT_AT = 8, 17
_V2_BUSY_BIT_AT = 3  # message_type, bit 0
_BURST_S = 0.001  # paced sending wakes up at most this often
_BATCH = 64  # packets per sendmmsg call


@dataclass(frozen=True)
class TriggerSimConfig:
    """What to send; :class:`PacketMaker` gives the exact bytes of each packet."""

    version: int = 1
    rate: float = 10.0
    count: int = 100
    tack0: int = 0
    samples: int = trigger.V2_DEFAULT_SAMPLES
    sps: int = 16
    busy_every: int = 0
    seed: int = 0

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate) if self.rate else 1000


@dataclass
class TriggerSimSummary:
    version: int
    packet_bytes: int
    sent: int = 0
    send_errors: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"trigger: sent {self.sent} V{self.version} packets ({self.packet_bytes} B) in "
            f"{self.elapsed_s:.2f} s ({rate:.0f}/s); send errors {self.send_errors}"
        )


def templates(cfg: TriggerSimConfig) -> tuple[bytes, bytes]:
    """(nominal, busy) packet 0 of ``cfg``: random patterns of the configured shape."""
    rng = np.random.default_rng(cfg.seed)
    samples = trigger.V1_SAMPLES if cfg.version == 1 else cfg.samples
    patterns = rng.random((samples, trigger.N_SP)) < 0.01
    union = np.zeros(trigger.N_SP, bool)
    union[rng.choice(trigger.N_SP, cfg.sps, replace=False)] = True
    patterns &= union  # every triggered SP is in the union, as V3 requires
    common: dict[str, Any] = {
        "tack_time": cfg.tack0,
        "phase": 1 << (cfg.seed % 8),
        "pps_count": 1,
        "clock_count": 2,
        "trigger_patterns": patterns,
        "trigg_union": union,
    }
    if cfg.version == 1:
        return (
            trigger.NominalTriggerPacketV1(**common).pack(),
            trigger.BusyTriggerPacketV1(**common).pack(),
        )
    cls = trigger.TriggerPacketV2 if cfg.version == 2 else trigger.TriggerPacketV3
    return cls(**common).pack(), cls(**common, message_type=1).pack()


class PacketMaker:
    """Writes packets into reused rows: ``maker.fill(k, n)`` is packets ``k .. k+n-1``.

    The rows are overwritten by the next call: copy what must be kept (``maker(k)`` does).
    """

    def __init__(self, cfg: TriggerSimConfig, rows: int = _BATCH) -> None:
        self.cfg = cfg
        nominal, busy = templates(cfg)
        self.templates = np.frombuffer(nominal + busy, np.uint8).reshape(2, len(nominal))
        self.rows = np.zeros((rows, len(nominal)), np.uint8)
        v1 = cfg.version == 1
        tack_at = _V1_TACK_AT if v1 else _V2_TACK_AT
        count_at = _V1_COUNT_AT if v1 else _V2_COUNT_AT
        self._tack = self.rows[:, tack_at : tack_at + 8].view("<u8")[:, 0]
        self._count = self.rows[:, count_at : count_at + 4].view("<u4")[:, 0]

    def fill(self, k: int, n: int) -> np.ndarray:
        cfg = self.cfg
        ks = np.arange(k, k + n, dtype=np.uint64)
        busy = (ks % cfg.busy_every == cfg.busy_every - 1) if cfg.busy_every else np.zeros(n, bool)
        self.rows[:n] = self.templates[busy.astype(np.intp)]
        self._tack[:n] = np.uint64(cfg.tack0) + ks * np.uint64(cfg.period_ns)
        self._count[:n] = ks & np.uint64(0xFFFFFFFF)
        return self.rows[:n]

    def __call__(self, k: int) -> bytes:
        """The bytes of packet ``k``."""
        return self.fill(k, 1)[0].tobytes()


class _BatchSender:
    """``sendmmsg`` of the maker's rows on a connected socket: one system call per batch.

    A Python ``sendto`` per packet costs ~2 µs more than the kernel's own work; at 100 000
    packets/s that is a fifth of a core the receiver under test would otherwise compete with.
    """

    def __init__(self, sock: socket.socket, rows: np.ndarray) -> None:
        self.fd = sock.fileno()
        self._iov, self._hdrs = mmsg.headers(rows)

    def send(self, n: int) -> int:
        """Send rows ``0 .. n-1``; returns how many failed (each skipped, as UDP would lose it)."""
        return mmsg.send_all(self.fd, self._hdrs, n)


def simulate(cfg: TriggerSimConfig, host: str, port: int) -> TriggerSimSummary:
    """Send ``cfg.count`` packets to ``host:port``, paced at ``cfg.rate``; return what was sent."""
    make = PacketMaker(cfg)
    summary = TriggerSimSummary(cfg.version, make.rows.shape[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sender = _BatchSender(sock, make.rows)
        start = time.monotonic()
        k = 0
        while k < cfg.count:
            due = cfg.count
            if cfg.rate:
                now = time.monotonic()
                due = min(cfg.count, int((now - start) * cfg.rate) + 1)  # packets whose time came
                first = start + k / cfg.rate  # when packet k is due
                if due <= k:
                    time.sleep(first - now)
                    continue
                # gather a whole batch, but never hold a due packet back more than _BURST_S
                full = min(cfg.count, k + len(make.rows))
                if due < full and (wait := min(first + _BURST_S, start + full / cfg.rate) - now) > 0:
                    time.sleep(wait)
                    continue
            n = min(due - k, len(make.rows))
            make.fill(k, n)
            summary.send_errors += sender.send(n)
            k += n
        summary.elapsed_s = time.monotonic() - start
    summary.sent = cfg.count - summary.send_errors
    return summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="backplane trigger packets (TriggerPacketReceiver input)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--version", type=int, choices=(1, 2, 3), default=1, help="packet format (1)")
    p.add_argument(
        "--rate", type=_rate, default=10.0, help="packets/s; 0: as fast as possible (10)"
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, help="packets to send (default 100)")
    amount.add_argument("--duration", type=float, metavar="S", help="send for S seconds at --rate")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=streams.get("trigger").input_port)
    p.add_argument(
        "--samples",
        type=_samples,
        default=trigger.V2_DEFAULT_SAMPLES,
        help="V2/V3 readout length, a multiple of 8 (128)",
    )
    p.add_argument(
        "--sps",
        type=int,
        default=16,
        choices=range(trigger.N_SP + 1),
        metavar="0..512",
        help="super-pixels in the union (16)",
    )
    p.add_argument("--busy-every", type=int, default=0, metavar="N", help="every N-th is busy")
    p.add_argument("--tack0", type=int, default=None, metavar="NS", help="TACK of packet 0 (now)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a rate >= 0, got {text!r}")
    return value


def _samples(text: str) -> int:
    value = int(text)
    if value % 8 or not 8 <= value <= 255 * 8:
        raise argparse.ArgumentTypeError(f"expected a multiple of 8 in 8..2040, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.duration is not None:
        if not args.rate:
            print("ssdaq-sim trigger: --duration needs a --rate above 0", file=sys.stderr)
            return EX_USAGE
        count = round(args.duration * args.rate)
    else:
        count = 100 if args.count is None else args.count
    cfg = TriggerSimConfig(
        version=args.version,
        rate=args.rate,
        count=count,
        tack0=time.time_ns() if args.tack0 is None else args.tack0,
        samples=args.samples,
        sps=args.sps,
        busy_every=args.busy_every,
        seed=args.seed,
    )
    summary = simulate(cfg, args.host, args.port)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
