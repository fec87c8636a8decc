"""Protobuf messages of the camera's streams, and the helpers that build, frame and parse them.

Import the message classes from here (``TriggerBunch``, ``TriggerMessage``, ``LogData``,
``MonitorData``, ``TelData``, ``TimeUTC``) rather than from the generated ``*_pb2`` modules.

Times are true UTC from ``time.time_ns()``; the original code used
``datetime.utcnow().timestamp()``, which is off by the host's UTC offset. ``TimeUTC.sec`` is an
int32 in the schema (kept for compatibility), so it overflows in January 2038.

The log stream is framed the way protobuf's ``writeDelimitedTo`` frames messages: a varint
length, then the serialized record. The original stream had no framing, so records that TCP
merged or split were lost.
"""

import logging
import os
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import NoReturn, TypeVar

from google.protobuf.message import DecodeError, Message

from ssdaq.data.errors import FormatError
from ssdaq.data.protos.CDTS_pb2 import TriggerBunch, TriggerMessage
from ssdaq.data.protos.log_pb2 import LogData
from ssdaq.data.protos.monitor_pb2 import MonitorData, TimeUTC
from ssdaq.data.protos.teldata_pb2 import TelData

__all__ = [
    "DelimitedDecoder",
    "LogData",
    "MonitorData",
    "TelData",
    "TimeUTC",
    "TriggerBunch",
    "TriggerMessage",
    "encode_delimited",
    "log_data",
    "log_record",
    "monitor_data",
    "ns_from_time_utc",
    "parse",
    "tel_data",
    "time_utc",
]

M = TypeVar("M", bound=Message)

_NS = 1_000_000_000
_LOG_SENDER_SYSTEM = 0  # LogData.systemType of every ssdaq sender, as in the original
_SEVERITIES = sorted(LogData.Severity.values())  # NOTSET 0, DEBUG 10, ..., FATAL 50


def time_utc(ns: int | None = None) -> TimeUTC:
    """``TimeUTC`` of ``ns`` nanoseconds since the Unix epoch (now if omitted)."""
    seconds, nanos = divmod(time.time_ns() if ns is None else ns, _NS)
    return TimeUTC(sec=seconds, nsec=nanos)


def ns_from_time_utc(stamp: TimeUTC) -> int:
    """Nanoseconds since the Unix epoch of a ``TimeUTC``."""
    return int(stamp.sec * _NS + stamp.nsec)


def monitor_data(
    name: str, pid: int, recv_data: bool, data_rate: float, ns: int | None = None
) -> MonitorData:
    """The once-a-second monitoring message of receiver ``name`` (``reciver`` sic, per schema)."""
    message = MonitorData(time=time_utc(ns))
    message.reciver.name = name
    message.reciver.pid = pid
    message.reciver.recv_data = recv_data
    message.reciver.data_rate = data_rate
    return message


def tel_data(ra: float, dec: float, ns: int | None = None) -> TelData:
    """Telescope pointing (degrees) at ``ns`` nanoseconds since the epoch (now if omitted)."""
    return TelData(time=time_utc(ns), ra=ra, dec=dec)


def log_data(record: logging.LogRecord) -> LogData:
    """A ``LogData`` of a logging record: the formatted message, with any traceback appended.

    The severity is the record's level rounded down to a level the schema knows (a custom level
    25 becomes INFO), because the enum rejects other values.
    """
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return LogData(
        systemType=_LOG_SENDER_SYSTEM,
        severity=max((s for s in _SEVERITIES if s <= record.levelno), default=_SEVERITIES[0]),
        sender=record.name,
        message=message,
        time=round(record.created * _NS),
        pid=os.getpid() if record.process is None else record.process,
        sourceFile=record.pathname,
        line=record.lineno,
    )


def log_record(message: LogData) -> logging.LogRecord:
    """Rebuild a ``logging.LogRecord`` from a ``LogData``, to hand it to local handlers."""
    created = message.time / _NS
    return logging.makeLogRecord(
        {
            "name": message.sender,
            "levelno": message.severity,
            "levelname": logging.getLevelName(message.severity),
            "msg": message.message,
            "pathname": message.sourceFile,
            "filename": os.path.basename(message.sourceFile),
            "module": os.path.splitext(os.path.basename(message.sourceFile))[0],
            "lineno": message.line,
            "created": created,
            "msecs": (message.time % _NS) // 1_000_000,
            "process": message.pid,
        }
    )


def parse(cls: type[M], payload: bytes) -> M:
    """Parse ``payload`` as a ``cls``; raise ``FormatError("bad_message")`` if it is not one.

    Missing required fields count as malformed: protobuf's parser accepts them silently. So does
    a stray end-group tag under protobuf's C++ backend (Debian 12's python3-protobuf): it stops
    parsing there with only a RuntimeWarning, which is turned into the error the other backends
    raise.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            message: M = cls.FromString(payload)
    except DecodeError as exc:
        raise FormatError("bad_message", f"not a {cls.__name__}: {exc}") from None
    if caught:
        raise FormatError("bad_message", f"not a {cls.__name__}: {caught[0].message}")
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise FormatError("bad_message", f"{cls.__name__} lacks required {missing}")
    return message


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_delimited(message: Message) -> bytes:
    """``message`` serialized behind its varint length (protobuf's delimited form)."""
    body = bytes(message.SerializeToString())
    return _varint(len(body)) + body


class DelimitedDecoder:
    """Incremental splitter of a delimited stream: feed TCP chunks, get whole records back.

    Chunks may hold part of a record, several records, or both. A length above ``max_size``
    raises ``FormatError("oversize")`` after the records before it were delivered; framing is
    lost from there on, so every later ``feed`` raises it again and the caller should drop the
    connection.
    """

    _MAX_VARINT_BYTES = 5  # lengths below 2**35; a longer prefix is garbage

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: FormatError | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a record."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Store ``chunk`` and iterate over the payloads of the records now complete, in order.

        Use the iterator up (or drop it) before the next ``feed``: records it did not yield stay
        buffered for the next one.
        """
        if self._error is not None:
            raise FormatError(self._error.reason, str(self._error))
        self._buffer += chunk
        return self._records()

    def _records(self) -> Iterator[bytes]:
        buffer = self._buffer
        start = 0
        try:
            while (header := self._length(buffer, start)) is not None:
                length, body = header
                if len(buffer) < body + length:
                    break
                start = body + length
                yield bytes(buffer[body:start])
        finally:
            del buffer[:start]  # once per chunk, not per record: merged chunks stay linear

    def _length(self, buffer: bytearray, start: int) -> tuple[int, int] | None:
        """(record length, offset of its body) if the varint at ``start`` is complete."""
        value = 0
        for i in range(self._MAX_VARINT_BYTES):
            if start + i >= len(buffer):
                return None
            byte = buffer[start + i]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value > self.max_size:
                    self._fail(f"record of {value} bytes exceeds the {self.max_size}-byte limit")
                return value, start + i + 1
        self._fail(f"length prefix longer than {self._MAX_VARINT_BYTES} bytes")

    def _fail(self, reason: str) -> NoReturn:
        self._error = FormatError("oversize", reason)
        raise self._error
