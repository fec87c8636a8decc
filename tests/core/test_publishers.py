"""Publishers on loopback: the three zmq modes, an unreachable remote, the raw file writer."""

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
import zmq

from ssdaq.core.counters import Counters
from ssdaq.core.errors import UnavailableError
from ssdaq.core.publishers import RawWriter, ZMQTCPPublisher, close_all, fan_out
from tests.conftest import free_port

TCP = socket.SOCK_STREAM


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def sub_connected(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    sub.connect(endpoint)
    return sub


def deliver(pub: ZMQTCPPublisher, sub: zmq.Socket, payload: bytes) -> bytes:
    """Send until the subscription has propagated (zmq's slow joiner), then return what arrived."""
    sub.setsockopt(zmq.RCVTIMEO, 100)
    for _ in range(50):
        pub.send(payload)
        try:
            return sub.recv()
        except zmq.Again:
            continue
    raise AssertionError("nothing arrived")


@pytest.mark.parametrize("mode, ip", [("local", "127.0.0.101"), ("outbound", "127.0.0.1")])
def test_binding_modes_reach_a_subscriber(ctx: zmq.Context, mode: str, ip: str) -> None:
    port = free_port(TCP)
    pub = ZMQTCPPublisher(ip, port, mode=mode, context=ctx)
    sub = sub_connected(ctx, f"tcp://{ip}:{port}")
    assert deliver(pub, sub, b"readout") == b"readout"
    assert pub.stats()["sent"] >= 1 and pub.stats()["mode"] == mode
    pub.close()
    sub.close()


def test_outbound_mode_does_not_connect_to_itself(ctx: zmq.Context) -> None:
    port = free_port(TCP)
    pub = ZMQTCPPublisher("127.0.0.1", port, mode="outbound", context=ctx)
    # with a self-connection the PUB would hold a peer; it must hold none but real subscribers
    monitor = pub._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED)
    time.sleep(0.2)
    assert monitor.poll(200) == 0
    monitor.close()
    pub.close()


def test_remote_mode_connects_to_a_binding_subscriber(ctx: zmq.Context) -> None:
    port = free_port(TCP)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(f"tcp://127.0.0.1:{port}")
    pub = ZMQTCPPublisher("127.0.0.1", port, mode="remote", context=ctx)
    assert deliver(pub, sub, b"to remote") == b"to remote"
    pub.close()
    sub.close()


def test_a_remote_that_is_down_neither_blocks_nor_raises(ctx: zmq.Context) -> None:
    pub = ZMQTCPPublisher("127.0.0.1", free_port(TCP), mode="remote", sndhwm=5, linger_s=0, context=ctx)
    t0 = time.monotonic()
    results = [pub.send(b"x" * 16416) for _ in range(1000)]
    assert time.monotonic() - t0 < 0.5
    # beyond the HWM zmq PUB drops silently: that is why every stream carries a sequence number
    assert all(results) and pub.stats()["errors"] == 0
    pub.close()


def test_bad_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode must be one of local, outbound, remote"):
        ZMQTCPPublisher("127.0.0.1", 1, mode="sideways")


def test_raw_writer_flushes_on_tick_and_close(tmp_path: Path) -> None:
    path = tmp_path / "raw.bin"
    w = RawWriter(str(path), logger=logging.getLogger("test"))
    w.send(b"abc")
    w.tick()
    assert path.read_bytes() == b"abc"
    w.send(b"def")
    asyncio.run(w.apublish(b"ghi"))  # the old coroutine API sends the same way
    w.close()
    assert path.read_bytes() == b"abcdefghi" and w.sent == 3


def test_a_port_in_use_is_an_unavailable_error_naming_the_endpoint(ctx: zmq.Context) -> None:
    port = free_port(TCP)
    first = ZMQTCPPublisher("127.0.0.1", port, context=ctx)
    with pytest.raises(UnavailableError, match=f"cannot bind tcp://127.0.0.1:{port}: Address already in use"):
        ZMQTCPPublisher("127.0.0.1", port, context=ctx)
    first.close()


def test_fan_out_counts_a_failing_publisher_and_still_feeds_the_others(tmp_path: Path) -> None:
    broken, good = RawWriter(str(tmp_path / "a.raw"), "pub0"), RawWriter(str(tmp_path / "b.raw"), "pub1")
    broken._file.close()  # writing now raises
    counters = Counters(logging.getLogger("ssdaq.test"))
    counters.declare(("published", "pub_errors"))  # as ReceiverServer does
    fan_out([broken, good], [b"x", b"y"], counters)
    close_all([good, broken], logging.getLogger("ssdaq.test"))
    assert (tmp_path / "b.raw").read_bytes() == b"xy"
    assert counters["pub_errors"] == 1 and counters["published"] == 2


def test_a_batch_of_views_arrives_whole_and_in_order_and_refusals_are_counted(ctx: zmq.Context) -> None:
    """send_many, as the receivers publish a reader's batch: views into one buffer, each
    delivered as its own message; what zmq refuses is counted packet by packet."""
    port = free_port(TCP)
    pub = ZMQTCPPublisher("127.0.0.1", port, context=ctx)
    sub = sub_connected(ctx, f"tcp://127.0.0.1:{port}")
    deliver(pub, sub, b"joined")
    batch = memoryview(b"".join(bytes([i]) * 100 for i in range(64)))
    assert pub.send_many([batch[i * 100:(i + 1) * 100] for i in range(64)]) == 0
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    assert [sub.recv() for _ in range(64)] == [bytes([i]) * 100 for i in range(64)]
    pub._sock.close(linger=0)  # from now on every send raises
    counters = Counters(logging.getLogger("ssdaq.test"))
    counters.declare(("published", "pub_errors"))
    fan_out([pub], [b"a", b"b", b"c"], counters)
    assert pub.stats()["errors"] == 3 and counters["pub_errors"] == 3
    sub.close()
