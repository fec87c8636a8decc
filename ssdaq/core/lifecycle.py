"""One receiver's life in its event loop: startup -> serve -> shutdown, its tasks, signals, exit code.

* startup  -- the caller's ``startup`` spawns the tasks; every task then gets to its first await,
              so one that fails at once fails the start (the exception propagates) instead of
              ``READY=1``; then ``ready``.
* serve    -- until SIGTERM/SIGINT, :meth:`Lifecycle.request_stop` or a task that fails (exit 70);
              SIGHUP runs ``reload`` in a task of its own.
* shutdown -- ``drain`` (stop input, flush), every task cancelled, ``close``. After a failed start
              too, but then nothing claims an exit code: the error itself ends the process.

:func:`run_receiver` is how ``ssdaq-receiver`` runs a receiver class with the configuration it
loaded: the seed's constructor ``(ip, port, publishers, name, loop)`` cannot carry it, so the
receiver being constructed reads it from :func:`current`.
"""

import asyncio
import contextvars
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from ssdaq.core.errors import EX_OK, EX_SOFTWARE, CommandError

if TYPE_CHECKING:
    from ssdaq.core.receiver_server import ReceiverServer
    from ssdaq.core.settings import ReceiverConfig

C = TypeVar("C", bound="ReceiverConfig")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class RunContext:
    """What ``ssdaq-receiver`` resolved before constructing the receiver."""

    service: str
    config: "ReceiverConfig"
    config_file: str | None = None
    #: receivers constructed under this context, released if the start fails (an open zmq socket
    #: would make the interpreter hang at exit instead of exiting with the error's code)
    constructed: "list[ReceiverServer[Any]]" = field(default_factory=list)


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "ssdaq_run_context", default=None)


def current() -> RunContext | None:
    """The context of the :func:`run_receiver` call constructing a receiver now, if any."""
    return _current.get()


def run_receiver(cls: "type[ReceiverServer[C]]", config: C, service: str,
                 config_file: str | None = None) -> int:
    """Construct ``cls`` from ``config`` (``cls.from_config``) and run it; returns the exit code.

    ``service`` names the command socket, ``status`` and the journal; ``config_file`` is what
    SIGHUP re-reads. A failure propagates once every receiver constructed meanwhile is released.
    """
    run = RunContext(service, config, config_file)
    token = _current.set(run)
    try:
        return cls.from_config(config).run()
    except BaseException:
        for receiver in run.constructed:
            receiver.release()
        raise
    finally:
        _current.reset(token)


class Lifecycle:
    """The tasks of one receiver and the order of its phases (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: logging.Logger) -> None:
        self.loop, self.log = loop, log
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._wakeup: tuple[socket.socket, ...] = ()

    def run(self, main: Coroutine[Any, Any, int]) -> int:
        """Run ``main`` (normally :meth:`serve`) to completion, blocking; then close the loop."""
        try:
            return self.loop.run_until_complete(main)
        finally:
            # The process is exiting with its code: a repeated stop request (or a reload) must
            # not kill it. The handlers go straight to SIG_IGN, never through the default action.
            for sig in (*STOP_SIGNALS, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            if self._wakeup:
                signal.set_wakeup_fd(-1)
                self.loop.remove_reader(self._wakeup[0].fileno())
                for s in self._wakeup:
                    s.close()
            self.loop.close()

    async def serve(self, *, startup: Callable[[], Awaitable[None]], ready: Callable[[], None],
                    drain: Callable[[], Awaitable[None]], close: Callable[[], None],
                    reload: Callable[[], Awaitable[Any]], summary: Callable[[], str]) -> int:
        """The three phases; returns the exit code (0, or 70 when a task or ``drain`` failed),
        logged with ``summary()`` once the receiver has stopped after a complete start."""
        self._stop = asyncio.Event()
        self._install_signal_handlers(reload)
        try:
            await startup()
            await asyncio.sleep(0)  # let every task reach its first await: one that fails at once
            await asyncio.sleep(0)  # fails startup instead of READY=1
            if self.failure is not None:
                raise self.failure
            ready()
            await self._stop.wait()
        finally:
            try:
                await drain()
            except Exception:
                self.log.exception("flush at stop failed")
                self.failure = self.failure or RuntimeError("flush failed")
            await self._cancel_tasks()
            close()
        code = EX_OK if self.failure is None else EX_SOFTWARE
        self.log.info("stopped (exit %d): %s", code, summary())
        return code

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as task ``name`` until shutdown; if it raises, the receiver stops (exit 70)."""
        task = self.loop.create_task(coro, name=name)
        self.tasks[name] = task
        task.add_done_callback(self._task_done)

    def failed_task(self) -> str | None:
        """``task NAME failed`` for the first task that raised, else None (a health problem)."""
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"task {name} failed"
        return None

    def request_stop(self) -> None:
        """Begin shutdown (what SIGTERM does)."""
        if self._stop is not None:
            self._stop.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.failure is None:
            self.failure = exc
            self.log.error("task %s failed; stopping so that systemd restarts the receiver",
                           task.get_name(), exc_info=exc)
        self.request_stop()

    def _install_signal_handlers(self, reload: Callable[[], Awaitable[Any]]) -> None:
        async def reload_quietly() -> None:
            try:
                await reload()
            except CommandError:
                pass  # a rejected reload is logged and shown in STATUS= by whoever rejected it

        def start_reload() -> None:
            self.loop.create_task(reload_quietly(), name="reload")

        def handler(action: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
            def on_signal(signum: int, frame: FrameType | None) -> None:
                if not self.loop.is_closed():
                    self.loop.call_soon_threadsafe(action)
            return on_signal

        # Plain signal handlers that hand over to the loop, not loop.add_signal_handler: closing
        # the loop would reset those to the default action (death) before SIG_IGN could be set,
        # and a stop request in between, delivered to any of the process's threads (OpenBLAS's,
        # zmq's do not block it), would turn exit 0 into death by SIGTERM.
        for sig in STOP_SIGNALS:
            signal.signal(sig, handler(self.request_stop))
        signal.signal(signal.SIGHUP, handler(start_reload))
        # A signal taken by another thread must still wake the loop at once: the C-level handler
        # writes to this socket, and the handler above then runs in the main thread.
        self._wakeup = socket.socketpair()
        for s in self._wakeup:
            s.setblocking(False)
        signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        self.loop.add_reader(self._wakeup[0].fileno(), self._drain_wakeup)

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup[0].recv(512):
                pass
        except BlockingIOError:
            pass

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self.tasks.values() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
