"""What this process costs, for ``status``: CPU seconds, resident memory, start time.

Cheap enough for a poll every second: ``os.times()`` is one system call and ``/proc/self/statm``
one ``pread`` of a descriptor kept open; the start time is worked out once.
"""

import functools
import os
import time

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    """User plus system CPU seconds of this process (its children not included)."""
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int:
    """Resident set size now (not the peak that ``getrusage`` reports)."""
    return int(os.pread(_statm(), 128, 0).split()[1]) * _PAGE_BYTES


@functools.cache
def _statm() -> int:
    """``/proc/self/statm`` opened once, one ``pread`` per poll (a forked child would read its
    parent's: ssdaq's daemons never fork without exec, and exec closes it)."""
    return os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)


@functools.cache
def started_unix() -> float:
    """When this process started, in Unix seconds (from its start time in clock ticks since boot)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()  # the command name may hold spaces
    since_boot_s = int(fields[19]) / _CLOCK_TICKS  # field 22, starttime; fields[0] is field 3
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot_s)


def figures() -> dict[str, float | int]:
    """The ``process`` table of ``status``."""
    return {"cpu_s": round(cpu_s(), 3), "rss_bytes": rss_bytes(), "started_unix": round(started_unix(), 2)}
