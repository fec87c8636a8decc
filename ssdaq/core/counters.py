"""Named counters of what a receiver took in, published and lost, with rate-limited warnings.

Every place where data can be lost bumps a counter named for what was lost (``late``,
``duplicate``, ``bad_size``, ``unknown_source``, ``evicted``, ``pub_errors``, …). ``status``,
``STATUS=`` and the monitoring message read them from here. :meth:`Counters.report` also warns,
at most once per interval per counter, with the number of events since the previous warning, so
a flood of bad packets costs one journal line per interval.
"""

import logging
import time
from collections.abc import Iterable


class Counters:
    """Monotonic integer counters plus their per-second rates over the last :meth:`tick`."""

    def __init__(self, log: logging.Logger, interval_s: float = 10.0) -> None:
        self.log = log
        self.interval_s = interval_s
        self.values: dict[str, int] = {}
        self.rates: dict[str, float] = {}
        self._at_tick: dict[str, int] = {}
        self._tick_time = time.monotonic()
        self._logged_value: dict[str, int] = {}
        self._logged_time: dict[str, float] = {}
        self._last_detail: dict[str, tuple[str, str]] = {}

    def declare(self, names: Iterable[str]) -> None:
        """Make counters show as 0 in ``status`` before anything happened."""
        for name in names:
            self.values.setdefault(name, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` events silently (for counters that are not losses)."""
        self.values[name] = self.values.get(name, 0) + n

    def __getitem__(self, name: str) -> int:
        return self.values.get(name, 0)

    def report(self, name: str, n: int = 1, detail: str = "", peer: str = "") -> None:
        """Count ``n`` lost or rejected items and warn, rate-limited, naming the peer if known."""
        if n <= 0:
            return
        self.add(name, n)
        self._last_detail[name] = (detail, peer)
        last = self._logged_time.get(name)
        if last is None or time.monotonic() - last >= self.interval_s:
            self._warn(name)

    def _warn(self, name: str) -> None:
        total = self.values[name]
        delta = total - self._logged_value.get(name, 0)
        detail, peer = self._last_detail.get(name, ("", ""))
        text = f"{name}: {delta} since last report (total {total})"
        if detail:
            text += f"; last: {detail}"
        if peer:
            text += f" from {peer}"
        self.log.warning(text, extra={"SSDAQ_COUNTER": name, "SSDAQ_PEER": peer})
        self._logged_value[name] = total
        self._logged_time[name] = time.monotonic()

    def flush_reports(self) -> None:
        """Warn about counts suppressed by the rate limit whose interval has passed."""
        now = time.monotonic()
        for name, logged in list(self._logged_value.items()):
            if self.values[name] > logged and now - self._logged_time[name] >= self.interval_s:
                self._warn(name)

    def tick(self) -> None:
        """Recompute :attr:`rates` (per second since the previous tick)."""
        now = time.monotonic()
        dt = max(now - self._tick_time, 1e-9)
        self.rates = {k: (v - self._at_tick.get(k, 0)) / dt for k, v in self.values.items()}
        self._at_tick = dict(self.values)
        self._tick_time = now
