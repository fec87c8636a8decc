"""One shared poll of every receiver's and writer's ``status``, read by every scrape and page.

The poller asks each known receiver and writer (the same set and the same merge of systemd's unit
state with the ``status`` reply as ``ssdaqctl status``: :mod:`ssdaq.daemons`) in parallel,
each with a bounded timeout, at most once per ``interval_s``, and keeps the result as a
:class:`Snapshot`. Requests read :meth:`StatusPoller.latest` and never talk to a receiver
themselves, so a thousand scrapes cost the receivers what one does and a hung receiver costs a
scrape nothing (it shows as down in the next snapshot).

``status`` is the only command ssdaq-web sends: :func:`send` refuses every other one, so no
request to the web service can reset, pause or reload anything.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ssdaq import daemons
from ssdaq.core.commands import Connections, request
from ssdaq.daemons import ReceiverState
from ssdaq.web.config import PollSettings

#: the commands ssdaq-web may send to a receiver: read-only ones only
ALLOWED_COMMANDS = frozenset({"status"})
#: the known names are looked up again after this many polls (``systemctl list-units`` costs a
#: subprocess; a site receiver started meanwhile shows within this many seconds)
NAMES_EVERY = 10

log = logging.getLogger("ssdaq.web")


class RefusedCommand(PermissionError):
    """ssdaq-web was asked to send a command outside :data:`ALLOWED_COMMANDS`."""


def send(path: str, line: str, timeout_s: float, via: daemons.Send = request) -> dict[str, Any]:
    """``via`` (:func:`ssdaq.core.commands.request`, or a kept connection's), for the commands in
    :data:`ALLOWED_COMMANDS` only."""
    command = line.split(maxsplit=1)[0] if line.strip() else ""
    if command not in ALLOWED_COMMANDS:
        raise RefusedCommand(f"ssdaq-web sends only {', '.join(sorted(ALLOWED_COMMANDS))}, "
                             f"not {command!r}")
    return via(path, line, timeout_s)


@dataclass(frozen=True)
class Snapshot:
    """Every receiver's and writer's state at one poll."""

    #: wall-clock and monotonic time the poll started (0 for the empty snapshot before the first)
    taken_unix: float
    taken_monotonic: float
    #: how long the poll took
    duration_s: float
    #: whether systemd's unit states are part of it
    systemd: bool
    states: tuple[ReceiverState, ...] = ()
    #: why the poll failed as a whole (``states`` empty, or without unit states)
    error: str | None = None
    #: polls done so far, this one included, and how many of them failed as a whole
    polls: int = 0
    failures: int = 0
    #: per receiver: polls in which it was running but did not answer
    no_answers: dict[str, int] = field(default_factory=dict)

    def age_s(self, now_monotonic: float | None = None) -> float:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return now - self.taken_monotonic if self.polls else float("inf")

    def to_json(self) -> dict[str, Any]:
        """``ssdaqctl status --json``'s structure, plus when it was taken."""
        return {**daemons.as_json(list(self.states), self.systemd),
                "taken_unix": self.taken_unix, "age_s": round(self.age_s(), 3)}


class StatusPoller:
    """Polls at most once per ``settings.interval_s``; :meth:`latest` is the newest snapshot."""

    def __init__(self, settings: PollSettings) -> None:
        self.settings = settings
        self._systemd = (daemons.managed_by_systemd() if settings.units == "auto"
                         else settings.units == "systemd")
        self._latest = Snapshot(0.0, 0.0, 0.0, self._systemd)
        self._no_answers: dict[str, int] = {}
        self._names: list[str] = []
        # one kept connection per receiver: a new one every second costs each receiver more
        self._connections = Connections()

    def _send(self, path: str, line: str, timeout_s: float) -> dict[str, Any]:
        return send(path, line, timeout_s, via=self._connections.request)

    def latest(self) -> Snapshot:
        return self._latest

    def fresh(self, snapshot: Snapshot | None = None) -> bool:
        """Whether ``snapshot`` (default: the latest) is recent enough to export as current."""
        return (snapshot or self._latest).age_s() <= self.settings.stale_after_s

    def poll_once(self) -> Snapshot:
        """Ask everyone now (blocking, in the caller's thread) and keep the result."""
        previous = self._latest
        started, started_unix = time.monotonic(), time.time()
        try:
            if previous.polls % NAMES_EVERY == 0 or not self._names:
                self._names = daemons.known_names(self._systemd)
            states = tuple(daemons.gather(self._names, timeout_s=self.settings.timeout_s,
                                          use_systemd=self._systemd, send=self._send))
            self._connections.prune()
            error = None
            if self._systemd and not any(s.systemd for s in states):
                # e.g. the system bus refused us: the unit states below are guesses
                error = "systemctl show gave no unit state (is the system D-Bus running?)"
        except Exception as e:  # systemctl missing or timing out: say so, keep polling
            states, error = (), f"{type(e).__name__}: {e}"
        if error and not previous.error:
            log.warning("poll failed: %s", error)
        for s in states:
            if s.reply is None and s.running:
                self._no_answers[s.name] = self._no_answers.get(s.name, 0) + 1
            else:
                self._no_answers.setdefault(s.name, 0)
        self._latest = Snapshot(started_unix, started, time.monotonic() - started, self._systemd,
                                states, error, previous.polls + 1,
                                previous.failures + (error is not None), dict(self._no_answers))
        return self._latest

    def close(self) -> None:
        """Close the kept connections (the next poll would make them again)."""
        self._connections.close()

    async def run(self) -> None:
        """Poll forever, one poll at a time, starting a new one ``interval_s`` after the last began."""
        try:
            while True:
                started = time.monotonic()
                await asyncio.to_thread(self.poll_once)
                await asyncio.sleep(max(0.0, self.settings.interval_s - (time.monotonic() - started)))
        finally:
            self.close()
