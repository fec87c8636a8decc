"""Run a receiver as its own process on loopback, the way systemd runs it, and talk to it.

The receivers are started as ``ssdaq-receiver package.module:Class`` so that the tests also run
under an interpreter where the package's entry points are not installed (Debian's python3).
"""

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from ssdaq.core.commands import request
from tests.conftest import child_env, receiver_argv, stop
from tests.sdnotify import NotifyListener

CLASSES = {
    "trigger": "ssdaq.receivers.trigger_receiver:TriggerPacketReceiver",
    "timestamp": "ssdaq.receivers.timestamp_receiver:TimestampReceiver",
    "log": "ssdaq.receivers.log_receiver:LogReceiver",
    "monitor": "ssdaq.receivers.monitor_receiver:MonitorReceiver",
    "teldata": "ssdaq.receivers.teldata_receiver:TelDataReceiver",
}
#: what most tests add to a receiver's config: no MonitorData, reading starts at once
QUIET = "start_hold_s = 0.0\n[monitor]\nenabled = false\n"


@dataclass
class Running:
    """A receiver process started by :func:`start_receiver`."""

    name: str
    proc: subprocess.Popen
    runtime: Path

    def command(self, line: str) -> Any:
        reply = request(str(self.runtime / f"{self.name}.ctl"), line, timeout_s=5.0)
        assert reply["ok"], reply
        return reply["result"]

    def status(self) -> dict[str, Any]:
        return self.command("status")

    def counter(self, name: str) -> int:
        return self.status()["counters"].get(name, 0)

    def wait_counter(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        """Poll ``status`` until counter ``name`` reaches ``at_least``; return its value."""
        deadline = time.monotonic() + timeout
        while (value := self.counter(name)) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {name} = {value} < {at_least} after {timeout} s; "
                    f"{self.status()['counters']}"
                )
            time.sleep(0.05)
        return value

    def stop(self) -> str:
        """SIGTERM, check the clean exit, return what it wrote on stderr."""
        assert stop(self.proc) == 0, self.proc.err  # type: ignore[attr-defined]
        return self.proc.err  # type: ignore[attr-defined]


@pytest.fixture
def start_receiver(
    tmp_path: Path, runtime_dir: Path, notify: NotifyListener
) -> Iterator[Callable[..., Running]]:
    """``start_receiver(name, config_text, prefix=(), pass_fds=(), **env)``: a receiver once it
    sent READY=1.

    ``prefix`` is put before the command (a wrapper that execs it); ``pass_fds`` stay open in it.
    """
    started: list[Running] = []

    def start(name: str, config: str, prefix: Sequence[str] = (), pass_fds: Sequence[int] = (),
              **env: str) -> Running:
        path = tmp_path / f"{name}.toml"
        path.write_text(config)
        proc = subprocess.Popen(
            [*prefix, *receiver_argv(CLASSES[name], "--config", str(path))],
            env=child_env(NOTIFY_SOCKET=notify.path, **env),
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
        )
        running = Running(name, proc, runtime_dir)
        started.append(running)
        notify.wait_for("READY", "1", timeout=15)
        return running

    yield start
    for running in started:
        stop(running.proc)


# Closed when the test's zmq_context ends: a socket garbage-collected while open warns (an error).
_subscribers: list[zmq.Socket] = []


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    while _subscribers:
        _subscribers.pop().close(linger=0)
    ctx.destroy(linger=0)


def subscribe(ctx: zmq.Context, port: int, settle_s: float = 0.2) -> zmq.Socket:
    """A SUB connected to 127.0.0.1:``port`` whose subscription has reached the publisher.

    zmq drops what a PUB sends before the subscription arrived: wait for the handshake (slow on
    a loaded machine), then give the PUB's I/O thread ``settle_s`` to take the subscription.
    """
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.setsockopt(zmq.RCVHWM, 0)
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        assert monitor.poll(10000), f"no zmq handshake with 127.0.0.1:{port} within 10 s"
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)
    time.sleep(settle_s)
    _subscribers.append(sub)
    return sub


def publisher_config(port: int) -> str:
    return f'[[publishers]]\nip = "127.0.0.1"\nport = {port}\n'


def nothing_more(sub: zmq.Socket, wait_s: float = 0.3) -> bool:
    """True when no further message arrives within ``wait_s``."""
    return not sub.poll(int(wait_s * 1000))
