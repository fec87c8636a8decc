"""Limits on a TCP listener's connections, so that no sender can starve the others.

Every connection of a guarded listener is watched for three things:

* idle -- a connection that received no bytes for ``idle_timeout_s`` is closed (``idle_closed``).
  A protocol that can tell it is between two records (a :class:`RecordStream`, or what the
  guard's ``quiet`` says) keeps a quiet sender open: only a connection holding part of a record
  that stopped progressing is idle.
* full -- when ``max_connections`` are open, a newcomer replaces the connection that received
  bytes least recently (``replaced_connections``) instead of being refused: a set of senders
  that connect and go silent can delay a legitimate one by one connection, not lock it out.
* one address -- at most ``max_connections_per_peer`` from one address; more are refused
  (``refused_connections``), the only refusal there is.

The guard sits between asyncio and the listener's own protocol: a refused connection never
reaches it, an admitted one sees every callback as if unguarded. It knows nothing of the
receiver: ``ssdaq-web`` guards its HTTP listener with it too.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from ssdaq.core.counters import Counters

#: what a guarded listener counts (declared by whoever sets one up)
STREAM_COUNTERS = ("connections", "refused_connections", "replaced_connections", "idle_closed")


@runtime_checkable
class RecordStream(Protocol):
    """A connection protocol that knows where its records end."""

    def between_records(self) -> bool:
        """True when no part of a record is buffered: silence now is a quiet sender, not a stall."""


class Limits(Protocol):
    """The settings a guard reads (``ssdaq.core.settings.ConnectionLimits`` declares them)."""

    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_peer(self) -> int: ...


class ConnectionGuard:
    """The open connections of one listener and the rules above; :meth:`wrap` its protocol factory."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counters: Counters, limits: Limits,
                 quiet: Callable[[asyncio.Protocol], bool] | None = None) -> None:
        """``quiet(protocol)``: whether that connection may be silent now (default: it is a
        RecordStream between records)."""
        self.loop, self.counters, self.limits = loop, counters, limits
        self.quiet = quiet or _between_records
        self.open: dict[_Guarded, None] = {}  # insertion-ordered set
        self.per_peer: Counter[str] = Counter()

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to give ``loop.create_server`` in place of ``factory``."""
        return lambda: _Guarded(self, factory)

    def close(self) -> None:
        """Abort every open connection (at exit)."""
        for conn in list(self.open):
            conn.drop()

    def _admit(self, conn: "_Guarded") -> bool:
        limits = self.limits
        if self.per_peer[conn.host] >= limits.max_connections_per_peer:
            self.counters.report(
                "refused_connections", peer=conn.peer,
                detail=f"{limits.max_connections_per_peer} connections from {conn.host} already open")
            return False
        if len(self.open) >= limits.max_connections:
            victim = min(self.open, key=lambda c: c.last_bytes)
            self.counters.report(
                "replaced_connections", peer=victim.peer,
                detail=f"{limits.max_connections} connections open; closed the one silent for "
                f"{time.monotonic() - victim.last_bytes:.1f} s for a newcomer from {conn.peer}")
            victim.drop()
        self.open[conn] = None
        self.per_peer[conn.host] += 1
        self.counters.add("connections")
        return True

    def _forget(self, conn: "_Guarded") -> None:
        if conn in self.open:
            del self.open[conn]
            self.per_peer[conn.host] -= 1
            if not self.per_peer[conn.host]:
                del self.per_peer[conn.host]


class _Guarded(asyncio.Protocol):
    """One connection: admission, the idle timer, then every callback passed to the real protocol."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self.guard, self.factory = guard, factory
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.host = self.peer = "?"
        self.last_bytes = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is one without deriving from asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.host = str(peer[0])
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in self.host else f"{peer[0]}:{peer[1]}"
        if not self.guard._admit(self):
            self.transport.abort()
            return
        self.inner = self.factory()
        self.inner.connection_made(self.transport)
        self._arm(self.last_bytes)

    def data_received(self, data: bytes) -> None:
        self.last_bytes = time.monotonic()
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard._forget(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def drop(self) -> None:
        """Close at once (the real protocol's ``connection_lost`` follows, from the loop)."""
        self._disarm()
        self.guard._forget(self)
        assert self.transport is not None
        self.transport.abort()

    def _arm(self, since: float) -> None:
        """Check for idleness ``idle_timeout_s`` after ``since`` (one timer per quiet period,
        nothing per received chunk)."""
        timeout = self.guard.limits.idle_timeout_s
        if timeout > 0:
            delay = since + timeout - time.monotonic()
            self._timer = self.guard.loop.call_later(max(delay, 0.0), self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        now, timeout = time.monotonic(), self.guard.limits.idle_timeout_s
        if now - self.last_bytes < timeout:
            self._arm(self.last_bytes)
        elif self.inner is not None and self.guard.quiet(self.inner):
            self._arm(now)
        else:
            self.guard.counters.report(
                "idle_closed", peer=self.peer, detail=f"no bytes for {now - self.last_bytes:.1f} s")
            self.drop()


def _between_records(protocol: asyncio.Protocol) -> bool:
    return isinstance(protocol, RecordStream) and protocol.between_records()
