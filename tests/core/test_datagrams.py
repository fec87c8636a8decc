"""Batched UDP reception: every datagram arrives once with its sender; losses are counted."""

import asyncio
import logging
import os
import socket
import time

import pytest

from ssdaq.core.datagrams import DatagramBatch, DatagramReader, socket_drops
from ssdaq.core.sockets import tune_receive_buffer


def receive_all(reader: DatagramReader, rounds: int = 3) -> None:
    """Let the reader drain what is queued (it runs from the loop's readiness callbacks)."""
    loop = asyncio.new_event_loop()
    reader.start(loop)
    for _ in range(rounds):
        loop.run_until_complete(asyncio.sleep(0.05))
    reader.pause()
    loop.close()


def bound_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def test_every_datagram_arrives_once_with_length_and_sender() -> None:
    sock = bound_udp()
    got: list[tuple[bytes, str, int]] = []

    def handler(b: DatagramBatch) -> None:
        for i in range(b.count):
            got.append((bytes(b.payload(i)), *b.sender(i)))
        assert b.ipv4[: b.count].tolist() == [int.from_bytes(bytes([127, 0, 0, 100 + i % 3]), "little")
                                              for i in range(len(got) - b.count, len(got))]

    reader = DatagramReader(sock, handler, lambda e: (_ for _ in ()).throw(e), batch=16, max_bytes=2000)
    senders = []
    for k in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{100 + k}", 0))
        senders.append(s)
    sent = []
    for i in range(100):  # more than one batch
        payload = bytes([i]) * (i + 1)
        senders[i % 3].sendto(payload, sock.getsockname())
        sent.append((payload, f"127.0.0.{100 + i % 3}", senders[i % 3].getsockname()[1]))
    receive_all(reader)
    assert got == sent and reader.received == 100
    for s in senders:
        s.close()
    reader.close()


def test_oversize_datagrams_are_dropped_and_counted() -> None:
    sock = bound_udp()
    lengths: list[int] = []
    reader = DatagramReader(sock, lambda b: lengths.extend(b.lengths[: b.count].tolist()),
                            lambda e: None, max_bytes=100)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in (10, 500, 100, 101, 5):
            s.sendto(b"x" * n, sock.getsockname())
        receive_all(reader)
    assert lengths == [10, 100, 5] and reader.oversize == 2
    reader.close()


@pytest.mark.parametrize("timestamps", [False, True])
def test_kernel_drops_are_counted(timestamps: bool) -> None:
    sock = bound_udp()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # tiny: most of a burst is dropped
    n = 0
    reader = DatagramReader(sock, lambda b: None, lambda e: None, timestamps=timestamps)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(200):
            s.sendto(b"x" * 1000, sock.getsockname())
        receive_all(reader)
        n = reader.received
        s.sendto(b"y", sock.getsockname())  # the counter travels with the next datagram
        receive_all(reader)
    assert reader.kernel_drops == 200 - n > 0
    reader.close()


def test_kernel_drops_start_at_zero_for_a_reader_of_an_inherited_socket() -> None:
    """A socket that outlives a receiver (socket activation) keeps the kernel's drop count; the
    next reader counts only its own, so every process's counter starts at 0."""
    sock = bound_udp()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(200):  # dropped before the reader exists: nobody reads
            s.sendto(b"x" * 1000, sock.getsockname())
        before = socket_drops(sock)
        assert before > 0
        while True:  # what the previous process left queued
            try:
                sock.recv(2000, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        reader = DatagramReader(sock, lambda b: None, lambda e: None)
        s.sendto(b"y", sock.getsockname())
        receive_all(reader)
        assert reader.received == 1 and reader.kernel_drops == 0
        for _ in range(200):
            s.sendto(b"x" * 1000, sock.getsockname())
        receive_all(reader)
        n = reader.received - 1
        s.sendto(b"y", sock.getsockname())
        receive_all(reader)
    assert reader.kernel_drops == 200 - n > 0
    assert socket_drops(sock) == before + reader.kernel_drops
    reader.close()


def test_timestamps_are_the_kernel_arrival_times_not_the_read_time() -> None:
    """Datagrams that wait in the socket keep the time they arrived; without ``timestamps`` the
    batch carries the time of the read."""
    stamps: dict[bool, list[int]] = {False: [], True: []}
    for timestamps in (False, True):
        sock = bound_udp()
        got = stamps[timestamps]
        reader = DatagramReader(sock, lambda b, got=got: got.extend(b.arrival_ns[: b.count].tolist()),
                                lambda e: None, batch=4, timestamps=timestamps)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # the kernel turns timestamping on a moment after the first socket asks (a static
            # key flipped from a work queue); until then a datagram is stamped when read
            s.sendto(b"warm-up", sock.getsockname())
            time.sleep(0.1)
            receive_all(reader)
            got.clear()
            sent = []
            for i in range(6):  # more than one batch
                sent.append(time.time_ns())
                s.sendto(bytes([i]), sock.getsockname())
                time.sleep(0.02)
            waited = time.time_ns()
            time.sleep(0.2)  # queued: the read comes 200 ms after the last arrival
            receive_all(reader)
        reader.close()
        assert len(got) == 6
        if timestamps:
            assert all(t0 <= t < t0 + 10_000_000 for t0, t in zip(sent, got)), (sent, got)
            assert got == sorted(got) and got[-1] - got[0] >= 5 * 20_000_000
        else:
            assert all(t >= waited + 200_000_000 for t in got)


def test_a_handler_error_is_reported_and_reading_goes_on() -> None:
    sock = bound_udp()
    errors: list[BaseException] = []
    seen = []

    def handler(b: DatagramBatch) -> None:
        seen.append(b.count)
        raise ValueError("bad batch")

    reader = DatagramReader(sock, handler, errors.append, batch=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(10):
            s.sendto(b"z", sock.getsockname())
        receive_all(reader)
    assert sum(seen) == 10 and len(errors) == len(seen) and isinstance(errors[0], ValueError)
    reader.close()


def test_stalled_only_when_data_waits_unread() -> None:
    sock = bound_udp()
    reader = DatagramReader(sock, lambda b: None, lambda e: None)
    reader.last_service = time.monotonic() - 10
    assert not reader.stalled(1.0), "an idle socket is not a stalled reader"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"w", sock.getsockname())
        time.sleep(0.05)
        assert reader.stalled(1.0)
        reader.last_service = time.monotonic()
        assert not reader.stalled(1.0)
    reader.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_RCVBUFFORCE needs CAP_NET_ADMIN (CI runs as root)")
def test_receive_buffer_is_grown_but_never_shrunk() -> None:
    log = logging.getLogger("test")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        granted = tune_receive_buffer(s, 1 << 20, log)
        assert granted >= 2 * (1 << 20)  # as root SO_RCVBUFFORCE passes rmem_max
        assert tune_receive_buffer(s, 4096, log) == granted

