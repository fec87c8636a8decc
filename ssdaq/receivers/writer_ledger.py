"""The loss ledger of the interval a writer's file covers, kept per process.

Intervals tile the writer's life: one begins when the writer starts, when a run starts or stops,
and whenever a file closes; it ends when the next file closes. At each bound, and every
``poll_interval_s`` in between, the writer asks every upstream receiver for ``status`` over its
command socket (and, once per process, for ``config``) and hands the answer to :meth:`observe`.

A receiver process is its pid plus its uptime: a different pid, or an uptime that went back, is
a new process (counters restart with it), so a restart inside the interval gives the new
process entries of its own that count from 0, and the old one keeps what it had counted when
it was last seen. Nothing is ever subtracted across processes, so no delta is negative.
``exact`` is false for an entry whose process did not answer at a bound (part of its counting
may then be missing: the old process's last moments before a restart, a receiver that was not
up when the interval began). The writer's own counters are an entry like the others.
"""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssdaq import daemons
from ssdaq.core.commands import NoAnswer, request, socket_path
from ssdaq.core.counters import CATALOGUE
from ssdaq.io.provenance import GAP_DTYPE, LEDGER_DTYPE


@dataclass
class Process:
    """One process of one source, as seen during the current interval."""

    source: str
    pid: int
    uptime_s: float
    started_ns: int
    at_open: dict[str, int]
    last: dict[str, int]
    exact_open: bool
    #: answered at the latest bound poll (so ``last`` is the value at that bound)
    at_bound: bool = False
    #: a later process of the same source replaced it
    ended: bool = False


def _kind(counter: str) -> str:
    spec = CATALOGUE.get(counter)
    return spec.kind if spec else "?"


class Ledger:
    """Counters of every process seen in the current interval, and the gaps seen in it."""

    def __init__(self, now_ns: int | None = None) -> None:
        self.start_ns = time.time_ns() if now_ns is None else now_ns
        self.processes: dict[str, list[Process]] = {}
        self.configs: dict[str, str] = {}
        self.dropins: dict[str, str] = {}
        self.gaps: list[tuple[str, str, int, int, int, int]] = []

    def is_new(self, source: str, status: dict[str, Any]) -> bool:
        """True when ``status`` comes from a process not seen before in this interval."""
        procs = self.processes.get(source)
        return not procs or procs[-1].pid != status["pid"] or \
            status["uptime_s"] < procs[-1].uptime_s

    def observe(self, source: str, status: dict[str, Any] | None, bound: bool = False,
                now_ns: int | None = None) -> None:
        """Take one ``status`` answer of ``source`` (None: it did not answer)."""
        if status is None:
            if bound and self.processes.get(source):
                self.processes[source][-1].at_bound = False
            return
        procs = self.processes.setdefault(source, [])
        now = time.time_ns() if now_ns is None else now_ns
        counters = {k: int(v) for k, v in status["counters"].items()}
        if self.is_new(source, status):
            started = now - int(status["uptime_s"] * 1e9)
            inside = started >= self.start_ns  # it counted nothing before the interval began
            if procs:
                procs[-1].ended = True
            procs.append(Process(source, int(status["pid"]), status["uptime_s"], started,
                                 dict.fromkeys(counters, 0) if inside else dict(counters),
                                 dict(counters), exact_open=inside or bound))
        current = procs[-1]
        current.last, current.uptime_s, current.at_bound = counters, status["uptime_s"], bound

    def gap(self, column: str, before: int, after: int, arrival_ns: int) -> None:
        self.gaps.append((column, "gap", before, after, after - before - 1, arrival_ns))

    def restart(self, column: str, before: int, after: int, arrival_ns: int) -> None:
        self.gaps.append((column, "restart", before, after, 0, arrival_ns))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The ledger and gap tables of the interval so far (``/Provenance/ledger``, ``gaps``)."""
        ledger = []
        for procs in self.processes.values():
            for p in procs:
                exact = p.exact_open and p.at_bound and not p.ended
                for name in sorted(set(p.at_open) | set(p.last)):
                    opened, closed = p.at_open.get(name, 0), p.last.get(name, 0)
                    ledger.append((p.source, p.pid, p.started_ns / 1e9, name, _kind(name), opened,
                                   closed, closed - opened, exact))
        return np.array(ledger, LEDGER_DTYPE), np.array(self.gaps, GAP_DTYPE)

    def next(self, now_ns: int | None = None) -> "Ledger":
        """The ledger of the interval that begins where this one ends (after its bound poll):
        each process that answered at the bound carries on from its value there."""
        nxt = Ledger(now_ns)
        for source, procs in self.processes.items():
            p = procs[-1]
            if p.at_bound and not p.ended:
                nxt.processes[source] = [Process(source, p.pid, p.uptime_s, p.started_ns,
                                                 dict(p.last), dict(p.last), exact_open=True)]
                if source in self.configs:
                    nxt.configs[source] = self.configs[source]
                    nxt.dropins[source] = self.dropins.get(source, "")
        return nxt


Answer = tuple[str, dict[str, Any] | None, str | None]


def ask(sources: list[str], timeout_s: float, ledger: Ledger) -> list[Answer]:
    """``status`` of each source over its command socket (None: no answer) and, from a process
    the ledger has not seen, its ``config`` (blocking: run it in a thread)."""
    out: list[Answer] = []
    for source in sources:
        try:
            reply = request(socket_path(source), "status", timeout_s)
        except NoAnswer:
            out.append((source, None, None))
            continue
        status = reply.get("result") if reply.get("ok") else None
        config = None
        if status is not None and ledger.is_new(source, status):
            try:
                answer = request(socket_path(source), "config", timeout_s)
                config = answer["result"] if answer.get("ok") else f"# {answer.get('error')}"
            except NoAnswer as e:
                config = f"# {e}"
        out.append((source, status, config))
    return out


class Bookkeeper:
    """The ledger of the current interval, fed by polls of the upstream receivers and of the
    writer's own counters; polls never overlap, so a bound's values are the latest."""

    def __init__(self, name: str, own_counters: Callable[[], dict[str, int]]) -> None:
        self.name, self._own = name, own_counters
        self.current = Ledger()
        self._lock = asyncio.Lock()
        self._born = time.monotonic()

    async def poll(self, sources: list[str], timeout_s: float, bound: bool = False) -> Ledger:
        """Read every source into the ledger; at a ``bound`` the interval ends: returns its
        ledger, and the next one starts from the values just read."""
        async with self._lock:
            answers = await asyncio.to_thread(ask, sources, timeout_s, self.current)
            for source, status, config in answers:
                self.current.observe(source, status, bound)
                if status is not None and config is not None:
                    known = self.current.configs.get(source)
                    self.current.configs[source] = config if known in (None, config) else (
                        f"{known}\n# after a restart (pid {status['pid']}):\n{config}")
                    self.current.dropins[source] = daemons.dropins(source)
            self.current.observe(self.name, {"pid": os.getpid(),
                                             "uptime_s": time.monotonic() - self._born,
                                             "counters": self._own()}, bound)
            done = self.current
            if bound:
                self.current = done.next()
            return done
