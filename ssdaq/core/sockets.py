"""Listening sockets: taken from systemd when socket-activated, bound from the config otherwise.

Under systemd the ``.socket`` unit owns the kernel side (address, ``ReceiveBuffer=``) and its
socket wins over the config; a port that differs from the config is warned about, so the two
places where a port can be set cannot silently disagree.
"""

import logging
import socket
from typing import Any

from ssdaq.core import systemd
from ssdaq.core.errors import UnavailableError

KIND_NAMES: dict[int, str] = {socket.SOCK_DGRAM: "datagram (UDP)", socket.SOCK_STREAM: "stream (TCP)"}
# SO_RCVBUFFORCE is not exported by the socket module; its value is fixed in the Linux ABI
SO_RCVBUFFORCE = 33


class SocketSource:
    """Hands out the receiver's listening sockets by name (the ``FileDescriptorName=``)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.inherited = systemd.inherited_sockets()
        self.activated = bool(self.inherited)

    def take(self, name: str, kind: int, ip: str, port: int) -> socket.socket:
        """The inherited socket called ``name``, else a new one bound to ``ip:port``."""
        candidates = self.inherited.pop(name, [])
        if candidates:
            sock = candidates.pop(0)
            if candidates:
                self.inherited[name] = candidates
            if sock.type != kind:
                raise UnavailableError(
                    f"socket {name!r} from systemd is {KIND_NAMES.get(sock.type, sock.type)}, "
                    f"expected {KIND_NAMES[kind]}: fix ListenStream=/ListenDatagram= in the .socket unit"
                )
            bound = sock.getsockname()
            if port and bound[1] != port:
                self.log.warning(
                    "socket %r: systemd passed port %d, the config says %d; using systemd's "
                    "(change the port with `systemctl edit` on the .socket unit)", name, bound[1], port,
                )
            self.log.info("using socket %r from systemd: %s", name, _fmt(bound))
            sock.setblocking(False)
            return sock
        if self.activated:
            self.log.warning("systemd passed no socket named %r; binding %s:%d", name, ip, port)
        return bind(kind, ip, port)

    def close_unused(self) -> None:
        """Close (and name) inherited sockets nobody asked for, so they are not held by mistake."""
        for name, socks in self.inherited.items():
            for sock in socks:
                self.log.warning("closing unused socket %r from systemd (%s)", name, _fmt(sock.getsockname()))
                sock.close()
        self.inherited = {}


def bind(kind: int, ip: str, port: int) -> socket.socket:
    """A non-blocking socket bound to ``ip:port`` (IPv6 if ``ip`` has a colon)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as e:
        sock.close()
        raise UnavailableError(f"cannot bind {KIND_NAMES[kind]} {ip}:{port}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


def tune_receive_buffer(sock: socket.socket, wanted: int, log: logging.Logger) -> int:
    """Grow the kernel receive buffer to ``wanted`` bytes, never shrinking it; returns the size.

    ``SO_RCVBUFFORCE`` (needs CAP_NET_ADMIN) is tried before ``SO_RCVBUF``, which the kernel caps
    at ``net.core.rmem_max``. Linux reports twice the size asked for (bookkeeping overhead), so
    sizes are compared in the kernel's units.
    """
    current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if not wanted or current >= 2 * wanted:
        log.info("receive buffer %d bytes (asked for %d)", current, wanted)
        return current
    for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, wanted)
            break
        except OSError:
            continue
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted >= 2 * wanted:
        log.info("receive buffer %d bytes (asked for %d)", granted, wanted)
    else:
        log.warning("receive buffer %d bytes, asked for %d: raise net.core.rmem_max or set "
                    "ReceiveBuffer= in the .socket unit", granted, wanted)
    return granted


def _fmt(addr: tuple[Any, ...]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
