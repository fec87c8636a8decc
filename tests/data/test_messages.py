"""Protobuf message helpers: UTC times, MonitorData, LogData <-> LogRecord, delimited framing."""

import itertools
import logging
import sys
import time

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdaq.core.errors import FormatError
from ssdaq.data.messages import (
    DelimitedDecoder,
    LogData,
    MonitorData,
    TelData,
    TimeUTC,
    TriggerBunch,
    TriggerMessage,
    encode_delimited,
    log_data,
    log_record,
    monitor_data,
    ns_from_time_utc,
    parse,
    tel_data,
    time_utc,
)
from ssdaq.data.protos import CDTS_pb2, log_pb2, monitor_pb2, teldata_pb2


def make_record(
    level: int = logging.WARNING,
    msg: str = "readout %d late by %.1f ms",
    args: tuple = (42, 3.25),
    exc_info=None,
) -> logging.LogRecord:
    return logging.LogRecord("ssdaq.readout", level, "/srv/ssdaq/x.py", 77, msg, args, exc_info)


def sample_logs(n: int) -> list[LogData]:
    # Record 3 is longer than 127 bytes, so its length prefix takes two varint bytes.
    texts = [f"message {i}" + ("!" * 200 if i == 3 else "") for i in range(n)]
    return [log_data(make_record(msg="%s", args=(text,))) for text in texts]


# --- times ----------------------------------------------------------------------------------


def test_time_utc_splits_nanoseconds_into_seconds_and_nanoseconds() -> None:
    stamp = time_utc(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nsec) == (1_700_000_000, 123_456_789)
    assert ns_from_time_utc(stamp) == 1_700_000_000_123_456_789


def test_time_utc_defaults_to_the_current_utc_time() -> None:
    before = time.time_ns()
    stamp = ns_from_time_utc(time_utc())
    assert before <= stamp <= time.time_ns()


# --- builders -------------------------------------------------------------------------------


def test_monitor_data_carries_the_receiver_state() -> None:
    message = MonitorData.FromString(
        monitor_data("readout", 1234, True, 10.5, ns=5 * 10**9 + 7).SerializeToString()
    )
    assert (message.time.sec, message.time.nsec) == (5, 7)
    receiver = message.reciver
    assert (receiver.name, receiver.pid, receiver.recv_data, receiver.data_rate) == (
        "readout",
        1234,
        True,
        10.5,
    )


def test_tel_data_carries_pointing_and_time() -> None:
    message = TelData.FromString(tel_data(83.6, 22.0, ns=3 * 10**9).SerializeToString())
    assert message.time.sec == 3
    assert message.ra == pytest.approx(83.6) and message.dec == pytest.approx(22.0)


def test_log_data_holds_the_formatted_message_and_record_facts() -> None:
    record = make_record()
    message = log_data(record)
    assert message.message == "readout 42 late by 3.2 ms"
    assert message.severity == LogData.WARNING
    assert (message.sender, message.sourceFile, message.line) == (
        "ssdaq.readout",
        "/srv/ssdaq/x.py",
        77,
    )
    assert message.pid == record.process
    assert abs(message.time - record.created * 1e9) < 1e3
    assert message.IsInitialized()


@pytest.mark.parametrize(
    ("level", "severity"),
    [(logging.DEBUG, 10), (logging.INFO, 20), (25, 20), (logging.CRITICAL, 50), (5, 0), (99, 50)],
)
def test_log_data_rounds_the_level_down_to_a_schema_severity(level: int, severity: int) -> None:
    assert log_data(make_record(level)).severity == severity


def test_log_data_appends_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = make_record(logging.ERROR, "failed", (), exc_info=sys.exc_info())
    text = log_data(record).message
    assert text.startswith("failed\nTraceback")
    assert text.endswith("RuntimeError: boom")


def test_log_record_rebuilds_the_record() -> None:
    original = make_record()
    record = log_record(log_data(original))
    assert record.getMessage() == "readout 42 late by 3.2 ms"
    assert (record.name, record.levelno, record.levelname) == ("ssdaq.readout", 30, "WARNING")
    assert (record.pathname, record.filename, record.lineno) == ("/srv/ssdaq/x.py", "x.py", 77)
    assert record.process == original.process
    assert record.created == pytest.approx(original.created, abs=1e-6)
    assert int(record.msecs) == int(original.msecs)


def test_message_classes_are_re_exported_from_one_place() -> None:
    assert (TriggerBunch, TriggerMessage) == (CDTS_pb2.TriggerBunch, CDTS_pb2.TriggerMessage)
    assert LogData is log_pb2.LogData
    assert (MonitorData, TimeUTC) == (monitor_pb2.MonitorData, monitor_pb2.TimeUTC)
    assert TelData is teldata_pb2.TelData


# --- parse ----------------------------------------------------------------------------------


def test_parse_returns_the_message() -> None:
    original = sample_logs(1)[0]
    assert parse(LogData, original.SerializeToString()) == original


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff",
        b"\x0a\x05ab",
        LogData(sender="no required fields").SerializePartialToString(),
    ],
    ids=["bad tag", "truncated", "missing required"],
)
def test_parse_reports_a_malformed_payload_as_bad_message(payload: bytes) -> None:
    with pytest.raises(FormatError) as err:
        parse(LogData, payload)
    assert err.value.reason == "bad_message"


def test_parse_reports_a_stray_end_group_tag_as_bad_message() -> None:
    """protobuf's C++ backend (Debian 12) only warns about it and drops what follows."""
    payload = sample_logs(1)[0].SerializeToString() + b"\x0c" + b"\x58\x01"
    with pytest.raises(FormatError) as err:
        parse(LogData, payload)
    assert err.value.reason == "bad_message"


# --- delimited framing ----------------------------------------------------------------------


def test_encode_delimited_prefixes_protobufs_own_varint() -> None:
    prefix_sizes = set()
    for size in (0, 40, 100, 16300, 16400, 2**21):
        message = log_data(make_record(msg="x" * size, args=()))
        body = message.SerializeToString()
        framed = encode_delimited(message)
        assert framed == _VarintBytes(len(body)) + body
        prefix_sizes.add(len(framed) - len(body))
    assert prefix_sizes == {1, 2, 3, 4}


def test_decoder_fed_byte_by_byte_returns_every_record_once() -> None:
    logs = sample_logs(5)
    stream = b"".join(encode_delimited(m) for m in logs)
    decoder = DelimitedDecoder()
    records = []
    for i in range(len(stream)):
        records.extend(decoder.feed(stream[i : i + 1]))
    assert [parse(LogData, r) for r in records] == logs
    assert decoder.pending == 0


def test_decoder_splits_one_merged_chunk() -> None:
    logs = sample_logs(5)
    decoder = DelimitedDecoder()
    records = list(decoder.feed(b"".join(encode_delimited(m) for m in logs)))
    assert [parse(LogData, r) for r in records] == logs


def test_decoder_keeps_a_partial_record_for_the_next_chunk() -> None:
    logs = sample_logs(2)
    first, second = (encode_delimited(m) for m in logs)
    decoder = DelimitedDecoder()
    assert list(decoder.feed(first + second[:3])) == [logs[0].SerializeToString()]
    assert decoder.pending == 3
    assert len(list(decoder.feed(second[3:]))) == 1


def test_decoder_returns_empty_records() -> None:
    assert list(DelimitedDecoder().feed(b"\x00\x00")) == [b"", b""]


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_decoder_is_independent_of_how_tcp_cuts_the_stream(cuts: list[int]) -> None:
    logs = sample_logs(6)
    stream = b"".join(encode_delimited(m) for m in logs)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    decoder = DelimitedDecoder()
    records = [r for a, b in itertools.pairwise(bounds) for r in decoder.feed(stream[a:b])]
    assert [parse(LogData, r) for r in records] == logs


def test_oversize_record_raises_and_the_stream_stays_failed() -> None:
    decoder = DelimitedDecoder(max_size=100)
    assert len(list(decoder.feed(encode_delimited(sample_logs(1)[0])))) == 1
    with pytest.raises(FormatError) as err:
        list(decoder.feed(_VarintBytes(101)))
    assert err.value.reason == "oversize"
    with pytest.raises(FormatError) as again:
        decoder.feed(encode_delimited(sample_logs(1)[0]))
    assert again.value.reason == "oversize"


def test_records_before_an_oversize_length_are_delivered_first() -> None:
    logs = sample_logs(2)
    chunk = b"".join(encode_delimited(m) for m in logs) + _VarintBytes(10**6)
    delivered = []
    with pytest.raises(FormatError) as err:
        for record in DelimitedDecoder(max_size=1000).feed(chunk):
            delivered.append(parse(LogData, record))
    assert err.value.reason == "oversize"
    assert delivered == logs


def test_records_left_in_an_abandoned_iterator_come_with_the_next_chunk() -> None:
    logs = sample_logs(3)
    stream = b"".join(encode_delimited(m) for m in logs)
    decoder = DelimitedDecoder()
    first = next(decoder.feed(stream[:-1]))
    rest = list(decoder.feed(stream[-1:]))
    assert [parse(LogData, r) for r in [first, *rest]] == logs


@pytest.mark.parametrize(
    ("max_size", "prefix"),
    [(2**40, b"\x80" * 6), (1000, _VarintBytes(10**6))],
    ids=["endless varint", "length alone"],
)
def test_bad_length_prefix_is_oversize(max_size: int, prefix: bytes) -> None:
    with pytest.raises(FormatError) as err:
        list(DelimitedDecoder(max_size=max_size).feed(prefix))
    assert err.value.reason == "oversize"
