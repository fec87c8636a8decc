"""LogSender: a ``logging`` handler that ships records to the LogReceiver as framed chec.LogData.

Replaces the old ``ChecSocketLogHandler``, which wrote unframed protobufs (records merged or
split on the wire), sent only the format string (``%``-arguments lost) and dropped records while
the receiver was down. Here each record is :func:`ssdaq.data.messages.log_data` (the formatted
message, traceback included) behind its varint length, the framing the LogReceiver expects.

``emit`` never blocks on the network: it appends the encoded record to a bounded buffer and
returns. A background thread connects (retrying with exponential backoff), sends what is
buffered, and reconnects when the connection breaks, resending from the first record not fully
written. When the buffer is full, new records are dropped and counted (:attr:`dropped`); after
the next successful connection a WARNING record says how many were lost. :meth:`close` (also run
by ``logging.shutdown`` at exit) gives the thread ``close_timeout_s`` to send what is left.

Usage::

    logging.getLogger().addHandler(LogSender("127.0.0.1"))   # the log receiver's port, 10001
"""

import collections
import logging
import os
import select
import socket
import threading
import time

from ssdaq import streams
from ssdaq.data.messages import LogData, encode_delimited, log_data

_BATCH_BYTES = 64 * 1024  # records joined into one send


class LogSender(logging.Handler):
    """Sends records to a LogReceiver at ``host:port`` from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = streams.get("log").listen_port,
        *,
        capacity: int = 10000,
        retry_min_s: float = 0.1,
        retry_max_s: float = 10.0,
        timeout_s: float = 5.0,
        close_timeout_s: float = 2.0,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.address = (host, port)
        self.capacity, self.timeout_s, self.close_timeout_s = capacity, timeout_s, close_timeout_s
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.sent = self.dropped = self.connects = 0
        self.connected = False
        self.last_error = ""
        self._reported_drops = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._stop = threading.Event()  # set by close(): cuts a retry wait short
        self._thread = threading.Thread(
            target=self._run, name=f"LogSender-{host}:{port}", daemon=True
        )
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the record for the sender thread (``logging`` holds the handler lock here)."""
        try:
            frame = encode_delimited(log_data(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return
        self._queue.append(frame)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Records buffered, not yet written to the connection."""
        return len(self._queue)

    def close(self) -> None:
        """Send what is buffered (waiting at most ``close_timeout_s``), then stop the thread."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        self._thread.join(self.close_timeout_s)
        super().close()

    # ------------------------------------------------------------------ the sender thread

    def _run(self) -> None:
        delay = self.retry_min_s
        while self._wait_for_records():
            try:
                with socket.create_connection(self.address, timeout=self.timeout_s) as sock:
                    self.connected, delay = True, self.retry_min_s
                    self.connects += 1
                    self._report_drops()
                    self._send_while_open(sock)
            except OSError as e:
                self.last_error = f"{self.address[0]}:{self.address[1]}: {e}"
            self.connected = False
            if self._closing:  # no retries once closing: what is left is lost
                self.dropped += len(self._queue)
                return
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max_s)

    def _wait_for_records(self) -> bool:
        """Block until records are buffered; False when closing with nothing left."""
        while True:
            self._wake.clear()
            if self._queue:
                return True
            if self._closing:
                return False
            self._wake.wait()

    def _send_while_open(self, sock: socket.socket) -> None:
        """Send batches until the connection breaks (OSError) or closing has emptied the buffer."""
        while self._wait_for_records():
            if select.select([sock], [], [], 0)[0] and not sock.recv(1):
                raise ConnectionResetError("the receiver closed the connection")
            frames = self._take_batch()
            data = memoryview(b"".join(frames))
            written = 0
            try:
                while written < len(data):
                    written += sock.send(data[written:])
            except OSError:
                self._requeue(frames, written)
                raise
            self.sent += len(frames)

    def _take_batch(self) -> list[bytes]:
        frames, size = [], 0
        while self._queue and size < _BATCH_BYTES:
            frames.append(self._queue.popleft())
            size += len(frames[-1])
        return frames

    def _requeue(self, frames: list[bytes], written: int) -> None:
        """Put back the frames not completely written (the receiver drops a partial one)."""
        for i, frame in enumerate(frames):
            if written < len(frame):
                self._queue.extendleft(reversed(frames[i:]))
                return
            written -= len(frame)
            self.sent += 1

    def _report_drops(self) -> None:
        lost = self.dropped - self._reported_drops
        if lost <= 0:
            return
        self._reported_drops = self.dropped
        note = LogData(
            systemType=0,
            severity=LogData.WARNING,
            sender="ssdaq.logsender",
            time=time.time_ns(),
            message=f"{lost} log records dropped: the log receiver at {self.address[0]}:"
            f"{self.address[1]} was unreachable and the buffer ({self.capacity}) full",
            pid=os.getpid(),
            sourceFile=__file__,
            line=0,
        )
        self._queue.appendleft(encode_delimited(note))
