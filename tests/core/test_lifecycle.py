"""Lifecycle: the phases in order, real signals, failing tasks, exit codes; run_receiver's context.

The phase tests run a Lifecycle in this process with its own loop and send this process real
signals; the seed examples run as ``ssdaq-receiver`` processes given a configuration file.
"""

import asyncio
import logging
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from ssdaq.core import config as configlib
from ssdaq.core import lifecycle
from ssdaq.core.commands import request
from ssdaq.core.errors import CommandError, UnavailableError
from ssdaq.core.lifecycle import Lifecycle
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import GenericReceiverConfig
from tests.conftest import ROOT, child_env, free_port, receiver_argv, stop
from tests.core.test_seed_examples import UDP_EXAMPLE, ZMQ_EXAMPLE, collect
from tests.sdnotify import NotifyListener


@pytest.fixture
def saved_signals() -> Iterator[None]:
    """Lifecycle.run leaves SIGTERM/SIGINT ignored (the process is exiting); put them back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class Phases:
    """Records the order of the phases; ``task`` is what startup spawns."""

    def __init__(self, lc: Lifecycle, task: Any = None) -> None:
        self.lc, self.task = lc, task
        self.log: list[str] = []

    async def startup(self) -> None:
        self.log.append("startup")
        if self.task is not None:
            self.lc.spawn("ct_work", self.task())

    def ready(self) -> None:
        self.log.append("ready")

    async def drain(self) -> None:
        self.log.append("drain")

    def close(self) -> None:
        self.log.append("close")

    async def reload(self) -> str:
        self.log.append("reload")
        raise CommandError("rejected")  # must not escape from the SIGHUP task

    def serve(self) -> int:
        return self.lc.run(self.lc.serve(startup=self.startup, ready=self.ready, drain=self.drain,
                                         close=self.close, reload=self.reload, summary=lambda: "bye"))


def new_lifecycle() -> Lifecycle:
    return Lifecycle(asyncio.new_event_loop(), logging.getLogger("ssdaq.test"))


def send_later(lc: Lifecycle, delay: float, *signals: signal.Signals) -> None:
    for i, sig in enumerate(signals):
        lc.loop.call_later(delay * (i + 1), os.kill, os.getpid(), sig)


def test_sigterm_stops_after_ready_in_phase_order_with_exit_0(
        saved_signals: None, caplog: pytest.LogCaptureFixture) -> None:
    lc = new_lifecycle()
    cancelled = []

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(phases.log[-1])  # cancelled after drain, before close
            raise

    phases = Phases(lc, work)
    send_later(lc, 0.1, signal.SIGHUP, signal.SIGTERM)
    with caplog.at_level(logging.INFO, "ssdaq"):
        assert phases.serve() == 0
    assert phases.log == ["startup", "ready", "reload", "drain", "close"]
    assert cancelled == ["drain"]
    assert "stopped (exit 0): bye" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, "a second stop request must not kill"


def test_a_stop_request_taken_by_another_thread_stops_the_idle_loop_at_once(
        saved_signals: None) -> None:
    """A process-directed SIGTERM may land on any thread (OpenBLAS's do not block it): the loop,
    asleep with nothing due for a minute, still stops within a fraction of a second."""
    lc = new_lifecycle()

    async def work() -> None:
        await asyncio.sleep(60)

    phases = Phases(lc, work)
    other = threading.Event()
    thread = threading.Thread(target=other.wait, args=(30,))
    thread.start()
    try:
        assert thread.ident is not None
        sent: list[float] = []

        def send() -> None:
            sent.append(time.monotonic())
            signal.pthread_kill(thread.ident, signal.SIGTERM)  # type: ignore[arg-type]

        lc.loop.call_later(0.2, send)
        assert phases.serve() == 0
        assert time.monotonic() - sent[0] < 0.5
    finally:
        other.set()
        thread.join()


def test_a_task_failing_at_once_fails_the_start_without_ready_or_an_exit_code(
        saved_signals: None, caplog: pytest.LogCaptureFixture) -> None:
    lc = new_lifecycle()

    async def broken() -> None:
        raise UnavailableError("no such device")

    phases = Phases(lc, broken)
    with caplog.at_level(logging.INFO, "ssdaq"), pytest.raises(UnavailableError, match="no such device"):
        phases.serve()
    assert phases.log == ["startup", "drain", "close"]
    assert "stopped (exit" not in caplog.text, "a failing start must not say exit 0"


def test_a_task_failing_later_stops_the_receiver_with_exit_70(saved_signals: None) -> None:
    lc = new_lifecycle()

    async def dies() -> None:
        await asyncio.sleep(0.1)
        assert lc.failed_task() is None
        raise RuntimeError("told to die")

    phases = Phases(lc, dies)
    assert phases.serve() == 70
    assert isinstance(lc.failure, RuntimeError) and lc.failed_task() == "task ct_work failed"
    assert phases.log == ["startup", "ready", "drain", "close"]


def test_a_failing_flush_at_stop_is_exit_70(saved_signals: None, caplog: pytest.LogCaptureFixture) -> None:
    lc = new_lifecycle()
    phases = Phases(lc)

    async def drain() -> None:
        raise OSError("disk gone")

    phases.drain = drain
    lc.loop.call_later(0.05, lc.request_stop)
    assert phases.serve() == 70
    assert "flush at stop failed" in caplog.text


class Constructed(ReceiverServer[GenericReceiverConfig]):
    """Records what it saw while being constructed; fails after the base opened its zmq context."""

    seen: list["Constructed"] = []

    def __init__(self, ip: str, port: int, publishers: Any) -> None:
        super().__init__(ip, port, publishers, "Constructed")
        self.seen.append(self)
        self.loaded = self.current_config()
        raise UnavailableError("device absent")


def test_run_receiver_hands_over_the_config_and_releases_a_failed_construction() -> None:
    config = GenericReceiverConfig(start_hold_s=0.25)
    assert lifecycle.current() is None
    with pytest.raises(UnavailableError):
        lifecycle.run_receiver(Constructed, config, "site", "/etc/ssdaq/site.toml")
    rx = Constructed.seen[-1]
    assert rx.loaded is config and rx.config is config
    assert (rx.service, rx.config_file, rx.name) == ("site", "/etc/ssdaq/site.toml", "Constructed")
    assert rx._context.closed and rx.publishers == [], "released, so the process can exit"
    assert lifecycle.current() is None, "the context ends with the call"
    rx.loop.close()


@pytest.mark.parametrize("source, cls, kind", [(UDP_EXAMPLE, "PacketReceiver", socket.SOCK_DGRAM),
                                               (ZMQ_EXAMPLE, "ZMQReceiver", socket.SOCK_STREAM)])
def test_both_seed_examples_receive_the_loaded_config(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener, source: str, cls: str,
        kind: int) -> None:
    (tmp_path / "seed_example.py").write_text(textwrap.dedent(source))
    port, pub_port = free_port(kind), free_port(socket.SOCK_STREAM)
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'start_hold_s = 0.25\n[log]\nrate_limit_interval_s = 3.0\n[sockets.data]\n'
                   f'ip = "127.0.0.1"\nport = {port}\n[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n')
    proc = subprocess.Popen(receiver_argv(f"seed_example:{cls}", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path, PYTHONPATH=f"{ROOT}:{tmp_path}"),
                            stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        notify.wait_for("READY", "1")
        path = str(runtime_dir / f"{cls.lower()}.ctl")
        loaded = configlib.load(GenericReceiverConfig, cfg)
        assert request(path, "config")["result"] == configlib.render(loaded)
        assert request(path, "status")["result"]["config_file"] == str(cfg)
        # and it acts on it: input on [sockets.data], output on the configured publisher
        if kind == socket.SOCK_DGRAM:
            send = lambda b: udp.sendto(b, ("127.0.0.1", port))  # noqa: E731
        else:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(f"tcp://127.0.0.1:{port}")
            send = push.send
        time.sleep(0.3)
        assert len(collect(ctx, pub_port, send, 2)) == 2
        assert stop(proc) == 0
    finally:
        stop(proc)
        udp.close()
        ctx.destroy(linger=0)


def test_a_flood_of_stop_requests_while_exiting_still_exits_0(tmp_path: Path,
                                                              runtime_dir: Path) -> None:
    """SIGTERM again and again (an impatient operator, a second ``systemctl stop``): the first
    stops the receiver, none of the others may turn exit 0 into death by signal."""
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f"start_hold_s = 0.0\n[monitor]\nenabled = false\n"
                   f'[sockets.data]\nip = "127.0.0.1"\nport = {free_port()}\n'
                   f'[[publishers]]\nip = "127.0.0.1"\nport = {free_port(socket.SOCK_STREAM)}\n')
    for _ in range(5):
        proc = subprocess.Popen(receiver_argv("relay", "--config", str(cfg)), env=child_env(),
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not (runtime_dir / "relay.ctl").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        request(str(runtime_dir / "relay.ctl"), "ping", 5.0)
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.0005)
        assert stop(proc) == 0, proc.err  # type: ignore[attr-defined]
