"""LogSender: framed LogData over TCP, never blocking the caller, through receiver outages."""

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ssdaq.data.messages import DelimitedDecoder, LogData, parse
from ssdaq.logsender import LogSender
from tests.conftest import free_port


class Collector:
    """A TCP listener decoding delimited LogData, one connection at a time, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.records: list[LogData] = []
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.1)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            decoder = DelimitedDecoder()
            conn.settimeout(0.1)
            with conn:
                while not self._stop:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    self.records.extend(parse(LogData, r) for r in decoder.feed(chunk))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[LogData]:
        deadline = time.monotonic() + timeout
        while len(self.records) < n:
            assert time.monotonic() < deadline, f"{len(self.records)} of {n} records arrived"
            time.sleep(0.01)
        return self.records

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.server.close()


@pytest.fixture
def port() -> int:
    return free_port(socket.SOCK_STREAM)


@pytest.fixture
def logger(port: int) -> Iterator[tuple[logging.Logger, LogSender]]:
    handler = LogSender("127.0.0.1", port, capacity=10, retry_min_s=0.02, retry_max_s=0.1)
    log = logging.getLogger(f"test.logsender.{port}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)
    handler.close()


def test_records_arrive_framed_with_their_arguments_and_traceback(port: int, logger) -> None:
    log, _ = logger
    collector = Collector(port)
    try:
        log.warning("%d modules of %s", 32, "camera")
        try:
            raise ValueError("bad pixel")
        except ValueError:
            log.exception("failed")
        first, second = collector.wait_for(2)
    finally:
        collector.close()
    assert first.message == "32 modules of camera" and first.severity == LogData.WARNING
    assert first.sender == log.name and first.sourceFile == __file__
    assert second.severity == LogData.ERROR and second.message.startswith("failed\nTraceback")
    assert "ValueError: bad pixel" in second.message


def test_emit_never_waits_for_an_absent_receiver_and_counts_what_does_not_fit(
    port: int, logger
) -> None:
    log, handler = logger
    t0 = time.monotonic()
    for k in range(100):
        log.info("record %d", k)
    assert time.monotonic() - t0 < 0.5  # no network wait: 100 appends to a buffer
    assert handler.dropped == 90 and handler.pending == 10
    collector = Collector(port)
    try:
        records = collector.wait_for(11)
    finally:
        collector.close()
    assert records[0].severity == LogData.WARNING
    assert records[0].message.startswith(
        f"90 log records dropped: the log receiver at 127.0.0.1:{port}"
    )
    assert [r.message for r in records[1:]] == [f"record {k}" for k in range(10)]


def test_a_restarted_receiver_gets_every_later_record_once(port: int, logger) -> None:
    log, handler = logger
    collector = Collector(port)
    try:
        log.info("before")
        collector.wait_for(1)
    finally:
        collector.close()  # the receiver goes away: its end of the connection closes
    time.sleep(0.1)
    for k in range(5):
        log.info("during %d", k)
    time.sleep(0.3)  # several failed reconnections
    assert not handler.connected and handler.last_error
    collector = Collector(port)
    try:
        records = collector.wait_for(5)
        time.sleep(0.2)
    finally:
        collector.close()
    assert [r.message for r in records] == [f"during {k}" for k in range(5)]
    assert handler.connects == 2 and handler.dropped == 0


def test_close_sends_what_is_buffered(port: int) -> None:
    collector = Collector(port)
    handler = LogSender("127.0.0.1", port, capacity=100)
    log = logging.getLogger("test.logsender.close")
    log.propagate = False
    log.addHandler(handler)
    try:
        for k in range(50):
            log.warning("last words %d", k)
        log.removeHandler(handler)
        handler.close()
        assert [r.message for r in collector.wait_for(50)] == [f"last words {k}" for k in range(50)]
    finally:
        collector.close()
