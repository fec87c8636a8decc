"""Seeded hostile input for the flood tests: random, oversized, record-shaped and mutated payloads.

Every flood is a function of its seed, so a failure replays exactly. The payloads are drawn
lazily (a flood of 10^5 never sits in memory at once) from four kinds:

* random    -- random bytes of a random length (mostly short, some up to ``max_bytes``)
* oversized -- random bytes longer than the receiver accepts (``max_bytes`` + 1 .. 65507)
* shaped    -- what the caller's ``shaped(rng)`` makes: well-formed, with random contents
* mutated   -- one of those with random bytes flipped, cut short or extended
"""

import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence

UDP_MAX = 65507
KINDS = ("random", "oversized", "shaped", "mutated")


def mutate(rng: random.Random, payload: bytes) -> bytes:
    """``payload`` damaged one way: bytes flipped, cut short, or extended with random bytes."""
    out = bytearray(payload)
    how = rng.randrange(3)
    if how == 0 and out:
        for _ in range(rng.randrange(1, 9)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif how == 1 and out:
        del out[rng.randrange(len(out)):]
    else:
        out += rng.randbytes(rng.randrange(1, 300))
    return bytes(out)


def payloads(seed: int, n: int, shaped: Callable[[random.Random], bytes], max_bytes: int,
             weights: Sequence[float] = (0.3, 0.1, 0.3, 0.3)) -> Iterator[tuple[str, bytes]]:
    """``n`` (kind, payload) pairs."""
    rng = random.Random(seed)
    pool = rng.randbytes(UDP_MAX)
    for kind in rng.choices(KINDS, weights, k=n):
        if kind == "random":
            length = rng.randrange(200) if rng.random() < 0.9 else rng.randrange(max_bytes + 1)
            start = rng.randrange(UDP_MAX - length + 1)
            yield kind, pool[start:start + length]
        elif kind == "oversized":
            yield kind, pool[UDP_MAX - rng.randrange(max_bytes + 1, UDP_MAX + 1):]
        elif kind == "shaped":
            yield kind, shaped(rng)
        else:
            yield kind, mutate(rng, shaped(rng))


class Flood:
    """Sends payloads from a set of source addresses to one UDP port, paced, counting what went."""

    def __init__(self, port: int, sources: Sequence[str], rate: float = 100_000) -> None:
        self.dest = ("127.0.0.1", port)
        self.rate = rate
        self.socks = []
        for source in sources:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((source, 0))
            self.socks.append(s)
        self.sent = 0
        self.kinds: dict[str, int] = dict.fromkeys(KINDS, 0)

    def send(self, items: Iterator[tuple[str, bytes]], source: Callable[[int], int]) -> None:
        """Send every item from socket ``source(k)``, at most ``rate`` per second."""
        start = time.monotonic()
        for k, (kind, payload) in enumerate(items):
            if k % 1000 == 0 and (ahead := start + k / self.rate - time.monotonic()) > 0:
                time.sleep(ahead)
            self.socks[source(k)].sendto(payload, self.dest)
            self.sent += 1
            self.kinds[kind] += 1

    def close(self) -> None:
        for s in self.socks:
            s.close()


def wait_accounted(running, sent: int, timeout: float = 30.0) -> dict[str, int]:
    """Counters once every sent datagram is ``received``, ``oversize`` or a kernel drop."""
    deadline = time.monotonic() + timeout
    while True:
        c = running.status()["counters"]
        if c["received"] + c["oversize"] + c["kernel_drops"] >= sent:
            return c
        assert time.monotonic() < deadline, f"{sent} sent, accounted for after {timeout} s: {c}"
        time.sleep(0.1)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
