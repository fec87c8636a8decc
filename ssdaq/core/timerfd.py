"""A one-shot Linux ``timerfd`` (through ctypes): an event-loop timer with µs resolution.

asyncio's own timers wait in ``epoll_wait``, whose timeout is whole milliseconds, so a wait of
300 µs becomes 1 ms. A timerfd is a file descriptor that becomes readable when it expires: the
loop watches it like any socket (``add_reader``) and wakes on time to the microsecond. Python
3.11's ``os`` has no timerfd (3.13 adds one), hence ctypes.
"""

import ctypes
import os

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK, _TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_create = _libc.timerfd_create
_create.argtypes, _create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
_settime = _libc.timerfd_settime
_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
_settime.restype = ctypes.c_int


class TimerFD:
    """A monotonic one-shot timer as a file descriptor: readable once it expired, until
    :meth:`clear`."""

    def __init__(self) -> None:
        self.fd: int = _create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)

    def fileno(self) -> int:
        return self.fd

    def arm(self, after_ns: int) -> None:
        """Expire ``after_ns`` from now (at least 1 ns: 0 would disarm it)."""
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(after_ns, 1), 1_000_000_000)
        if _settime(self.fd, 0, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def disarm(self) -> None:
        """Stop it, and take an expiry not yet read: the descriptor is not readable after this
        (setting a timer resets its count of expiries)."""
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        if _settime(self.fd, 0, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
