"""TriggerPacketReceiver under a flood of hostile datagrams: nothing crashes, every datagram is
accounted for (and, when the kernel dropped none, counted for exactly the reason the format
gives), and the packets that follow are relayed byte for byte."""

import random
import socket
from collections import Counter

from ssdaq.core.errors import FormatError
from ssdaq.data import trigger
from ssdaq.simulators.trigger import PacketMaker, TriggerSimConfig, simulate
from tests.conftest import free_port
from tests.receivers.conftest import nothing_more, subscribe
from tests.receivers.hostile import Flood, payloads, wait_accounted
from tests.receivers.test_trigger_receiver import trigger_config

N = 100_000
MAKERS = [PacketMaker(TriggerSimConfig(version=v, samples=16, sps=sps, seed=v))
          for v, sps in ((1, 16), (2, 512), (3, 5))]


def shaped(rng: random.Random) -> bytes:
    """A well-formed packet of any version with a random TACK and counter."""
    return rng.choice(MAKERS)(rng.randrange(2**32))


def reason(payload: bytes) -> str:
    try:
        trigger.validate(payload)
    except FormatError as e:
        return e.reason
    return "published"


def test_a_flood_of_hostile_datagrams_is_counted_and_valid_packets_after_it_are_exact(
        start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    running = start_receiver("trigger", trigger_config(port, pub_port))
    flood = Flood(port, ["127.0.0.1", "127.0.0.2"])
    expected: Counter[str] = Counter()

    def tallied():
        for kind, payload in payloads(11, N, shaped, 9000,  # "oversized": longer than 9000 B
                                      weights=(0.35, 0.05, 0.3, 0.3)):
            expected[reason(payload)] += 1
            yield kind, payload

    flood.send(tallied(), lambda k: k & 1)
    c = wait_accounted(running, flood.sent)
    flood.close()
    assert running.proc.poll() is None, "the receiver died"
    assert c["received"] + c["oversize"] + c["kernel_drops"] == flood.sent == N
    assert c["handler_errors"] == 0 and c["oversize"] == 0  # it takes all UDP can carry
    counted = {k: c[k] for k in expected}
    print(f"flood: {flood.kinds}; expected {dict(expected)}; kernel drops {c['kernel_drops']}")
    if c["kernel_drops"] == 0:
        assert counted == dict(expected)
    else:  # which ones the kernel dropped is unknown: only the totals can be compared
        assert sum(counted.values()) == c["received"]

    sub = subscribe(zmq_context, pub_port)
    cfg = TriggerSimConfig(version=2, rate=5000, count=500, tack0=10**18, samples=16, sps=512)
    simulate(cfg, "127.0.0.1", port)
    make = PacketMaker(cfg)
    assert [sub.recv() for _ in range(cfg.count)] == [make(k) for k in range(cfg.count)]
    assert nothing_more(sub)
