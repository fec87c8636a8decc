"""Live parts for the tool tests: a real zmq publisher that knows when it has a subscriber, and
the writer run as its own process the way systemd runs it."""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from ssdaq.core.commands import request
from ssdaq.data.readout import N_TM, N_TM_PIX, SSReadout
from tests.conftest import ROOT, child_env, free_port, stop
from tests.sdnotify import NotifyListener


class Publisher:
    """A zmq XPUB bound on loopback: a PUB that also sees subscriptions, so a test can wait for
    its subscriber instead of sleeping (a PUB drops what it sends before the subscription)."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.bind(self.endpoint)

    def wait_subscriber(self, timeout: float = 10.0) -> None:
        assert self.sock.poll(int(timeout * 1000)), f"no subscriber on {self.endpoint}"
        assert self.sock.recv()[:1] == b"\x01"

    def send(self, payload: bytes) -> None:
        self.sock.send(payload)


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


def readout(iro: int, seed: int = 0, absent: tuple[int, ...] = (5,)) -> SSReadout:
    """A readout with float32-exact random amplitudes and NaN rows for the ``absent`` modules."""
    rng = np.random.default_rng(iro * 7919 + seed)
    data = rng.uniform(0, 5000, (N_TM, N_TM_PIX)).astype(np.float32).astype(np.float64)
    data[list(absent)] = np.nan
    return SSReadout(timestamp=1_700_000_000_000_000_000 + iro * 100_000_000, readout_number=iro,
                     cpu_t_s=1_700_000_000 + iro, cpu_t_ns=123_456_789, data=data)


@dataclass
class Writer:
    """An ``ssdaq-writer`` process."""

    name: str
    proc: subprocess.Popen
    runtime: Path
    directory: Path

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


def writer_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssdaq.tools.writer", *args]


@pytest.fixture
def start_writer(tmp_path: Path, runtime_dir: Path,
                 notify: NotifyListener) -> Iterator[Callable[..., Writer]]:
    """``start_writer(stream, inputs={stream: endpoint}, directory=, **output)`` once READY=1."""
    started: list[Writer] = []

    def start(stream: str, inputs: dict[str, str], directory: Path | None = None,
              **output: object) -> Writer:
        directory = directory or tmp_path / "data"
        settings = {"directory": str(directory), "min_free_bytes": 0, **output}
        lines = ["[monitor]", "enabled = false", "[output]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        for name, endpoint in inputs.items():
            lines += [f"[inputs.{name}]", f'endpoint = "{endpoint}"']
        config = tmp_path / f"writer-{stream}.toml"
        config.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(writer_argv(stream, "--config", str(config)),
                                env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        notify.wait_for("READY", "1", timeout=30)
        started.append(Writer(f"writer-{stream}", proc, runtime_dir, directory))
        return started[-1]

    yield start
    for w in started:
        stop(w.proc, 30)
