"""MonitorReceiver with its PULL endpoint flooded (garbage, and valid MonitorData under ever new
names): memory and the receivers table stay bounded, every bad message is counted, and a real
receiver's messages are republished exactly, in order, while the flood goes on."""

import random
import socket
import threading
import time

import zmq

from ssdaq.core.errors import FormatError
from ssdaq.data.messages import MonitorData, monitor_data, parse
from tests.conftest import free_port
from tests.receivers.conftest import QUIET, subscribe
from tests.receivers.hostile import mutate, rss_kib

N = 50_000  # flood messages, from 4 senders
MAX_RECEIVERS = 16


def flood_message(rng: random.Random, template: bytes) -> tuple[bool, bytes]:
    """(parses, payload): random bytes, a damaged MonitorData, or a valid one under a new name."""
    if rng.random() < 0.3:
        return True, monitor_data(f"flood-{rng.randrange(10**6)}", 1, True, 1.0).SerializeToString()
    while True:
        candidate = rng.randbytes(rng.randrange(1, 400)) if rng.random() < 0.5 else mutate(rng, template)
        try:
            parse(MonitorData, candidate)
        except FormatError:
            return False, candidate


def test_a_flooded_pull_endpoint_stays_bounded_and_real_messages_pass_exactly(
        start_receiver, zmq_context) -> None:
    pull_port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    running = start_receiver("monitor", (
        f"max_receivers = {MAX_RECEIVERS}\n" + QUIET
        + f'[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\nsndhwm = 1000000\n'
        + f'[pull]\nendpoint = "tcp://127.0.0.1:{pull_port}"\n'))
    sub = subscribe(zmq_context, pub_port)
    template = monitor_data("ReadoutAssembler", 42, True, 1000.0).SerializeToString()
    rng = random.Random(3)
    flood = [flood_message(rng, template) for _ in range(N)]
    real = [monitor_data("ReadoutAssembler", 42, True, float(k)).SerializeToString()
            for k in range(20)]
    valid = sum(ok for ok, _ in flood) + len(real)

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(sub.recv() for _ in range(valid)))
    reader.start()

    def push(messages: list[bytes], every_s: float = 0.0) -> None:
        sock = zmq_context.socket(zmq.PUSH)
        sock.connect(f"tcp://127.0.0.1:{pull_port}")
        for m in messages:
            sock.send(m)
            time.sleep(every_s)
        sock.close(linger=5000)

    rss = [rss_kib(running.proc.pid)]
    start = time.monotonic()
    senders = [threading.Thread(target=push, args=([m for _, m in flood[i::4]],)) for i in range(4)]
    senders.append(threading.Thread(target=push, args=(real, 0.05)))
    for t in senders:
        t.start()
    while any(t.is_alive() for t in senders):
        rss.append(rss_kib(running.proc.pid))
        time.sleep(0.05)
    running.wait_counter("received", N + len(real))
    took = time.monotonic() - start
    rss.append(rss_kib(running.proc.pid))
    reader.join(10)
    assert [m for m in got if MonitorData.FromString(m).reciver.name == "ReadoutAssembler"] == real
    assert len(got) == valid
    c = running.status()["counters"]
    assert (c["received"], c["bad_message"], c["published"]) == (N + len(real), N + len(real) - valid,
                                                                 valid)
    assert c["handler_errors"] == 0 and c["forgotten"] >= valid - len(real) - MAX_RECEIVERS
    assert len(running.command("receivers")) <= MAX_RECEIVERS
    growth = max(rss) - rss[0]
    print(f"monitor flood: {N + len(real)} messages in {took:.2f} s, RSS {rss[0]} -> max {max(rss)} KiB")
    assert growth < 50_000, f"RSS grew by {growth} KiB"


def test_a_message_beyond_max_message_bytes_drops_its_sender_not_the_others(
        start_receiver, zmq_context) -> None:
    pull_port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    running = start_receiver("monitor", (
        QUIET + f'[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n'
        + f'[pull]\nendpoint = "tcp://127.0.0.1:{pull_port}"\n'))
    sub = subscribe(zmq_context, pub_port)
    rss = rss_kib(running.proc.pid)
    big, good = zmq_context.socket(zmq.PUSH), zmq_context.socket(zmq.PUSH)
    for sock in (big, good):
        sock.connect(f"tcp://127.0.0.1:{pull_port}")
    for _ in range(3):
        big.send(b"\x0a" + b"x" * (16 << 20))  # 16 MiB each
    message = monitor_data("LogReceiver", 7, False, 0.0).SerializeToString()
    good.send(message)
    assert sub.recv() == message
    time.sleep(0.5)
    assert running.counter("received") == 1
    assert rss_kib(running.proc.pid) - rss < 10_000
    for sock in (big, good):
        sock.close(linger=0)
