"""ReceiverServer: the base of every receiver, and the seed's API to write one.

A subclass opens its input in ``__init__`` (``setup_udp``, ``setup_stream``, ``setup_datagrams`` or
its own zmq socket), defines ``ct_*`` coroutines (each runs as a task) and ``cmd_*`` methods (each
answers a command), and calls ``publish()``. The rest is done once, by the parts wired here:
``inputs`` (sockets), ``lifecycle`` (startup -> serve -> shutdown, signals, exit code), ``health``
(``STATUS=``, ``WATCHDOG=1``), ``reload`` (SIGHUP), ``commands`` and ``standard_commands`` (the
command socket), ``mon_sender`` (MonitorData).
"""

import asyncio
import logging
import os
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

import zmq
import zmq.asyncio

from ssdaq.core import commands, health, lifecycle, mon_sender, systemd
from ssdaq.core import publishers as publib
from ssdaq.core.connections import STREAM_COUNTERS, Limits
from ssdaq.core.counters import BASE_COUNTERS, Counters, loss_names
from ssdaq.core.datagrams import DatagramBatch, DatagramReader
from ssdaq.core.inputs import Inputs
from ssdaq.core.reload import Reloader
from ssdaq.core.settings import GenericReceiverConfig, ReceiverConfig
from ssdaq.core.standard_commands import StandardCommands


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (the ``fast`` extra; Debian 12 ships
    python3-uvloop 0.17), else asyncio's. Measured on the 2-core machine: a wake-up (timer fd
    fires, the reader re-arms) costs 30-39 µs of CPU under uvloop against 41-48 under asyncio,
    and the readout receiver wakes about twice per burst of datagrams."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


C = TypeVar("C", bound=ReceiverConfig)


class ReceiverServer(Generic[C]):
    """Base class for receivers (seed API: ``ReceiverServer(ip, port, publishers, name, loop)``).

    ``publishers`` is a list of publisher objects; ``None`` builds them from the configuration.
    ``name`` names the instance in logs and in MonitorData (old dashboards know the class names).
    ``config`` overrides the configuration ``ssdaq-receiver`` loaded (or the class defaults).
    """

    #: the settings class (``C``); the default suits a seed-style receiver with no settings of its own
    config_class: type[C] = cast("type[C]", GenericReceiverConfig)
    #: the receiver's one name (``ssdaq-receiver NAME``, unit, config file, command socket, journal)
    service_name: ClassVar[str | None] = None
    #: the counters this class uses beyond the framework's BASE_COUNTERS (each in the catalogue)
    counter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ip: str, port: int, publishers: Sequence[publib.Publisher] | None, name: str,
                 loop: asyncio.AbstractEventLoop | None = None, *, config: C | None = None) -> None:
        run = lifecycle.current()
        self.name, self.ip, self.port = name, ip, port
        self.service = run.service if run else name
        self.config: C = config or self.current_config() or self.config_class()
        self.config_file = run.config_file if run else None
        self.loop = loop or new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.log = logging.getLogger(f"ssdaq.{name}")
        self.counters = Counters(self.log, self.config.log.rate_limit_interval_s)
        self.counters.declare(BASE_COUNTERS + self.counter_names)
        #: the counters that mean data was lost; their sum is the "lost" of ``STATUS=``
        self.loss_counters = loss_names(self.counters.values)
        self._context = zmq.asyncio.Context()
        if run:
            run.constructed.append(self)
        if publishers is None:
            publishers = publib.from_settings(self.config.publishers, self.log,
                                              zmq.Context.shadow(self._context.underlying))
        self.publishers = list(publishers)
        self.running = True
        self._setup = False
        # the base's own parts are class-private (``__name``): a subclass's names cannot clash
        self.__inputs = Inputs(self.loop, self.log, self.counters,
                               getattr(self.config, "sockets", None), (ip, port))
        self.__lifecycle = lifecycle.Lifecycle(self.loop, self.log)
        self.__health = health.Health(self.log, self.counters, self.status_line, self.health_problem,
                                      self.__inputs.update_counters, self.__tick)
        self.__monitoring = mon_sender.Monitoring(name, self.loop, self._context, self.__health.received)
        self.__reloader = Reloader(self.log, self.__health, self.counters, self.__monitoring)
        self.__commands: commands.CommandServer | None = None
        self.cmds: dict[str, Callable[..., Any]] = {}

    @classmethod
    def current_config(cls) -> C | None:
        """The configuration ``ssdaq-receiver`` loaded for the receiver being constructed."""
        run = lifecycle.current()
        return run.config if run is not None and isinstance(run.config, cls.config_class) else None

    @classmethod
    def from_config(cls, config: C) -> "ReceiverServer[C]":
        """Construct from a loaded configuration (``ssdaq-receiver`` calls this).

        The default suits seed-style subclasses whose ``__init__`` takes ``(ip, port, publishers)``:
        the address comes from ``[sockets.data]`` and ``publishers=None`` builds the configured ones.
        """
        data = config.sockets.data  # type: ignore[attr-defined]
        return cls(data.ip, data.port, None)  # type: ignore[call-arg]

    # -------------------------------------------------------------------------- input sockets

    def setup_udp(self, protocol_factory: Callable[[], asyncio.BaseProtocol], name: str = "data",
                  ip: str | None = None, port: int | None = None) -> tuple[Any, Any]:
        """Open UDP socket ``name`` with an asyncio datagram protocol; returns (transport, protocol).

        For high rates prefer :meth:`setup_datagrams`, which reads in batches.
        """
        self._setup = True
        return self.__inputs.udp(protocol_factory, name, ip, port)

    def setup_stream(self, protocol_factory: Callable[[], asyncio.Protocol], name: str = "data",
                     ip: str | None = None, port: int | None = None, *,
                     limits: Limits | None = None) -> tuple[Any, None]:
        """Open TCP listening socket ``name``; returns (server, None): protocols are per connection.

        Its connections are limited (idle, total, per address: :mod:`ssdaq.core.connections`) by
        ``limits``, by default the socket's table; a protocol that is a ``RecordStream`` keeps
        quiet senders between records open.
        """
        self._setup = True
        self.counters.declare(STREAM_COUNTERS)
        self.loss_counters = loss_names(self.counters.values)
        return self.__inputs.stream(protocol_factory, name, ip, port, limits)

    def setup_datagrams(self, handler: Callable[[DatagramBatch], None], name: str = "data",
                        ip: str | None = None, port: int | None = None, *, max_bytes: int = 9000,
                        batch: int = 64, timestamps: bool = False,
                        coalesce_s: float = 0.0, wait_first: bool = False) -> DatagramReader:
        """Open UDP socket ``name`` read in batches: ``handler(batch)`` runs once per batch.
        ``timestamps``: ``batch.arrival_ns`` holds the kernel's receive time of each datagram.
        ``coalesce_s``: how long a wake-up that finds a burst waits for the rest before it reads;
        ``wait_first``: every wake-up waits (see ``DatagramReader``)."""
        self._setup = True
        return self.__inputs.datagrams(handler, name, ip, port, max_bytes, batch, timestamps,
                                       coalesce_s, wait_first)

    # -------------------------------------------------------------------------- output

    def publish_nowait(self, packet: Any) -> None:
        """Send ``packet`` to every publisher without blocking; losses are counted."""
        publib.fan_out(self.publishers, (packet,), self.counters)

    def publish_many(self, packets: Collection[Any]) -> None:
        """``publish_nowait`` for a whole batch: one pass per publisher, not one call per packet."""
        publib.fan_out(self.publishers, packets, self.counters)

    def __tick(self) -> None:
        for pub in self.publishers:
            pub.tick()
        self.on_tick()

    async def publish(self, packet: Any) -> None:
        """Publish ``packet`` on every publisher (seed API; a coroutine)."""
        self.publish_nowait(packet)

    # -------------------------------------------------------------------------- hooks

    async def on_start(self) -> None:
        """Runs before ``READY=1``, inside the loop (e.g. restore state)."""

    async def on_stop(self) -> None:
        """Runs at shutdown after input stopped: publish what is still pending."""

    async def on_reload(self, old: C, new: C) -> None:
        """Apply the live-changeable settings of a reloaded configuration.

        Raise ``ConfigError`` before changing anything to reject the new file (the old one stays).
        """

    def on_tick(self) -> None:
        """Runs once a second, before the ``STATUS=`` line is made: cheap periodic checks. The
        receiver wakes for the tick anyway; a ``ct_*`` task that sleeps a second of its own
        costs a second wake-up's worth of CPU (tens of µs on an idle host) every second."""

    def status_fields(self) -> dict[str, Any]:
        """Receiver-specific additions to ``status``."""
        return {}

    def status_line(self) -> str:
        """One human line for ``STATUS=`` (refreshed every second)."""
        rates = self.counters.rates
        return (f"{rates.get('received', 0.0):.1f} in/s, {rates.get('published', 0.0):.1f} out/s, "
                f"{self.lost_summary()}")

    def lost_summary(self) -> str:
        parts = [f"{k} {self.counters[k]}" for k in self.loss_counters if self.counters[k]]
        total = sum(self.counters[k] for k in self.loss_counters)
        return f"lost {total}" + (f" ({', '.join(parts)})" if parts else "")

    def health_problem(self) -> str | None:
        """Why the watchdog must not be fed, or None. Never requires data to arrive."""
        return self.__lifecycle.failed_task() or self.__inputs.stalled(health.stall_limit_s())

    # -------------------------------------------------------------------------- lifecycle

    @property
    def tasks(self) -> dict[str, "asyncio.Task[Any]"]:
        """The running tasks by name: each ``ct_*``, and "commands", "status", "watchdog"."""
        return self.__lifecycle.tasks

    async def reload(self) -> str:
        """Load and validate the whole new file, then swap; on error keep the old configuration."""
        self.config, reply = await self.__reloader.reload(self.config, self.config_file, self.on_reload)
        return reply

    def handle_commands(self) -> Coroutine[Any, Any, None]:
        """The coroutine serving the command socket (started by :meth:`run`)."""
        if self.__commands is None:
            self.__commands = commands.CommandServer.for_receiver(
                self.service, self.config.control.socket, self._context,
                lambda command, args: commands.dispatch(self.cmds, command, args), self.log)
        return self.__commands.serve()

    def run(self) -> int:
        """Run until stopped (blocking); returns the process exit code."""
        if not self._setup:
            raise RuntimeError(f"{self.name}: no input set up (setup_udp/setup_stream/setup_datagrams,"
                               " or set self._setup = True after opening your own zmq socket)")
        return self.__lifecycle.run(self.__lifecycle.serve(
            startup=self.__startup, ready=self.__ready, drain=self.__drain, close=self.__close,
            reload=self.reload, summary=self.status_line))

    def request_stop(self) -> None:
        """Ask the receiver to stop (what SIGTERM does)."""
        self.running = False
        self.__lifecycle.request_stop()

    async def __startup(self) -> None:
        self.__inputs.source.close_unused()
        serve_commands = self.handle_commands()
        self.cmds = commands.table(StandardCommands(self, self.__health, self.__monitoring), self)
        self.__monitoring.start(vars(self).values(), self.config.monitor)
        await self.on_start()
        self.__inputs.start(after_s=self.config.start_hold_s)
        self.__lifecycle.spawn("commands", serve_commands)
        for name in sorted(n for n in dir(self) if n.startswith("ct_")):
            self.__lifecycle.spawn(name, getattr(self, name)())
        self.__lifecycle.spawn("status", self.__health.status_loop())
        self.__lifecycle.spawn("watchdog", self.__health.watchdog_loop())

    def __ready(self) -> None:
        systemd.notify("READY=1", f"STATUS={self.__health.text()}")
        self.log.info("ready (pid %d)", os.getpid())

    async def __drain(self) -> None:
        systemd.notify("STOPPING=1", "STATUS=stopping: flushing")
        self.running = False
        self.__inputs.stop_reading()
        await self.on_stop()

    def __close(self) -> None:
        self.__inputs.close()
        self.__monitoring.close()
        if self.__commands is not None:
            self.__commands.close()
        self.release()

    def release(self) -> None:
        """Close the publishers and the zmq context (also after a failed construction)."""
        publib.close_all(self.publishers, self.log)
        self.publishers = []
        self._context.destroy(linger=0)
