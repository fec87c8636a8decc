"""All systemd glue: inherited sockets, sd_notify, the watchdog interval, journald detection.

This is the only module that reads ``LISTEN_*``, ``NOTIFY_SOCKET``, ``WATCHDOG_*`` and
``JOURNAL_STREAM``. Without systemd every function degrades to "nothing to do": no sockets are
inherited, notifications go nowhere, there is no watchdog, and logs go to stderr.
"""

import os
import socket
import time

from systemd import daemon


def inherited_sockets() -> dict[str, list[socket.socket]]:
    """Sockets passed by systemd, by ``FileDescriptorName=`` (unnamed ones are "unknown").

    Only when ``LISTEN_PID`` is this process (a forked child must not take its parent's fds).
    The ``LISTEN_*`` variables are removed so that child processes do not see them.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    named = daemon.listen_fds_with_names(True)
    out: dict[str, list[socket.socket]] = {}
    for fd, name in sorted(named.items()):
        # socket(fileno=) asks the kernel for family and type, unlike fromfd() which trusts the caller
        out.setdefault(name or "unknown", []).append(socket.socket(fileno=fd))
    return out


def notify(*fields: str) -> bool:
    """Send ``fields`` (``READY=1``, ``STATUS=…``) to the service manager; False when not under one."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return bool(daemon.notify("\n".join(fields)))
    except OSError:  # a vanished notify socket must not take the daemon down
        return False


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, as ``RELOADING=1`` wants it in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval_s() -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None if disabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (``JOURNAL_STREAM`` names its device and inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return dev.isdigit() and ino.isdigit() and (st.st_dev, st.st_ino) == (int(dev), int(ino))
