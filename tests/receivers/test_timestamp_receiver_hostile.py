"""TimestampReceiver fed garbage by a fake timing board at 10^4 messages/s: memory stays bounded,
every bad message is counted, and the good bunches among them are published exactly."""

import random
import socket
import threading
import time

import zmq

from ssdaq.core.errors import FormatError
from ssdaq.data.messages import TriggerBunch, parse
from ssdaq.simulators.timing import TimingSimConfig, bunch
from tests.conftest import free_port
from tests.receivers.conftest import subscribe
from tests.receivers.hostile import mutate, rss_kib
from tests.receivers.test_timestamp_receiver import timestamp_config

RATE = 10_000  # messages/s
SECONDS = 2.0
GOOD_EVERY = 100


def garbage(rng: random.Random, good: bytes) -> bytes:
    """Bytes that do not parse as a TriggerBunch: random, a damaged bunch, now and then 64 KiB."""
    while True:
        pick = rng.random()
        candidate = (rng.randbytes(65536) if pick < 0.01 else
                     rng.randbytes(rng.randrange(1, 600)) if pick < 0.5 else mutate(rng, good))
        try:
            parse(TriggerBunch, candidate)
        except FormatError:
            return candidate


def test_a_board_sending_garbage_costs_bounded_memory_and_good_bunches_pass_exactly(
        start_receiver, zmq_context) -> None:
    board_port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    running = start_receiver("timestamp", timestamp_config(board_port, pub_port))
    sub = subscribe(zmq_context, pub_port)
    board = zmq_context.socket(zmq.XPUB)
    board.setsockopt(zmq.SNDHWM, 0)
    board.bind(f"tcp://127.0.0.1:{board_port}")
    assert board.poll(10000), "the receiver did not subscribe"
    board.recv()
    cfg = TimingSimConfig(triggers=3, t0_ns=1_700_000_000 * 10**9)
    rng = random.Random(5)
    n = int(RATE * SECONDS)
    goods = [bunch(cfg, k).SerializeToString() for k in range(n // GOOD_EVERY)]
    wires = [goods[k // GOOD_EVERY] if k % GOOD_EVERY == 0 else garbage(rng, goods[0])
             for k in range(n)]
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(sub.recv() for _ in range(3 * len(goods))))
    reader.start()
    rss = [rss_kib(running.proc.pid)]
    start = time.monotonic()
    for k, wire in enumerate(wires):
        if k % 100 == 0:
            if (ahead := start + k / RATE - time.monotonic()) > 0:
                time.sleep(ahead)
            rss.append(rss_kib(running.proc.pid))
        # the board's PUB: what the receiver cannot take in time queues in zmq (bounded by rcvhwm)
        board.send(wire)
    running.wait_counter("received", n)
    rss.append(rss_kib(running.proc.pid))
    reader.join(10)
    board.close(linger=0)
    assert got == [t.SerializeToString() for k in range(len(goods)) for t in bunch(cfg, k).triggers]
    c = running.status()["counters"]
    assert (c["received"], c["bad_message"], c["triggers"]) == (n, n - len(goods), 3 * len(goods))
    assert c["missed_bunches"] == 0 and c["handler_errors"] == 0
    growth = max(rss) - rss[0]
    print(f"timestamp flood: {n} messages in {time.monotonic() - start:.2f} s, RSS {rss[0]} KiB "
          f"-> max {max(rss)} KiB")
    assert growth < 50_000, f"RSS grew by {growth} KiB"
