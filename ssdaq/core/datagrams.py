"""Batched UDP reception: ``recvmmsg`` into preallocated numpy buffers, one call per batch.

asyncio's datagram transport reads one datagram per ``recvfrom(256 KiB)`` at about 16 µs each;
here one readiness event drains the socket in batches of up to ``batch`` datagrams at under
1 µs each, and hands each batch to the receiver as arrays (payload rows, lengths, senders), so
decoding can be vectorised. The kernel's count of datagrams dropped on this socket for lack of
buffer space arrives with every datagram (``SO_RXQ_OVFL``); :attr:`kernel_drops` is its increase
since the reader was made, because a socket-activated socket outlives the receiver's restarts
and each process's counters start at 0 (as Prometheus's ``increase()`` expects).

With ``coalesce_s`` > 0 the datagrams of a burst go to the handler together, since its cost is
mostly per call: a wake-up that finds a burst under way waits that long (a
:class:`~ssdaq.core.timerfd.TimerFD`, not the socket), and one ``recvmmsg`` at the wait's end
reads all that came. Each datagram then waits at most ``coalesce_s`` (plus the timer's slack,
~50 µs) longer. In a stream (the wake-up came less than ``coalesce_s`` after the previous one)
the wake-up reads nothing before it waits: one read a pass, not two (``make bench``: coalescing
saves the trigger relay 6-7 % of its CPU at 100 000 packets/s, against 3 % reading twice). After
a quiet spell the wake-up reads what is there, and waits only if it found more than one
datagram; a lone datagram is handled at once, since waiting would catch nothing and cost a
second wake-up (trigger packets at a camera's few hundred per second arrive that way). With
``wait_first`` every wake-up reads nothing and waits: for input whose datagrams never come alone
(a readout's 32 modules send together), so that a burst is read and handled in one pass, not two
(each pass out of the CPU's caches costs some 200 µs at a camera's 10 readouts/s). The socket
and the timer sit in an epoll set of the reader's own, which the event loop watches as one
descriptor: to wait, the reader masks the socket in that set (one ``epoll_ctl``) instead of
taking it off the loop and putting it back (eight system calls a wait under uvloop, which makes
a poll handle each time).

With ``timestamps=True`` each datagram also carries the kernel's receive time (``SO_TIMESTAMPNS``):
when it reached the socket, not when the reader got to it, so a receiver that falls behind in a
burst still stamps its data with the true arrival time. (The kernel switches timestamping on a
moment after the first socket of the system asks; datagrams before that are stamped when read.)
"""

import asyncio
import ctypes
import errno
import os
import select
import socket
import time
from collections.abc import Callable

import numpy as np

# the batch a handler gets is declared apart (see there why); importable from here as before
from ssdaq.core.datagram_batch import NAME_BYTES
from ssdaq.core.datagram_batch import DatagramBatch as DatagramBatch
from ssdaq.core.mmsg import MMSG_BYTES, IOVec, MMsgHdr, MsgHdr, recvmmsg
from ssdaq.core.timerfd import TimerFD

SO_RXQ_OVFL = 40
SO_TIMESTAMPNS = 35  # also the control message's type (SCM_TIMESTAMPNS): a struct timespec
MSG_TRUNC = 0x20
_RECV_FLAGS = int(socket.MSG_DONTWAIT) | MSG_TRUNC  # a plain int: an enum's "|" is Python code
# Control messages on 64-bit Linux: a 16-byte cmsghdr (len, level, type), then the data, padded
# to 8. The kernel writes the timestamp before the drop counter, and the counter only once the
# socket has dropped something.
_CMSG_DATA = 16
_TIMESTAMP_SPACE = 32  # CMSG_SPACE(sizeof(struct timespec))
_DROPS_SPACE = 24  # CMSG_SPACE(sizeof(uint32))
_CONTROL_BYTES = _TIMESTAMP_SPACE + _DROPS_SPACE


def socket_drops(sock: socket.socket) -> int:
    """The kernel's count of datagrams dropped on ``sock`` so far (0 if it is not listed).

    The drop counter reaches the reader only with a datagram and only once it is non-zero, so
    its value when a process starts comes from ``/proc/net/udp{,6}`` (the socket's inode).
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[12])
        except OSError:
            continue
    return 0


def _field_view(hdrs: "ctypes.Array[MMsgHdr]", field: str, dtype: type[np.generic],
                n: int) -> np.ndarray:
    """A strided numpy view of one field across an array of mmsghdr, to reset or read it at once."""
    offset = getattr(MsgHdr, field).offset if hasattr(MsgHdr, field) else getattr(MMsgHdr, field).offset
    raw = np.frombuffer(memoryview(hdrs), dtype=np.uint8)
    return np.ndarray((n,), dtype=dtype, buffer=raw, offset=offset, strides=(MMSG_BYTES,))


class DatagramReader:
    """Drains a UDP socket in batches on each readiness event and calls ``handler(batch)``.

    It counts what it reads: :attr:`received` (datagrams handed to the handler), :attr:`oversize`
    and :attr:`kernel_drops`. A handler that raises does not stop the reader: the error goes to
    the caller-supplied ``on_error`` (which counts it as ``handler_errors``). :meth:`stalled` tells the watchdog whether
    data is waiting that the reader has not serviced for a while (a stuck data path).
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Callable[[DatagramBatch], None],
        on_error: Callable[[BaseException], None],
        *,
        max_bytes: int = 9000,
        batch: int = 64,
        max_batches_per_event: int = 32,
        timestamps: bool = False,
        coalesce_s: float = 0.0,
        wait_first: bool = False,
    ) -> None:
        self.sock, self.handler, self.on_error = sock, handler, on_error
        self.max_bytes, self.max_batches = max_bytes, max_batches_per_event
        self.received = self.oversize = self.kernel_drops = 0
        self._drops_before = socket_drops(sock)  # what the kernel counted before this process
        self.batch = DatagramBatch(batch, max_bytes, sock.family)
        self.timestamps = timestamps
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._control = np.zeros((batch, _CONTROL_BYTES), dtype=np.uint8)
        self._iov = (IOVec * batch)()
        self._hdrs = (MMsgHdr * batch)()
        for i in range(batch):
            self._iov[i].iov_base = self.batch.data[i].ctypes.data
            self._iov[i].iov_len = max_bytes
            h = self._hdrs[i].msg_hdr
            h.msg_name = self.batch.names[i].ctypes.data
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
            h.msg_control = self._control[i].ctypes.data
        self._namelen = _field_view(self._hdrs, "msg_namelen", np.uint32, batch)
        self._controllen = _field_view(self._hdrs, "msg_controllen", np.uint64, batch)
        self._msglen = _field_view(self._hdrs, "msg_len", np.uint32, batch)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.paused = False
        self.last_service = time.monotonic()
        self._coalesce_s, self._coalesce_ns = coalesce_s, round(coalesce_s * 1e9)
        self._wait_first = wait_first
        self._timer = TimerFD() if self._coalesce_ns else None
        self._waiting = False  # a partial batch is held while the timer runs
        # what the loop watches: the socket itself, or the set of the socket and the timer
        self._ready: select.epoll | None = None
        self._wake_fd, self._on_wake = sock.fileno(), self._on_readable
        if self._timer is not None:
            self._ready = select.epoll()
            self._ready.register(sock.fileno(), select.EPOLLIN)
            self._ready.register(self._timer.fd, select.EPOLLIN)
            self._wake_fd, self._on_wake = self._ready.fileno(), self._on_set_ready

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.paused = False
        self.last_service = time.monotonic()
        loop.add_reader(self._wake_fd, self._on_wake)

    def pause(self) -> None:
        """Stop reading (what is queued stays in the kernel for whoever reads next). A batch held
        for coalescing goes to the handler first: what was read is never left unhandled."""
        if self._loop is not None and not self.paused:
            self._loop.remove_reader(self._wake_fd)
            if self._waiting:
                self._stop_waiting()
                self._handle()
        self.paused = True

    def close(self) -> None:
        self.pause()
        self.sock.close()
        if self._timer is not None:
            self._timer.close()
        if self._ready is not None:
            self._ready.close()

    def stalled(self, limit_s: float) -> bool:
        """Data has waited in the socket for more than ``limit_s`` without being read."""
        if time.monotonic() - self.last_service < limit_s or self.sock.fileno() < 0:
            return False
        return bool(select.select([self.sock], [], [], 0)[0])

    def _on_set_ready(self) -> None:
        """The socket or the timer is ready: while a batch is held the socket is masked, so the
        timer it is."""
        if self._waiting:
            self._on_timer()
        else:
            self._on_readable()

    def _on_readable(self) -> None:
        now = time.monotonic()
        # datagrams come faster than the wait: the previous wake-up was less than a wait ago
        streaming = now - self.last_service < self._coalesce_s
        self.last_service = now
        can_wait = self._ready is not None and self._loop is not None  # started, with a timer
        if can_wait and (self._wait_first or streaming):
            self.batch.count = 0  # all of it is read when the wait is over
            self._wait()
            return
        n_max = len(self._iov)
        n = self._receive(0)
        if can_wait and 1 < n < n_max:
            self._wait()  # less than a batch of a burst under way: let the rest arrive first
            return
        self._drain(n == n_max)

    def _wait(self) -> None:
        """Mask the socket and arm the timer: the batch read so far is held until it rings."""
        assert self._timer is not None and self._ready is not None
        self._ready.modify(self.sock.fileno(), 0)
        self._timer.arm(self._coalesce_ns)
        self._waiting = True

    def _on_timer(self) -> None:
        """The wait is over: read what came meanwhile into the held batch and hand it over."""
        self._stop_waiting()
        self.last_service = time.monotonic()
        start = self.batch.count
        n = self._receive(start)
        self._drain(start + n == len(self._iov))

    def _stop_waiting(self) -> None:
        """Disarm the timer and watch the socket again (the held batch is the caller's)."""
        assert self._timer is not None and self._ready is not None
        self._waiting = False
        self._timer.disarm()
        self._ready.modify(self.sock.fileno(), select.EPOLLIN)

    def _drain(self, full: bool) -> None:
        """Handle the batch read; while reads fill whole batches, read and handle more, up to
        ``max_batches`` reads per wake-up in all (then the loop serves its other work)."""
        for _ in range(self.max_batches - 1):
            self._handle()
            if not full:
                return
            full = self._receive(0) == len(self._iov)
        self._handle()

    def _handle(self) -> None:
        if self.batch.count:
            try:
                self.handler(self.batch)
            except Exception as e:  # the data path keeps running; the caller counts and logs
                self.on_error(e)

    def _receive(self, start: int) -> int:
        """One recvmmsg call into the batch from row ``start`` (0: a new batch); returns how many
        datagrams it took (the batch keeps the valid ones)."""
        b = self.batch
        b.count = start
        n_max = len(self._iov) - start
        self._namelen[start:] = NAME_BYTES
        self._controllen[start:] = _CONTROL_BYTES
        n: int = recvmmsg(self.sock.fileno(), ctypes.addressof(self._hdrs) + start * MMSG_BYTES,
                          n_max, _RECV_FLAGS, None)
        if n < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR, errno.ECONNREFUSED):
                self.on_error(OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}"))
            return 0
        now = time.time_ns()
        new = slice(start, start + n)
        b.lengths[new] = self._msglen[new]
        if self.timestamps:
            self._stamp(new, now)
        else:
            b.arrival_ns[new] = now
        self._read_drops(start + n - 1)
        if b.family == socket.AF_INET:
            b.ipv4[new] = b.names[new, 4:8].copy().view(np.uint32).ravel()
        too_big = b.lengths[new] > self.max_bytes
        kept = self._drop_oversize(start, n, too_big) if too_big.any() else n
        b.count = start + kept
        self.received += kept
        return n

    def _stamp(self, new: slice, now: int) -> None:
        """Kernel receive times into ``arrival_ns`` (``now`` where a datagram has none)."""
        control = self._control[new]
        stamped = (self._controllen[new] >= _TIMESTAMP_SPACE) & (
            control[:, 12:16].view(np.int32)[:, 0] == SO_TIMESTAMPNS)
        sec_ns = control[:, _CMSG_DATA:_TIMESTAMP_SPACE].view(np.int64)
        stamps = sec_ns[:, 0] * 1_000_000_000 + sec_ns[:, 1]
        self.batch.arrival_ns[new] = stamps if stamped.all() else np.where(stamped, stamps, now)

    def _read_drops(self, i: int) -> None:
        """The socket's drop counter, from datagram ``i``'s control messages if it came along."""
        at = _TIMESTAMP_SPACE if self.timestamps else 0  # the timestamp is always there first
        if self._controllen[i] >= at + _CMSG_DATA + 4:
            data = self._control[i, at + _CMSG_DATA : at + _CMSG_DATA + 4]
            self.kernel_drops = int(data.view(np.uint32)[0]) - self._drops_before

    def _drop_oversize(self, start: int, n: int, too_big: np.ndarray) -> int:
        """Remove datagrams longer than the buffer (they were truncated) from rows ``start ..
        start + n`` of the batch, counted; returns how many are kept."""
        keep = start + np.flatnonzero(~too_big)
        self.oversize += int(too_big.sum())
        b = self.batch
        for arr in (b.data, b.names, b.lengths, b.ipv4, b.arrival_ns):
            arr[start : start + len(keep)] = arr[keep]
        return len(keep)
