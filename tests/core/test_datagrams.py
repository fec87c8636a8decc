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


def _send(sock: socket.socket, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, sock.getsockname())


# (coalesce_s, wait_first): no waiting, waiting within a burst, and at every wake-up
READ_MODES = [(0.0, False), (0.001, False), (0.001, True)]


@pytest.mark.parametrize("coalesce_s, wait_first", READ_MODES)
def test_every_datagram_arrives_once_with_length_and_sender(coalesce_s: float,
                                                           wait_first: bool) -> None:
    sock = bound_udp()
    got: list[tuple[bytes, str, int]] = []

    def handler(b: DatagramBatch) -> None:
        for i in range(b.count):
            got.append((bytes(b.payload(i)), *b.sender(i)))
        assert b.ipv4[: b.count].tolist() == [int.from_bytes(bytes([127, 0, 0, 100 + i % 3]), "little")
                                              for i in range(len(got) - b.count, len(got))]

    reader = DatagramReader(sock, handler, lambda e: (_ for _ in ()).throw(e), batch=16,
                            max_bytes=2000, coalesce_s=coalesce_s, wait_first=wait_first)
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


@pytest.mark.parametrize("coalesce_s, wait_first", READ_MODES)
def test_a_backlog_of_many_batches_is_handled_whole(coalesce_s: float, wait_first: bool) -> None:
    """More full batches queued than one wake-up reads: each read batch is handled, and the
    rest at the next wake-ups."""
    sock = bound_udp()
    got: list[int] = []
    reader = DatagramReader(sock, lambda b: got.extend(b.data[: b.count, 0].tolist()), lambda e: None,
                            batch=4, max_batches_per_event=3, coalesce_s=coalesce_s,
                            wait_first=wait_first)
    _send(sock, [bytes([i]) for i in range(50)])
    receive_all(reader, rounds=10)
    assert got == list(range(50)) and reader.received == 50
    reader.close()


@pytest.mark.parametrize("coalesce_s, wait_first", READ_MODES)
def test_oversize_datagrams_are_dropped_and_counted(coalesce_s: float, wait_first: bool) -> None:
    sock = bound_udp()
    lengths: list[int] = []
    reader = DatagramReader(sock, lambda b: lengths.extend(b.lengths[: b.count].tolist()),
                            lambda e: None, max_bytes=100, coalesce_s=coalesce_s,
                            wait_first=wait_first)
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


def _until_waiting(reader: DatagramReader, loop: asyncio.AbstractEventLoop) -> None:
    for _ in range(100):
        loop.run_until_complete(asyncio.sleep(0.01))
        if reader._waiting:
            return
    raise AssertionError("the reader never held a partial batch")


def test_coalescing_hands_a_burst_over_in_one_batch() -> None:
    """A wake-up that finds less than a batch holds it; what arrives meanwhile joins it (also
    after an oversize datagram), and the whole goes to the handler in one call."""
    sock = bound_udp()
    batches: list[list[bytes]] = []
    reader = DatagramReader(sock, lambda b: batches.append([bytes(b.payload(i)) for i in range(b.count)]),
                            lambda e: None, batch=16, max_bytes=100, coalesce_s=60.0)
    loop = asyncio.new_event_loop()
    reader.start(loop)
    _send(sock, [b"a", b"b"])
    _until_waiting(reader, loop)
    assert batches == []
    _send(sock, [b"c", b"x" * 200, b"d"])
    time.sleep(0.05)
    reader._on_timer()  # what the timer does when it expires (60 s: never in this test)
    assert batches == [[b"a", b"b", b"c", b"d"]] and reader.oversize == 1 and reader.received == 4
    reader.close()
    loop.close()


def test_a_lone_datagram_after_a_quiet_spell_is_handled_at_once() -> None:
    """Waiting for a burst that is not coming would cost a second wake-up and delay the datagram;
    one that follows the previous wake-up within the wait is part of a stream: the wake-up reads
    nothing and waits, and one read at the wait's end takes it and what came meanwhile."""
    sock = bound_udp()
    got: list[int] = []
    reader = DatagramReader(sock, lambda b: got.append(b.count), lambda e: None, coalesce_s=60.0)
    loop = asyncio.new_event_loop()
    reader.start(loop)
    reader.last_service = time.monotonic() - 61  # nothing for longer than the wait
    _send(sock, [b"1"])
    for _ in range(100):
        loop.run_until_complete(asyncio.sleep(0.01))
        if got:
            break
    assert got == [1] and not reader._waiting
    _send(sock, [b"2"])  # within 60 s of the previous wake-up: a stream, left for the wait's end
    _until_waiting(reader, loop)
    assert got == [1] and reader.received == 1  # read with the rest when the wait is over
    reader.close()
    loop.close()


def test_with_wait_first_a_burst_is_read_whole_at_the_end_of_the_wait() -> None:
    """A wake-up reads nothing, after a quiet spell or in a stream: the datagrams stay queued in
    the kernel until the timer, and go to the handler in one call; a pause meanwhile leaves them
    queued there."""
    sock = bound_udp()
    got: list[list[bytes]] = []
    reader = DatagramReader(sock, lambda b: got.append([bytes(b.payload(i)) for i in range(b.count)]),
                            lambda e: None, coalesce_s=60.0, wait_first=True)
    loop = asyncio.new_event_loop()
    reader.start(loop)
    reader.last_service = time.monotonic() - 61  # nothing for longer than the wait
    _send(sock, [b"1"])
    _until_waiting(reader, loop)
    assert reader.received == 0 and reader.batch.count == 0  # nothing read yet
    _send(sock, [b"2", b"3"])
    time.sleep(0.05)
    reader._on_timer()  # what the timer does when it expires (60 s: never in this test)
    assert got == [[b"1", b"2", b"3"]] and reader.received == 3 and not reader._waiting
    _send(sock, [b"4"])  # at once: a stream, which without wait_first is read at the wake-up
    _until_waiting(reader, loop)
    assert reader.received == 3
    reader.pause()  # a stop: nothing was read, so nothing is handled; "4" waits in the kernel
    assert got == [[b"1", b"2", b"3"]] and not reader._waiting
    assert sock.recv(10) == b"4"
    reader.close()
    loop.close()


def test_a_held_batch_goes_to_the_handler_when_the_timer_expires_or_at_pause() -> None:
    sock = bound_udp()
    got: list[int] = []
    reader = DatagramReader(sock, lambda b: got.append(b.count), lambda e: None, coalesce_s=0.005)
    _send(sock, [b"1", b"2", b"3"])
    receive_all(reader)
    assert got == [3]
    reader.close()
    loop = asyncio.new_event_loop()
    reader = DatagramReader(bound_udp(), lambda b: got.append(b.count), lambda e: None, coalesce_s=60.0)
    reader.start(loop)
    reader.last_service = time.monotonic() - 61  # a burst after a quiet spell: read, then held
    _send(reader.sock, [b"4", b"5"])
    _until_waiting(reader, loop)
    reader.pause()  # a stop: what was read is handled, not lost
    assert got == [3, 2] and not reader._waiting
    reader.close()
    loop.close()


def test_a_wait_ends_by_the_timer_alone_and_leaves_nothing_ready_behind() -> None:
    """Through a real loop: a burst held, handed over when the timer fires, and afterwards the
    loop sleeps (a timer left readable, or a socket left masked, would spin it or stop reading)."""
    sock = bound_udp()
    got: list[int] = []
    reader = DatagramReader(sock, lambda b: got.append(b.count), lambda e: None, coalesce_s=0.02)
    loop = asyncio.new_event_loop()
    reader.start(loop)
    for burst in ([b"1", b"2"], [b"3", b"4", b"5"]):
        _send(sock, burst)
        _until_waiting(reader, loop)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert not reader._waiting
    assert got == [2, 3]
    reader.pause()
    _send(sock, [b"6"])
    reader.start(loop)  # after a pause the socket is watched again
    cpu = time.thread_time()
    loop.run_until_complete(asyncio.sleep(0.3))
    assert got == [2, 3, 1]
    assert time.thread_time() - cpu < 0.1, "the loop spun while idle"
    reader.close()
    loop.close()


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

