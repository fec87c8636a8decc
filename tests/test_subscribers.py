"""The typed subscribers against a live publisher: decoding, timeouts, gaps, bad messages."""

import logging
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from ssdaq import subscribers
from ssdaq.data import messages, trigger
from ssdaq.subscribers import SequenceTracker
from tests.conftest import free_port
from tests.livepub import Publisher, readout


@pytest.fixture
def pub() -> Iterator[Publisher]:
    ctx = zmq.Context()
    p = Publisher(ctx)
    yield p
    p.sock.close(linger=0)
    ctx.term()


def subscribe(cls: type, pub: Publisher, **kwargs: object) -> subscribers.Subscriber:
    sub = cls("127.0.0.1", pub.port, **kwargs)
    try:
        pub.wait_subscriber()
    except BaseException:
        sub.close()
        raise
    return sub


def test_readouts_arrive_decoded_and_iteration_ends_after_the_timeout(pub: Publisher) -> None:
    with subscribe(subscribers.ReadoutSubscriber, pub, timeout_s=0.3) as sub:
        sent = [readout(i) for i in range(1, 6)]
        for r in sent:
            pub.send(r.pack())
        start = time.monotonic()
        got = list(sub)
        assert 0.3 <= time.monotonic() - start < 2.0
    assert [r.iro for r in got] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(got[2].data, sent[2].data)
    assert got[2].cpu_t_ns == sent[2].cpu_t_ns and sub.sequence.missed == 0


def test_gaps_in_readout_numbers_are_counted_and_logged(
        pub: Publisher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("ssdaq"), "propagate", True)  # caplog listens at root
    with subscribe(subscribers.ReadoutSubscriber, pub, timeout_s=0.3) as sub, \
            caplog.at_level(logging.WARNING, logger="ssdaq.subscribers"):
        for i in (10, 11, 14, 15, 20, 1, 2):
            pub.send(readout(i).pack())
        assert [r.iro for r in sub] == [10, 11, 14, 15, 20, 1, 2]
    seq = sub.sequence
    assert (seq.missed, seq.gaps, seq.restarts, seq.last) == (6, 2, 1, 2)
    assert seq.recent == [(11, 14), (15, 20)]
    assert "readouts 12..13 missing" in caplog.text and "readouts 16..19 missing" in caplog.text


def test_a_bad_message_is_counted_and_skipped_not_raised(pub: Publisher) -> None:
    packet = trigger.BusyTriggerPacketV1(tack_time=99, phase=2, ro_count=5)
    with subscribe(subscribers.TriggerSubscriber, pub, timeout_s=0.3) as sub:
        pub.send(b"\x00\x01\x02")
        pub.send(packet.pack())
        pub.send(b"\xfe\xca\x07")
        assert sub.take(5) == [packet]
    assert sub.bad == 2 and sub.counters["bad_magic"] == 1 and sub.counters["unknown_type"] == 1
    assert sub.counters["received"] == 3


def test_leaving_a_loop_early_loses_no_message(pub: Publisher) -> None:
    with subscribe(subscribers.ReadoutSubscriber, pub, timeout_s=0.5) as sub:
        for i in range(1, 11):
            pub.send(readout(i).pack())
        time.sleep(0.2)  # all ten queued: the first receive takes them in one batch
        for r in sub:
            if r.iro == 3:
                break
        assert sub.recv().iro == 4
        assert [r.iro for r in sub] == [5, 6, 7, 8, 9, 10]


def test_recv_times_out_naming_the_endpoint(pub: Publisher) -> None:
    with subscribe(subscribers.MonitorSubscriber, pub) as sub, pytest.raises(
            TimeoutError, match=f"nothing from tcp://127.0.0.1:{pub.port} within 0.2 s"):
        sub.recv(timeout_s=0.2)


@pytest.mark.parametrize("cls,message", [
    (subscribers.TimestampSubscriber,
     messages.TriggerMessage(event_counter=7, pps_counter=1, clock_counter=2, type=2)),
    (subscribers.MonitorSubscriber, messages.monitor_data("ReadoutAssembler", 42, True, 31.5)),
    (subscribers.TelDataSubscriber, messages.tel_data(83.5, 22.25)),
    (subscribers.LogSubscriber, messages.log_data(logging.makeLogRecord(
        {"name": "ssdaq.x", "levelno": 30, "msg": "hot %s", "args": ("TM 3",), "pathname": "a.py",
         "lineno": 9}))),
])
def test_protobuf_streams_arrive_as_their_messages(cls: type, message, pub: Publisher) -> None:
    with subscribe(cls, pub, timeout_s=2.0) as sub:
        pub.send(message.SerializeToString())
        assert sub.recv() == message


def test_log_records_come_back_as_logging_records(pub: Publisher) -> None:
    record = logging.makeLogRecord({"name": "ssdaq.readout", "levelno": 40, "msg": "TM %d absent",
                                    "args": (7,), "pathname": "/x/assembler.py", "lineno": 12})
    with subscribe(subscribers.LogSubscriber, pub, timeout_s=0.3) as sub:
        pub.send(messages.log_data(record).SerializeToString())
        [back] = list(sub.records())
    assert (back.name, back.levelno, back.getMessage(), back.lineno) == (
        "ssdaq.readout", 40, "TM 7 absent", 12)


def test_a_binding_subscriber_receives_from_a_connecting_publisher() -> None:
    ctx = zmq.Context()
    port = free_port(socket.SOCK_STREAM)
    pub = ctx.socket(zmq.PUB)
    message = messages.tel_data(1.0, 2.0)
    got = None
    with subscribers.TelDataSubscriber("127.0.0.1", port, bind=True) as sub:
        pub.connect(f"tcp://127.0.0.1:{port}")
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:  # dropped until connected
            pub.send(message.SerializeToString())
            try:
                got = sub.recv(timeout_s=0.1)
            except TimeoutError:
                pass
    pub.close(linger=0)
    ctx.term()
    assert got == message


def test_the_old_class_names_and_calls_still_work(pub: Publisher) -> None:
    sub = subscribers.SSReadoutSubscriber(port=pub.port, ip="127.0.0.1")
    try:
        pub.wait_subscriber()
        sub.start()
        pub.send(readout(3).pack())
        assert sub.get_data(timeout=2.0).iro == 3
    finally:
        sub.close(hard=True)


def test_sequence_tracker_takes_the_first_number_as_baseline() -> None:
    seq = SequenceTracker()
    assert seq.check(np.array([500, 501])) == [] and seq.missed == 0
    assert seq.check(np.array([503, 504, 504, 1, 3])) == [(501, 503), (1, 3)]
    assert (seq.missed, seq.gaps, seq.restarts, seq.last) == (2, 2, 2, 3)
    assert seq.check(np.array([], np.uint64)) == [] and seq.last == 3


def test_subscribers_connect_to_the_original_port_table() -> None:
    ports = {}
    for stream, cls in subscribers.SUBSCRIBERS.items():
        with cls() as sub:
            ports[stream] = sub.endpoint
    assert ports == {s: f"tcp://127.0.0.101:{p}" for s, p in (
        ("readout", 9004), ("trigger", 9002), ("timestamp", 9003), ("log", 9001), ("monitor", 9005),
        ("teldata", 9006))}
