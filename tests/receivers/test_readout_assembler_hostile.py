"""ReadoutAssembler under a flood of hostile datagrams: nothing crashes, every datagram is
accounted for, and the camera's data that follows comes out exact."""

import random
import socket
import time

import numpy as np

from ssdaq.data.readout import N_TM_PIX, SSReadout
from ssdaq.data.slowsignal import RECORD_BYTES, encode_records
from ssdaq.simulators.tm import TMSimConfig, pattern_mv, simulate, source_address
from tests.conftest import free_port
from tests.receivers.conftest import nothing_more, subscribe
from tests.receivers.hostile import Flood, payloads, wait_accounted
from tests.receivers.test_readout_assembler import T0, collect, config

N = 100_000
MAX_BYTES = 9000
POOL = 4096  # distinct random records: a copy of one is a duplicate or late, not a new readout


def records_of(rng: np.random.Generator) -> bytes:
    tacks = np.frombuffer(rng.bytes(8 * POOL), np.uint64)
    words = np.frombuffer(rng.bytes(2 * 64 * POOL), np.uint16).reshape(POOL, 64)
    return encode_records(tacks, words).tobytes()


def test_a_flood_of_hostile_datagrams_is_counted_and_clean_data_after_it_is_exact(
        start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", config(port, pub_port, "[assembler]\nmax_wait_s = 0.2\n"))
    pool = records_of(np.random.default_rng(1))

    def shaped(rng: random.Random) -> bytes:
        k, first = rng.randrange(1, 11), rng.randrange(POOL - 10)
        return pool[first * RECORD_BYTES:(first + k) * RECORD_BYTES]

    # the 32 modules' addresses, one outside the camera's range (slot 50) and a stranger
    sources = [source_address(m) for m in range(32)] + ["127.0.0.150", "127.0.0.1"]
    flood = Flood(port, sources)
    pick = np.random.default_rng(2).integers(0, len(sources), N)
    t0 = time.monotonic()
    flood.send(payloads(7, N, shaped, MAX_BYTES), lambda k: int(pick[k]))
    sent_s = time.monotonic() - t0
    c = wait_accounted(rx, flood.sent)
    flood.close()
    assert rx.proc.poll() is None, "the assembler died"
    assert c["received"] + c["oversize"] + c["kernel_drops"] == flood.sent == N
    assert c["handler_errors"] == 0
    assert c["oversize"] >= flood.kinds["oversized"] - c["kernel_drops"]
    assert min(c["bad_size"], c["empty"], c["unknown_source"], c["duplicate"]) > 0, c
    print(f"flood: {N} datagrams in {sent_s:.2f} s {flood.kinds}; counters {c}")

    time.sleep(0.5)  # the flood's open readouts are published (max_wait_s = 0.2)
    numbered = rx.status()["counters"]["published"]
    sub = subscribe(zmq_context, pub_port)
    sim = TMSimConfig(modules=32, rate=100, records_per_packet=10, duration=1.0, tack0=T0)
    simulate(sim, "127.0.0.1", port)
    got = collect(sub, sim.readouts)
    assert nothing_more(sub)
    assert [r.iro for r in got] == list(range(numbered + 1, numbered + 1 + sim.readouts))
    for k, r in enumerate(got):
        assert r.time == sim.readout_tack(k) and len(r.modules_present) == 32
        assert np.array_equal(r.data, pattern_mv(np.arange(32)[:, None], k, np.arange(N_TM_PIX)))
    assert isinstance(got[0], SSReadout)
    sub.close()
