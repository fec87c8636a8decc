"""The writer run as its own process the way systemd runs it, and live publishers for it."""

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from ssdaq import streams
from ssdaq.core.commands import request
from tests.conftest import ROOT, child_env, receiver_argv, stop
from tests.livepub import Publisher
from tests.sdnotify import NotifyListener


@pytest.fixture
def run_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run state file of the writers and ssdaqctl a test starts (``SSDAQ_RUN_STATE``)."""
    path = tmp_path / "run" / "state.json"
    monkeypatch.setenv("SSDAQ_RUN_STATE", str(path))
    return path


@pytest.fixture
def publisher() -> Iterator[Callable[[], Publisher]]:
    ctx = zmq.Context()
    made: list[Publisher] = []

    def make() -> Publisher:
        made.append(Publisher(ctx))
        return made[-1]

    yield make
    for p in made:
        p.sock.close(linger=0)
    ctx.term()


@dataclass
class Daemon:
    """A receiver or writer process, talked to over its command socket."""

    name: str
    proc: subprocess.Popen
    runtime: Path

    def status(self) -> dict[str, Any]:
        reply = request(str(self.runtime / f"{self.name}.ctl"), "status", timeout_s=5.0)
        assert reply["ok"], reply
        return reply["result"]

    def wait(self, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not check(status := self.status()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: condition not met in {timeout} s: {status}")
            time.sleep(0.05)
        return status

    def stop(self) -> str:
        assert stop(self.proc, 30) == 0, self.proc.err  # type: ignore[attr-defined]
        return self.proc.err  # type: ignore[attr-defined]


@dataclass
class Writer(Daemon):
    """An ``ssdaq-writer`` process and the directory it writes to."""

    directory: Path = Path()


def writer_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssdaq.tools.writer", *args]


class NotifyDrain:
    """Keeps reading the notify socket, as PID 1 does, into ``notify.log``.

    sd_notify blocks once the socket's queue is full (net.unix.max_dgram_qlen, 10 by default),
    so a daemon whose STATUS= lines nobody reads would hang after ten seconds.
    """

    def __init__(self, notify: NotifyListener) -> None:
        self.notify = notify
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                self.notify.recv(0.1)
            except TimeoutError:
                pass

    def wait_for(self, key: str, value: str, pid: int, timeout: float = 10.0,
                 part: bool = False) -> None:
        """Until ``pid`` sent ``key=value`` (``part``: a value containing ``value``)."""
        def match(fields: dict[str, str]) -> bool:
            got = fields.get(key)
            return got is not None and (value in got if part else got == value)

        deadline = time.monotonic() + timeout
        while not any(p == pid and match(f) for _, p, f in list(self.notify.log)):
            assert time.monotonic() < deadline, f"no {key}={value} from {pid} in {timeout} s"
            time.sleep(0.02)

    def close(self) -> None:
        self.running = False
        self.thread.join()


@pytest.fixture
def notified(notify: NotifyListener) -> Iterator[NotifyDrain]:
    drain = NotifyDrain(notify)
    yield drain
    drain.close()


@pytest.fixture
def start_daemon(tmp_path: Path, runtime_dir: Path, notify: NotifyListener,
                 notified: NotifyDrain) -> Iterator[Callable[..., subprocess.Popen]]:
    """``start_daemon(argv, prefix=())``: a process of ours once it sent READY=1 (stopped at the
    end); ``prefix`` is a wrapper that execs it, such as prlimit."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], prefix: Sequence[str] = ()) -> subprocess.Popen:
        proc = subprocess.Popen([*prefix, *argv], env=child_env(NOTIFY_SOCKET=notify.path),
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        started.append(proc)
        notified.wait_for("READY", "1", proc.pid, timeout=30)
        return proc

    yield start
    for proc in started:
        stop(proc, 30)


@pytest.fixture
def start_receiver(tmp_path: Path, runtime_dir: Path,
                   start_daemon: Callable[..., subprocess.Popen]) -> Callable[..., Daemon]:
    """``start_receiver(name, config_text)``: a built-in receiver once it is ready."""

    def start(name: str, config: str) -> Daemon:
        path = tmp_path / f"{name}.toml"
        path.write_text(config)
        proc = start_daemon(receiver_argv(streams.get(name).receiver, "--config", str(path)))
        return Daemon(name, proc, runtime_dir)

    return start


@pytest.fixture
def start_writer(tmp_path: Path, runtime_dir: Path,
                 start_daemon: Callable[..., subprocess.Popen]) -> Callable[..., Writer]:
    """``start_writer(stream, inputs={stream: endpoint}, directory=, tables=, **output)`` once
    READY=1; ``tables`` adds other settings, ``{"run": {"record": "runs"}}``."""

    def start(stream: str, inputs: dict[str, str], directory: Path | None = None,
              prefix: Sequence[str] = (), tables: dict[str, dict[str, object]] | None = None,
              **output: object) -> Writer:
        directory = directory or tmp_path / "data"
        settings = {"directory": str(directory), "min_free_bytes": 0, **output}
        lines = ["[monitor]", "enabled = false", "[output]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        tables = {**{f"inputs.{name}": {} for name in inputs}, **(tables or {})}
        for name, endpoint in inputs.items():
            tables[f"inputs.{name}"] = {"endpoint": endpoint, **tables[f"inputs.{name}"]}
        for name, values in tables.items():
            lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
        config = tmp_path / f"writer-{stream}.toml"
        config.write_text("\n".join(lines) + "\n")
        proc = start_daemon(writer_argv(stream, "--config", str(config)), prefix)
        return Writer(f"writer-{stream}", proc, runtime_dir, directory)

    return start
