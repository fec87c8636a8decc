"""TriggerPacketReceiver as a process: valid packets relayed byte for byte, bad ones counted."""

import os
import select
import socket
import time

import pytest

from ssdaq.core.publishers import ZMQTCPPublisher
from ssdaq.data import trigger
from ssdaq.receivers.trigger_receiver import TriggerPacketReceiver
from ssdaq.simulators.trigger import PacketMaker, TriggerSimConfig, simulate
from tests.callpath import trace
from tests.conftest import free_port
from tests.receivers.conftest import QUIET, nothing_more, publisher_config, subscribe


def trigger_config(port: int, pub_port: int) -> str:
    return QUIET + publisher_config(pub_port) + f'[sockets.data]\nip = "127.0.0.1"\nport = {port}\n'


@pytest.fixture
def relay(start_receiver, zmq_context):
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    running = start_receiver("trigger", trigger_config(port, pub_port))
    return running, port, subscribe(zmq_context, pub_port)


def send(port: int, *payloads: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, ("127.0.0.1", port))


@pytest.mark.parametrize("version, sps", [(1, 16), (2, 512), (3, 3), (3, 0)])
def test_valid_packets_are_relayed_byte_for_byte_in_order(relay, version: int, sps: int) -> None:
    running, port, sub = relay
    cfg = TriggerSimConfig(
        version=version, rate=2000, count=200, tack0=10**18, samples=64, sps=sps, busy_every=7
    )
    simulate(cfg, "127.0.0.1", port)
    got = [sub.recv() for _ in range(cfg.count)]
    make = PacketMaker(cfg)
    assert got == [make(k) for k in range(cfg.count)]
    decoded = [trigger.unpack(m) for m in got[:8]]
    assert [p.tack_time for p in decoded] == [10**18 + k * cfg.period_ns for k in range(8)]
    assert [p.busy for p in decoded] == [k == 6 for k in range(8)]
    assert nothing_more(sub)
    assert running.counter("published") == cfg.count
    assert "lost 0" in running.status()["status_line"]


def test_every_kind_of_malformed_packet_is_counted_per_reason_and_dropped(relay) -> None:
    running, port, sub = relay
    v1 = PacketMaker(TriggerSimConfig(version=1))(0)
    v2 = PacketMaker(TriggerSimConfig(version=2, samples=16))(0)
    v3 = PacketMaker(TriggerSimConfig(version=3, samples=16, sps=5))(0)
    bad = {
        "bad_magic": [b"\xfe\xcb" + v1[2:], b"\x00" * trigger.V1_SIZE, b"hello world"],
        "unknown_type": [v1[:2] + b"\x04" + v1[3:], v1[:2] + b"\xff"],
        "bad_size": [
            b"",
            b"\xfe",
            v1[:-1],
            v1 + b"\x00",
            v2[:-1],
            v2 + b"\x00",
            v3[:-1],
            v3 + v3[-16:],  # V3 whose length disagrees with its union
            v2[:50],  # too short to read the V2 readout length
            v2[:7] + b"\x00" + v2[8:],  # readout length 0
            b"\xfe\xca\x02" + b"\x00" * 65000,  # longer than any V2 packet
        ],
    }
    for payloads in bad.values():
        send(port, *payloads)
    send(port, v1, v2, v3)
    assert [sub.recv(), sub.recv(), sub.recv()] == [v1, v2, v3]
    assert nothing_more(sub)
    counters = running.status()["counters"]
    assert {reason: counters[reason] for reason in bad} == {r: len(p) for r, p in bad.items()}
    assert counters["published"] == 3 and counters["handler_errors"] == 0
    err = running.stop()
    assert "bad_magic: 1 since last report" in err and "from 127.0.0.1:" in err


def test_a_flood_of_bad_packets_costs_one_warning_per_interval(relay) -> None:
    running, port, sub = relay
    send(port, *[b"\x00\x00\x00"] * 500)
    running.wait_counter("bad_magic", 500)
    assert nothing_more(sub)
    err = running.stop()
    assert err.count("bad_magic:") == 1, err


def test_every_thread_runs_under_sched_batch_unless_configured_otherwise(start_receiver) -> None:
    def policies(running) -> set[int]:
        pid = running.proc.pid
        return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}

    batch = start_receiver("trigger", trigger_config(free_port(), free_port(socket.SOCK_STREAM)))
    assert policies(batch) == {os.SCHED_BATCH}
    assert len(os.listdir(f"/proc/{batch.proc.pid}/task")) >= 2  # zmq's I/O thread too
    normal = start_receiver(
        "trigger",
        "batch_scheduling = false\n" + trigger_config(free_port(), free_port(socket.SOCK_STREAM)),
    )
    assert policies(normal) == {os.SCHED_OTHER}


def test_a_failing_publisher_is_counted_and_does_not_stop_the_others(
    start_receiver, zmq_context
) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    full_disk = '[[publishers]]\nkind = "raw"\npath = "/dev/full"\n'
    running = start_receiver("trigger", trigger_config(port, pub_port) + full_disk)
    sub = subscribe(zmq_context, pub_port)
    cfg = TriggerSimConfig(rate=1000, count=50)
    simulate(cfg, "127.0.0.1", port)
    make = PacketMaker(cfg)
    assert [sub.recv() for _ in range(50)] == [make(k) for k in range(50)]
    counters = running.status()["counters"]
    assert counters["published"] == 50 and counters["pub_errors"] > 0
    assert "pub_errors" in running.stop()


def test_one_batch_goes_down_the_path_and_comes_back_up_once(runtime_dir) -> None:
    """As for the readout path: no file calls into one that called it, each file has one caller;
    a rejected packet (whose sender is named in the log) included."""
    pub = ZMQTCPPublisher("127.0.0.1", free_port(socket.SOCK_STREAM))
    rx = TriggerPacketReceiver("127.0.0.1", 0, [pub])
    try:
        port = rx.reader.sock.getsockname()[1]
        make = PacketMaker(TriggerSimConfig(version=1))
        send(port, *(make(k) for k in range(3)), b"\x00" * 10)
        assert select.select([rx.reader.sock], [], [], 5.0)[0]
        time.sleep(0.05)
        path = trace(rx.reader._on_readable)
        assert (rx.counters["published"], rx.counters["bad_magic"]) == (3, 1)
    finally:
        rx.reader.close()
        rx.release()
        rx.loop.close()
        rx._schedule(False)  # the receiver set SCHED_BATCH on every thread of this process
    print("trigger path:", " -> ".join(path.visits))
    assert path.callbacks == []
    assert {f: callers for f, callers in path.callers().items() if len(callers) > 1} == {}
    assert path.files[:3] == ["core/datagrams.py", "receivers/trigger_receiver.py", "data/trigger.py"]
