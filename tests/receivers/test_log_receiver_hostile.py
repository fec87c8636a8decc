"""LogReceiver against senders that would starve it: silent half-records, floods of connections.

Measured before the limits existed: 64 connections that each sent half a varint and went silent
filled max_connections, and a legitimate sender's record never arrived while they stayed open.
The attackers connect from four loopback addresses (16 each, the per-address limit), the
legitimate sender from a fifth.
"""

import socket
import time

from ssdaq.data.messages import encode_delimited
from ssdaq.simulators.log import LogSimConfig, record
from tests.receivers.conftest import nothing_more
from tests.receivers.test_log_receiver import logs, published, with_seqid  # noqa: F401 (fixture)

HALF_VARINT = b"\x80"  # a length prefix's first byte, its continuation bit set


def connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def half_records(port: int, n: int = 64) -> list[socket.socket]:
    """``n`` connections, 16 per source address, each holding half a varint, then silent."""
    socks = []
    for k in range(n):
        s = connect_from(f"127.0.0.{2 + k // 16}", port)
        s.sendall(HALF_VARINT)
        socks.append(s)
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_silent_half_records_cannot_lock_out_a_sender_with_the_default_limits(logs) -> None:
    running, port, sub = logs()
    attackers = half_records(port)
    running.wait_counter("connections", 64)
    good = record(LogSimConfig(), 0)
    t0 = time.monotonic()
    with connect_from("127.0.0.1", port) as s:
        s.sendall(encode_delimited(good))
        assert published(sub, 1) == [with_seqid(good, 1)]
    took = time.monotonic() - t0
    counters = running.status()["counters"]
    # the newcomer replaced the attacker silent longest; nothing was refused
    assert (counters["replaced_connections"], counters["refused_connections"]) == (1, 0)
    assert closed_by_peer(attackers[0])
    running.wait_counter("truncated", 1)  # its half varint is a record cut short
    assert took < 2.0, took
    for s in attackers:
        s.close()


def test_a_connection_stuck_inside_a_record_is_closed_and_a_quiet_one_is_not(logs) -> None:
    running, port, sub = logs(sockets="idle_timeout_s = 0.5\nmax_connections = 66\n")
    good = record(LogSimConfig(), 0)
    quiet = connect_from("127.0.0.1", port)
    quiet.sendall(encode_delimited(good))  # a whole record, then silence between records
    silent = connect_from("127.0.0.1", port)  # connected, never sends a byte
    assert published(sub, 1) == [with_seqid(good, 1)]
    attackers = half_records(port)
    running.wait_counter("idle_closed", 64, timeout=5)
    assert all(closed_by_peer(s) for s in attackers)
    time.sleep(0.6)  # the quiet ones were silent for more than idle_timeout_s too
    counters = running.status()["counters"]
    assert [counters[k] for k in ("idle_closed", "truncated", "replaced_connections",
                                  "refused_connections")] == [64, 64, 0, 0]
    quiet.sendall(encode_delimited(good))
    silent.sendall(encode_delimited(good))
    assert published(sub, 2) == [with_seqid(good, 2), with_seqid(good, 3)]
    assert nothing_more(sub)
    for s in (quiet, silent, *attackers):
        s.close()


def test_at_most_max_connections_per_peer_from_one_address(logs) -> None:
    running, port, _ = logs(sockets="max_connections_per_peer = 2\n")
    first, second = connect_from("127.0.0.2", port), connect_from("127.0.0.2", port)
    running.wait_counter("connections", 2)
    third = connect_from("127.0.0.2", port)
    assert closed_by_peer(third)
    other = connect_from("127.0.0.3", port)
    running.wait_counter("connections", 3)
    counters = running.status()["counters"]
    assert (counters["refused_connections"], counters["replaced_connections"]) == (1, 0)
    for s in (first, second, third, other):
        s.close()


def test_the_old_top_level_max_connections_still_limits(logs) -> None:
    running, port, _ = logs("max_connections = 2\n")
    first = connect_from("127.0.0.2", port)
    first.sendall(HALF_VARINT)
    second = connect_from("127.0.0.3", port)
    running.wait_counter("connections", 2)
    second.sendall(HALF_VARINT)  # now the first one is the one silent longest
    third = connect_from("127.0.0.4", port)
    assert closed_by_peer(first)
    assert running.wait_counter("replaced_connections", 1) == 1
    assert not closed_by_peer_within(second, 0.2)
    for s in (first, second, third):
        s.close()


def closed_by_peer_within(s: socket.socket, wait_s: float) -> bool:
    s.settimeout(wait_s)
    return closed_by_peer(s)
