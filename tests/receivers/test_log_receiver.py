"""LogReceiver as a process: framed and legacy records to the bus with seqids, and the journal."""

import logging
import os
import random
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssdaq.data.messages import LogData, encode_delimited
from ssdaq.logsender import LogSender
from ssdaq.simulators.log import LogSimConfig, record, simulate
from tests.conftest import free_port
from tests.receivers.conftest import QUIET, nothing_more, publisher_config, subscribe

SYSLOG_PRIORITY = {
    LogData.DEBUG: "7",
    LogData.INFO: "6",
    LogData.WARNING: "4",
    LogData.ERROR: "3",
    LogData.FATAL: "2",
}


def log_config(port: int, pub_port: int, extra: str = "", sockets: str = "") -> str:
    return (
        extra
        + QUIET
        + publisher_config(pub_port)
        + f'[sockets.data]\nip = "127.0.0.1"\nport = {port}\n'
        + sockets
    )


@pytest.fixture
def logs(start_receiver, zmq_context):
    """``logs(extra_config, sockets=lines_of_[sockets.data])`` -> (receiver, its port, a subscriber)."""

    def start(extra: str = "", sockets: str = "", **kw):
        port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        running = start_receiver("log", log_config(port, pub_port, extra, sockets), **kw)
        return running, port, subscribe(zmq_context, pub_port)

    return start


def published(sub, n: int) -> list[LogData]:
    return [LogData.FromString(sub.recv()) for _ in range(n)]


def with_seqid(message: LogData, seqid: int) -> LogData:
    out = LogData()
    out.CopyFrom(message)
    out.seqid = seqid
    return out


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_framed_records_cut_anyhow_by_tcp_come_out_one_per_message_with_seqids(logs) -> None:
    running, port, sub = logs()
    cfg = LogSimConfig(count=200, t0_ns=1_700_000_000 * 10**9)
    sent = [record(cfg, k) for k in range(cfg.count)]
    for k in (3, 50):
        sent[k].seqid = 99  # what a sender puts there is replaced
    stream = b"".join(encode_delimited(m) for m in sent)
    rng = random.Random(1)
    with connect(port) as s:
        at = 0
        while at < len(stream):  # pieces from 1 byte (a split varint) to several records
            step = rng.choice((1, 2, 7, 40, 300))
            s.sendall(stream[at : at + step])
            at += step
            time.sleep(0.0005 * rng.random())
    assert published(sub, 200) == [with_seqid(m, k + 1) for k, m in enumerate(sent)]
    assert nothing_more(sub)
    status = running.status()
    assert status["counters"]["received"] == 200 and status["last_seqid"] == 200
    assert "lost 0" in status["status_line"]


def test_legacy_framing_takes_unframed_records_that_arrive_one_by_one(logs) -> None:
    """Each record is sent once the previous one was published: TCP cannot merge them here."""
    _, port, sub = logs('framing = "legacy"\n')
    cfg = LogSimConfig(count=20, framing="legacy")
    with connect(port) as s:
        for k in range(cfg.count):
            s.sendall(record(cfg, k).SerializeToString())
            assert published(sub, 1) == [with_seqid(record(cfg, k), k + 1)]
    assert nothing_more(sub)


def test_legacy_framing_joins_a_record_split_across_writes(logs) -> None:
    _, port, sub = logs('framing = "legacy"\n')
    wire = record(LogSimConfig(), 0).SerializeToString()
    with connect(port) as s:
        s.sendall(wire[:5])  # cut inside the required fields: not a LogData on its own
        time.sleep(0.2)
        s.sendall(wire[5:])
        assert published(sub, 1) == [with_seqid(record(LogSimConfig(), 0), 1)]


def test_legacy_bytes_that_never_parse_close_the_connection(logs) -> None:
    running, port, _ = logs('framing = "legacy"\nmax_record_bytes = 100\n')
    with connect(port) as s:
        s.sendall(b"\xff" * 60)
        s.sendall(b"\xff" * 60)
        assert s.recv(10) == b""  # closed by the receiver
    running.wait_counter("bad_frame", 1)


def test_malformed_input_is_counted_and_only_broken_framing_closes_the_connection(logs) -> None:
    running, port, sub = logs("max_record_bytes = 1000\n")
    good = record(LogSimConfig(), 0)
    partial = LogData(sender="no required fields").SerializePartialToString()
    with connect(port) as s:  # bad records inside intact framing: counted, the stream goes on
        s.sendall(
            encode_delimited(good)
            + b"\x03\xff\xff\xff"
            + bytes([len(partial)])
            + partial
            + encode_delimited(good)
        )
        assert published(sub, 2) == [with_seqid(good, 1), with_seqid(good, 2)]
    for garbage in (
        b"\xe9\x07" + b"x" * 10,  # a length of 1001 > max_record_bytes
        b"\xff\xff\xff\xff\xff\xff",
    ):  # a length prefix that never ends
        with connect(port) as s:
            s.sendall(encode_delimited(good) + garbage)
            assert s.recv(10) == b""
    with connect(port) as s:  # the sender goes away inside a record
        s.sendall(encode_delimited(good)[:-4])
    running.wait_counter("truncated", 1)
    assert published(sub, 2) == [with_seqid(good, 3), with_seqid(good, 4)]
    assert nothing_more(sub)
    counters = running.status()["counters"]
    assert (counters["bad_message"], counters["bad_frame"], counters["truncated"]) == (2, 2, 1)
    assert counters["handler_errors"] == 0
    err = running.stop()
    assert (
        "closing the log connection from 127.0.0.1:" in err and "exceeds the 1000-byte limit" in err
    )


def test_the_shipped_logging_handler_feeds_the_receiver(logs) -> None:
    _, port, sub = logs()
    handler = LogSender("127.0.0.1", port)
    log = logging.getLogger("test.log_receiver.handler")
    log.propagate = False
    log.addHandler(handler)
    try:
        for k in range(30):
            log.error("event %d of %s", k, "run 7")
    finally:
        log.removeHandler(handler)
        handler.close()
    got = published(sub, 30)
    assert [(m.message, m.seqid, m.severity) for m in got] == [
        (f"event {k} of run 7", k + 1, LogData.ERROR) for k in range(30)
    ]
    assert {m.pid for m in got} == {os.getpid()}


# ------------------------------------------------------------------------------- the journal


def journal_fields(datagram: bytes) -> dict[str, str]:
    """Fields of one native-protocol journal datagram (KEY=value lines, or KEY\\n<len><value>)."""
    fields, at = {}, 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            at = end + 1
        else:
            key, size = line, int.from_bytes(datagram[end + 1 : end + 9], "little")
            value = datagram[end + 9 : end + 9 + size]
            at = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(short_dir: Path) -> Iterator[tuple[socket.socket, list[str]]]:
    """A journald socket, and the wrapper that shows it to the receiver as /run/systemd/journal.

    The wrapper runs the receiver in its own mount namespace with stderr declared the journal
    (JOURNAL_STREAM), so its log goes through the journald protocol to this socket.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to give the receiver its own /run/systemd/journal")
    directory = short_dir / "journal"
    directory.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "socket"))
    sock.settimeout(5)
    script = (
        f"mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && "
        f"mount --bind {directory} /run/systemd/journal && "
        'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && exec "$@"'
    )
    yield sock, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    sock.close()


def test_each_record_goes_into_the_journal_with_its_priority_and_origin(logs, journal) -> None:
    sock, wrapper = journal
    _, port, sub = logs(prefix=wrapper)
    cfg = LogSimConfig(count=5, t0_ns=1_700_000_000 * 10**9, sender="camera.ctl", pid=777)
    simulate(cfg, "127.0.0.1", port)
    published(sub, 5)
    entries = []
    deadline = time.monotonic() + 10
    while len(entries) < 5 and time.monotonic() < deadline:
        fields = journal_fields(sock.recv(65536))
        if "SSDAQ_LOG_SENDER" in fields:
            entries.append(fields)
    for k, entry in enumerate(entries):
        sent = record(cfg, k)
        assert entry["MESSAGE"] == f"camera.ctl: simulated record {k} of 5"
        assert entry["PRIORITY"] == SYSLOG_PRIORITY[sent.severity]
        assert (entry["SSDAQ_LOG_SENDER"], entry["SSDAQ_LOG_PID"]) == ("camera.ctl", "777")
        assert (entry["SSDAQ_LOG_FILE"], entry["SSDAQ_LOG_LINE"]) == (
            "ssdaq/simulators/log.py",
            str(k + 1),
        )
        assert entry["CODE_FILE"] == "ssdaq/simulators/log.py" and entry["CODE_LINE"] == str(k + 1)
        assert entry["SSDAQ_RECEIVER"] == "log" and entry["SSDAQ_PEER"].startswith("127.0.0.1:")
    assert len(entries) == 5
