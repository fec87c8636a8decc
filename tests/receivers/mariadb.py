"""A real MariaDB server on loopback for the tests, in a temporary data directory.

``MariaDB.start(directory)`` initialises a data directory there with ``mariadb-install-db``
and runs ``mariadbd`` on 127.0.0.1 at a free port, its socket in ``directory`` (give a short
path: AF_UNIX paths are limited to 107 bytes); ``root()`` is an administrative connection over
that socket. Where the server or PyMySQL is missing, ``start`` skips the test, saying why.
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVER_NAMES = ("mariadbd", "mysqld")


def _server_binary() -> str | None:
    for name in SERVER_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/libexec")
        if found:
            return found
    return None


@dataclass
class MariaDB:
    """A running server: ``port`` on 127.0.0.1, ``socket`` for root."""

    proc: subprocess.Popen
    port: int
    socket: str
    log: Path

    @classmethod
    def start(cls, directory: Path, timeout_s: float = 30.0) -> "MariaDB":
        binary, install = _server_binary(), shutil.which("mariadb-install-db")
        if binary is None or install is None:
            pytest.skip("MariaDB server not installed (Debian: mariadb-server)")
        pytest.importorskip("pymysql", reason="PyMySQL not installed (Debian: python3-pymysql)")
        data, log = directory / "data", directory / "server.log"
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={data}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                *user,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        sock = str(directory / "server.sock")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                binary,
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--skip-networking=0",
                f"--log-error={log}",
                f"--pid-file={directory / 'server.pid'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                *user,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(proc, port, sock, log)
        deadline = time.monotonic() + timeout_s
        # The socket file appears once the server is ready; connecting earlier would make PyMySQL
        # leak the socket of each failed attempt.
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"mariadbd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        server.root().close()
        return server

    def root(self, **kw: Any) -> Any:
        import pymysql

        return pymysql.connect(unix_socket=self.socket, user="root", autocommit=True, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
