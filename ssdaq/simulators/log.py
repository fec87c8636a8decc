"""Log sender simulator: chec.LogData records over TCP to the LogReceiver, framed or legacy.

``delimited`` sends each record behind its varint length, as :class:`ssdaq.logsender.LogSender`
does; ``legacy`` sends bare records, one ``send`` each, as the old ``ChecSocketLogHandler`` did
(TCP may still merge or split them: that is what the legacy framing cannot undo). Record ``k``
is :func:`record` (severities cycle DEBUG..FATAL), so a test can check what was published.
"""

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass

from ssdaq import streams
from ssdaq.core.errors import EX_USAGE
from ssdaq.data.messages import LogData, encode_delimited

NAME = "log"
SEVERITIES = (LogData.DEBUG, LogData.INFO, LogData.WARNING, LogData.ERROR, LogData.FATAL)


@dataclass(frozen=True)
class LogSimConfig:
    """What to send; :func:`record` gives each record."""

    count: int = 10
    rate: float = 100.0
    framing: str = "delimited"
    sender: str = "ssdaq-sim.log"
    t0_ns: int = 0
    pid: int = 4242


@dataclass
class LogSimSummary:
    framing: str
    address: str
    sent: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        return (
            f"log: sent {self.sent} records ({self.framing}, {self.bytes} B) to {self.address} "
            f"in {self.elapsed_s:.2f} s"
        )


def record(cfg: LogSimConfig, k: int) -> LogData:
    """Record ``k``: a 1 ms time step, severities in turn, line ``k + 1``."""
    return LogData(
        systemType=0,
        severity=SEVERITIES[k % len(SEVERITIES)],
        sender=cfg.sender,
        message=f"simulated record {k} of {cfg.count}",
        time=cfg.t0_ns + k * 1_000_000,
        pid=cfg.pid,
        sourceFile="ssdaq/simulators/log.py",
        line=k + 1,
    )


def encode(cfg: LogSimConfig, k: int) -> bytes:
    """The bytes record ``k`` is sent as."""
    message = record(cfg, k)
    return encode_delimited(message) if cfg.framing == "delimited" else message.SerializeToString()


def simulate(cfg: LogSimConfig, host: str, port: int) -> LogSimSummary:
    """Connect, send ``cfg.count`` records paced at ``cfg.rate``, close; return what was sent."""
    summary = LogSimSummary(cfg.framing, f"{host}:{port}")
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        for k in range(cfg.count):
            if (delay := start + k / cfg.rate - time.monotonic()) > 0:
                time.sleep(delay)
            data = encode(cfg, k)
            sock.sendall(data)
            summary.sent += 1
            summary.bytes += len(data)
        summary.elapsed_s = time.monotonic() - start
    return summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="a log sender (LogReceiver input), framed or legacy",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--framing", choices=("delimited", "legacy"), default="delimited")
    p.add_argument("--count", type=int, default=10, help="records to send (10)")
    p.add_argument("--rate", type=float, default=100.0, help="records/s (100)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=streams.get("log").input_port)
    p.add_argument("--sender", default="ssdaq-sim.log", help="LogData.sender of every record")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.rate < float("inf"):
        print(f"ssdaq-sim log: --rate must be a number > 0, got {args.rate}", file=sys.stderr)
        return EX_USAGE
    cfg = LogSimConfig(
        count=args.count,
        rate=args.rate,
        framing=args.framing,
        sender=args.sender,
        t0_ns=time.time_ns(),
        pid=os.getpid(),
    )
    summary = simulate(cfg, args.host, args.port)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
