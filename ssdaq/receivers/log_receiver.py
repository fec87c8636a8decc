"""LogReceiver (``ssdaq-receiver log``): chec.LogData records over TCP, to the bus and the journal.

Senders connect to the ``data`` socket (TCP 10001). The old stream had no framing, so records
that TCP merged or split were lost; the default now is protobuf's delimited form (each record
behind its varint length), which :class:`ssdaq.logsender.LogSender` writes. ``framing =
"legacy"`` accepts the old unframed senders, best effort: see :class:`LegacyDecoder`.

Each record is published as one unframed LogData per zmq message (what subscribers expect) on
:9001, with ``seqid`` set to this receiver's own sequence number (1, 2, …, 2**31 - 1, then 1),
so a subscriber can tell lost messages from a quiet sender (what a sender put in ``seqid`` is
replaced); a restart of the receiver starts again at 1. Each record also goes into the journal:
its severity as ``PRIORITY``, the sender's logger name, pid, source file and line as
``SSDAQ_LOG_SENDER``, ``SSDAQ_LOG_PID``, ``SSDAQ_LOG_FILE``, ``SSDAQ_LOG_LINE`` (and
``CODE_FILE``/``CODE_LINE``), the peer address as ``SSDAQ_PEER``.

Per connection at most ``max_record_bytes`` are buffered. A longer record, a garbage length
prefix, or a legacy buffer that never parses is counted (``bad_frame``) and the connection is
closed with a log line; a record that does not parse is counted (``bad_message``) and the stream
goes on; a connection that ends inside a record counts it as ``truncated``.

Connections are limited as every TCP input's (``[sockets.data]``: ``idle_timeout_s``,
``max_connections``, ``max_connections_per_peer``; :mod:`ssdaq.core.connections`), except that a
sender quiet between two records is never idle: only a connection stuck inside a record is closed.
The old top-level ``max_connections`` is still read, as an alias of ``[sockets.data]``'s.
"""

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.errors import FormatError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import (
    PublisherSettings,
    ReceiverConfig,
    StreamListenSettings,
    StreamSocket,
    zmq_publisher,
)
from ssdaq.data.messages import DelimitedDecoder, LogData, log_record, parse

STREAM = streams.get("log")
_SEQ_MASK = 0x7FFFFFFF  # seqid is an int32


@dataclass(frozen=True)
class LogConfig(ReceiverConfig):
    """Settings of the log receiver."""

    framing: str = setting(
        "delimited",
        help="delimited: each record behind its varint length (protobuf's writeDelimitedTo, as\n"
        "ssdaq.logsender.LogSender sends). legacy: the old unframed senders, best effort: records\n"
        "that TCP merges keep only the last, records it splits are joined only while the first\n"
        "piece does not parse on its own",
        choices=("delimited", "legacy"),
    )
    max_record_bytes: int = setting(
        65536,
        help="Longest record; a longer one (or legacy bytes that never parse) closes the\n"
        "connection (counted as bad_frame)",
        min=64,
    )
    max_connections: int = setting(
        0,
        help="Old name of [sockets.data] max_connections, kept for old files: when not 0 it wins",
        min=0,
    )
    journal: bool = setting(True, help="Write every record into the journal too")
    sockets: StreamSocket = table(StreamSocket, data=StreamListenSettings(port=STREAM.listen_port))
    #: the alias acts when the listener is set up, as the rest of [sockets] does
    restart_only: ClassVar[tuple[str, ...]] = (*ReceiverConfig.restart_only, "max_connections")

    @property
    def connection_limits(self) -> StreamListenSettings:
        """``[sockets.data]`` with the alias applied."""
        data = self.sockets.data
        if self.max_connections:
            return dataclasses.replace(data, max_connections=self.max_connections)
        return data
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(STREAM.pub_port), help="Publishers: every record goes to each of them, as one LogData"
    )


class LegacyDecoder:
    """Splits an unframed stream the only way it can: a record ends where the bytes parse.

    Each chunk is appended to the buffer; once the buffer parses as a complete LogData it is one
    record. Two records in one chunk parse as the second (protobuf merges them); a record split
    after its last required field is published in two parts. Hence "best effort".
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk
        try:
            parse(LogData, self._buffer)
        except FormatError:
            if len(self._buffer) > self.max_size:
                raise FormatError(
                    "bad_frame", f"{len(self._buffer)} unframed bytes do not parse as a LogData"
                ) from None
            return iter(())
        record, self._buffer = self._buffer, b""
        return iter((record,))


class LogConnection(asyncio.Protocol):
    """One sender's connection: splits its stream into records for the receiver."""

    def __init__(self, receiver: "LogReceiver") -> None:
        self.receiver = receiver
        config = receiver.config
        self.decoder: DelimitedDecoder | LegacyDecoder = (
            LegacyDecoder(config.max_record_bytes)
            if config.framing == "legacy"
            else DelimitedDecoder(config.max_record_bytes)
        )
        self.peer = "?"
        self.records = 0
        self.broken = False  # framing lost: what is buffered was counted as bad_frame
        self.since = time.monotonic()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        self.receiver.opened(self)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self.decoder.feed(data):
                self.records += 1
                self.receiver.on_record(payload, self.peer)
        except FormatError as e:
            self.broken = True
            self.receiver.counters.report("bad_frame", detail=str(e), peer=self.peer)
            self.receiver.log.warning(
                "closing the log connection from %s: %s",
                self.peer,
                e,
                extra={"SSDAQ_PEER": self.peer},
            )
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.closed(self)

    def between_records(self) -> bool:
        """No part of a record buffered: a quiet sender, not a stuck one (see RecordStream)."""
        return not self.decoder.pending


class LogReceiver(ReceiverServer[LogConfig]):
    """Receives LogData records over TCP; publishes them and writes them into the journal."""

    config_class = LogConfig
    service_name = "log"
    counter_names = ("bad_message", "bad_frame", "truncated")

    def __init__(
        self,
        ip: str = "0.0.0.0",
        port: int = STREAM.listen_port,
        publishers: list | None = None,
        name: str = "LogReceiver",
    ) -> None:
        super().__init__(ip, port, publishers, name)
        self.connections: set[LogConnection] = set()
        self._seqid = 0
        self.setup_stream(lambda: LogConnection(self), limits=self.config.connection_limits)

    def opened(self, conn: LogConnection) -> None:
        self.connections.add(conn)
        self.log.info("log sender connected from %s", conn.peer, extra={"SSDAQ_PEER": conn.peer})

    def closed(self, conn: LogConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        if conn.decoder.pending and not conn.broken:
            self.counters.report(
                "truncated",
                detail=f"connection ended {conn.decoder.pending} bytes into a record",
                peer=conn.peer,
            )
        self.log.info(
            "log sender %s disconnected after %d records",
            conn.peer,
            conn.records,
            extra={"SSDAQ_PEER": conn.peer},
        )

    def on_record(self, payload: bytes, peer: str) -> None:
        """Publish one record with the next seqid and write it into the journal."""
        self.counters.values["received"] += 1
        try:
            record = parse(LogData, payload)
        except FormatError as e:
            self.counters.report("bad_message", detail=str(e), peer=peer)
            return
        self._seqid = self._seqid + 1 if self._seqid < _SEQ_MASK else 1
        record.seqid = self._seqid
        self.publish_nowait(record.SerializeToString())
        if self.config.journal:
            self._journal(record, peer)

    def _journal(self, record: LogData, peer: str) -> None:
        entry = log_record(record)
        entry.msg = f"{record.sender}: {record.message}"
        for key, value in (
            ("SSDAQ_PEER", peer),
            ("SSDAQ_LOG_SENDER", record.sender),
            ("SSDAQ_LOG_PID", record.pid),
            ("SSDAQ_LOG_FILE", record.sourceFile),
            ("SSDAQ_LOG_LINE", record.line),
        ):
            setattr(entry, key, value)
        # handle(), not log(): the receiver's own log level must not filter what senders logged
        self.log.handle(entry)

    async def on_stop(self) -> None:
        for conn in list(self.connections):
            assert conn.transport is not None
            conn.transport.close()
        await asyncio.sleep(0)  # their connection_lost runs: partial records are counted

    def status_fields(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "framing": self.config.framing,
            "last_seqid": self._seqid,
            "connections": [
                {"peer": c.peer, "records": c.records, "for_s": round(now - c.since, 3)}
                for c in sorted(self.connections, key=lambda c: c.since)
            ],
        }

    def status_line(self) -> str:
        rates = self.counters.rates
        return (
            f"{len(self.connections)} senders, {rates.get('published', 0.0):.1f} records/s, "
            f"{self.lost_summary()}"
        )
