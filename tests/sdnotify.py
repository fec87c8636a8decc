"""A real sd_notify listener for tests: the daemon under test sends to it as it would to systemd."""

import os
import socket
import struct
import time


class NotifyListener:
    """Binds an AF_UNIX datagram socket and collects notifications with the sender's PID."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.log: list[tuple[float, int | None, dict[str, str]]] = []

    def recv(self, timeout: float = 5.0) -> tuple[int | None, dict[str, str]]:
        self.sock.settimeout(timeout)
        msg, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = next((struct.unpack("iII", d[:12])[0] for lvl, typ, d in anc
                    if (lvl, typ) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)), None)
        fields = dict(line.split("=", 1) for line in msg.decode().splitlines() if "=" in line)
        self.log.append((time.monotonic(), pid, fields))
        return pid, fields

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> dict[str, str]:
        """The first notification carrying ``key`` (with ``value``), or AssertionError."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, fields = self.recv(left)
            except TimeoutError:
                break
            if key in fields and (value is None or fields[key] == value):
                return fields
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.log[-5:]}")

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
