"""Shared fixtures: a notify socket, a private runtime directory, receivers run as real processes."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdnotify import NotifyListener

ROOT = Path(__file__).resolve().parent.parent
#: daemons run as processes (receivers, writers, a live publisher), shared by tests/tools and tests/receivers
pytest_plugins = ("tests.daemons",)
# counting a counter a receiver did not declare raises, here and in every receiver a test starts
os.environ["SSDAQ_STRICT_COUNTERS"] = "1"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX and zmq ipc paths are limited to ~107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="ssdaq-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def runtime_dir(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RUNTIME_DIRECTORY for the command sockets of the receivers a test starts (and for ssdaqctl)."""
    d = short_dir / "run"
    d.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(d))
    return d


@pytest.fixture
def notify(short_dir: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(short_dir / "notify.sock"))
    yield listener
    listener.close()


def receiver_argv(*args: str) -> list[str]:
    """argv running ``ssdaq-receiver`` with this interpreter."""
    return [sys.executable, "-m", "ssdaq.core.main", *args]


def ctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssdaq.tools.ctl", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM and wait (kill, and fail, if it does not exit in time); stderr text in ``proc.err``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"process {proc.args} did not stop within {timeout} s") from None
    finally:
        if proc.stderr and not proc.stderr.closed:
            proc.err = proc.stderr.read()  # type: ignore[attr-defined]
            proc.stderr.close()


def wait_for_path(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)
