"""A real sd_notify listener for tests: the daemon under test sends to it as it would to systemd.

Like PID 1 it reads the socket all the time (in a thread): sd_notify blocks once the socket's
queue is full (net.unix.max_dgram_qlen, 10 by default), so an unread socket would hang a daemon.
"""

import os
import queue
import socket
import struct
import threading
import time

Notification = tuple[int | None, dict[str, str]]


class NotifyListener:
    """Binds an AF_UNIX datagram socket and collects notifications with the sender's PID."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.log: list[tuple[float, int | None, dict[str, str]]] = []
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                msg, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (TimeoutError, OSError):
                continue
            pid = next((struct.unpack("iII", d[:12])[0] for lvl, typ, d in anc
                        if (lvl, typ) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)), None)
            fields = dict(line.split("=", 1) for line in msg.decode().splitlines() if "=" in line)
            self.log.append((time.monotonic(), pid, fields))
            self._queue.put((pid, fields))

    def recv(self, timeout: float = 5.0) -> Notification:
        """The next notification not yet taken; TimeoutError if none arrives in time."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no notification within {timeout} s") from None

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
        self._running = False
        self._thread.join()
        self.sock.close()
        os.unlink(self.path)
