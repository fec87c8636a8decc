"""ssdaq-web run as its own process, as systemd or an operator starts it, and HTTP to it."""

import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

#: every test's web.toml: the receivers run by hand, their units mean nothing
BY_HAND = '[poll]\nunits = "none"\n'
QUIET_RECEIVER = 'start_hold_s = 0.0\n[monitor]\nenabled = false\n'


def web_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssdaq.web.server", *args]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None,
        timeout: float = 5.0) -> Response:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` as it is and return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Web:
    """A running ssdaq-web."""

    url: str
    port: int
    pid: int


@pytest.fixture
def start_web(tmp_path: Path, runtime_dir: Path,
              start_daemon: Callable[..., object]) -> Iterator[Callable[..., Web]]:
    """``start_web(config_text=BY_HAND)``: ssdaq-web on a free loopback port once READY=1."""

    def start(config: str = BY_HAND) -> Web:
        path = tmp_path / "web.toml"
        path.write_text(config)
        port = free_port(socket.SOCK_STREAM)
        proc = start_daemon(web_argv("--config", str(path), "--listen", f"127.0.0.1:{port}"))
        return Web(f"http://127.0.0.1:{port}", port, proc.pid)  # type: ignore[attr-defined]

    yield start
