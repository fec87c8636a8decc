"""Timing-board simulator: a zmq PUB of ``CTA.ACTL.CDTS.TriggerBunch`` messages, as the UCTS sends.

Bunch ``k`` carries ``triggers`` TriggerMessages numbered ``k * triggers + j`` (the event
counter), spaced ``1 / (rate * triggers)`` s apart in time; :func:`bunch` rebuilds any of them
so a test can check every published trigger. The socket is an XPUB, wire-identical to the
board's PUB for subscribers, so the simulator can wait until a subscription arrived before it
sends (``--wait-subscriber``): zmq drops what a PUB sends before that.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass

import zmq

from ssdaq import streams
from ssdaq.data.messages import TriggerBunch

NAME = "timing"
DEFAULT_BIND = streams.get("timestamp").input_endpoint("127.0.0.1")
_PS = 10**12


@dataclass(frozen=True)
class TimingSimConfig:
    """What to send; :func:`bunch` gives the exact message of each bunch."""

    rate: float = 10.0
    count: int = 100
    triggers: int = 10
    telescope: int = 1
    t0_ns: int = 0

    def trigger_time_ps(self, event: int) -> int:
        """Time of trigger ``event`` in picoseconds since the epoch."""
        return self.t0_ns * 1000 + round(event * _PS / (self.rate * self.triggers))


@dataclass
class TimingSimSummary:
    bind: str
    bunches: int = 0
    triggers: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = self.bunches / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"timing: published {self.bunches} TriggerBunch messages ({self.triggers} triggers) "
            f"on {self.bind} in {self.elapsed_s:.2f} s ({rate:.1f} bunches/s)"
        )


def bunch(cfg: TimingSimConfig, k: int) -> TriggerBunch:
    """Bunch ``k`` of ``cfg``."""
    out = TriggerBunch(telescope=cfg.telescope, bunch_counter=k)
    for j in range(cfg.triggers):
        event = k * cfg.triggers + j
        ps = cfg.trigger_time_ps(event)
        t = out.triggers.add(
            telescope=cfg.telescope,
            event_counter=event,
            pps_counter=ps // _PS,
            clock_counter=ps % _PS // 100_000,
        )
        t.time.seconds, t.time.pico_seconds = divmod(ps, _PS)
    last = cfg.trigger_time_ps(k * cfg.triggers + cfg.triggers - 1)
    out.arrival_time.seconds, out.arrival_time.pico_seconds = divmod(last, _PS)
    return out


def _wait_subscriber(sock: zmq.Socket, timeout_s: float) -> bool:
    """Wait for a subscription message (XPUB delivers them); False on timeout."""
    if sock.poll(int(timeout_s * 1000)):
        sock.recv()
        return True
    return False


def simulate(cfg: TimingSimConfig, bind: str, wait_subscriber_s: float = 0.0) -> TimingSimSummary:
    """Bind ``bind`` and publish ``cfg.count`` bunches at ``cfg.rate``; return what was sent."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 2000)  # what is queued at the end still goes out
    summary = TimingSimSummary(bind)
    try:
        sock.bind(bind)
        if wait_subscriber_s and not _wait_subscriber(sock, wait_subscriber_s):
            print(
                f"timing: no subscriber within {wait_subscriber_s:g} s; sending anyway", flush=True
            )
        start = time.monotonic()
        for k in range(cfg.count):
            if (delay := start + k / cfg.rate - time.monotonic()) > 0:
                time.sleep(delay)
            sock.send(bunch(cfg, k).SerializeToString())
            summary.bunches += 1
            summary.triggers += cfg.triggers
        summary.elapsed_s = time.monotonic() - start
    finally:
        sock.close()
        ctx.term()
    return summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="timing board: a PUB of CDTS TriggerBunch (TimestampReceiver input)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"zmq endpoint to bind ({DEFAULT_BIND})")
    p.add_argument("--rate", type=_positive, default=10.0, help="bunches/s (10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, help="bunches to send (default 100)")
    amount.add_argument("--duration", type=_positive, metavar="S", help="send for S seconds")
    p.add_argument("--triggers", type=int, default=10, help="TriggerMessages per bunch (10)")
    p.add_argument("--telescope", type=int, default=1)
    p.add_argument(
        "--wait-subscriber",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a subscriber before sending (0: do not wait)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    count = round(args.duration * args.rate) if args.duration else args.count or 100
    cfg = TimingSimConfig(
        rate=args.rate,
        count=count,
        triggers=args.triggers,
        telescope=args.telescope,
        t0_ns=time.time_ns(),
    )
    summary = simulate(cfg, args.bind, args.wait_subscriber)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
