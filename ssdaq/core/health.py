"""What systemd hears while a receiver runs: ``STATUS=`` once a second, ``WATCHDOG=1`` while healthy.

The status tick also turns the counters into rates, notes when input last arrived and lets the
rate-limited warnings out. The watchdog is fed only while the receiver reports no problem (a
task died, a reader is stuck with data waiting); an idle input is never a problem.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ssdaq.core import systemd
from ssdaq.core.counters import Counters, loss_names

#: seconds between two STATUS= lines (and two rate computations)
TICK_S = 1.0


def stall_limit_s() -> float:
    """How long data may wait unread before a reader counts as stuck: two watchdog pings, at least 2 s."""
    return max(2.0, systemd.watchdog_interval_s() or 0.0)


class Health:
    """The ``STATUS=`` and watchdog loops of one receiver (each run as one of its tasks)."""

    def __init__(self, log: logging.Logger, counters: Counters, line: Callable[[], str],
                 problem: Callable[[], str | None], refresh: Callable[[], None],
                 upkeep: Callable[[], None]) -> None:
        """``line`` and ``problem`` are the receiver's ``status_line`` and ``health_problem``;
        ``refresh`` brings the counters up to date before they are read; ``upkeep`` runs every
        tick (the publishers' periodic work)."""
        self.log, self.counters = log, counters
        self.line, self.problem, self.refresh, self.upkeep = line, problem, refresh, upkeep
        #: shown after the status line until replaced (e.g. "reload rejected, old config kept: …")
        self.note = ""
        self.last_input: float | None = None  # monotonic time "received" last grew (1 s resolution)
        self.started = time.monotonic()

    def text(self) -> str:
        """The ``STATUS=`` text: the status line and the note."""
        return self.line() + (f"; {self.note}" if self.note else "")

    def received(self) -> int:
        """The ``received`` count now (what MonitorData reports the rate of)."""
        self.refresh()
        return self.counters["received"]

    def report(self) -> dict[str, Any]:
        """The health and counters part of ``status``."""
        self.refresh()
        return {
            "last_input_s_ago": None if self.last_input is None
            else round(time.monotonic() - self.last_input, 1),
            "status_line": self.line(),
            "health": self.problem() or "ok",
            "counters": dict(self.counters.values),
            # the loss counters by reason: what the "lost N" of the status line sums
            "lost": {k: self.counters[k] for k in loss_names(self.counters.values)},
            "rates": {k: round(v, 3) for k, v in self.counters.rates.items()},
        }

    def tick(self) -> None:
        """Recompute rates, note input, let suppressed warnings out."""
        self.refresh()
        self.upkeep()
        self.counters.tick()
        if self.counters.rates.get("received"):
            self.last_input = time.monotonic()
        self.counters.flush_reports()

    async def status_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()
            systemd.notify(f"STATUS={self.text()}")

    async def watchdog_loop(self) -> None:
        """Ping at half of ``WATCHDOG_USEC`` while healthy; log once when a ping is withheld."""
        interval = systemd.watchdog_interval_s()
        if interval is None:
            return
        withheld = False
        while True:
            await asyncio.sleep(interval)
            problem = self.problem()
            if problem is None:
                systemd.notify("WATCHDOG=1")
                withheld = False
            elif not withheld:
                self.log.error("withholding the watchdog ping: %s", problem)
                withheld = True
