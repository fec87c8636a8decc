"""A receiver's listening sockets: where they come from, how they are read, how they stop.

A socket is named (systemd's ``FileDescriptorName=``, default "data"); under socket activation
the inherited socket of that name is used, otherwise one is bound to the address given, or to
``[sockets.<name>]`` of the configuration. UDP sockets get the configured receive buffer; TCP
listeners are guarded (:mod:`ssdaq.core.connections`) by the limits of their table when it is a
``StreamListenSettings``, else by that class's defaults.
"""

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from ssdaq.core.connections import ConnectionGuard, Limits
from ssdaq.core.counters import Counters
from ssdaq.core.datagrams import DatagramBatch, DatagramReader
from ssdaq.core.settings import StreamListenSettings
from ssdaq.core.sockets import SocketSource, tune_receive_buffer

# Test hook for the end-to-end watchdog check: after this many seconds every datagram reader stops
# servicing its socket, as a stuck data path would, so the watchdog must withhold WATCHDOG=1.
HANG_ENV = "SSDAQ_TEST_HANG_AFTER_S"


class Inputs:
    """The listening sockets of one receiver and their readers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: logging.Logger, counters: Counters,
                 sockets_config: Any, data_address: tuple[str, int]) -> None:
        self.loop, self.log, self.counters = loop, log, counters
        self.sockets_config, self.data_address = sockets_config, data_address
        self.source = SocketSource(log)
        self.readers: list[DatagramReader] = []
        self.guards: list[ConnectionGuard] = []
        self._closers: list[Callable[[], Any]] = []
        self._stopped = False

    def address(self, name: str, ip: str | None, port: int | None) -> tuple[str, int, int]:
        """(ip, port, receive buffer bytes) to bind socket ``name`` to when not activated."""
        listen = getattr(self.sockets_config, name, None)
        default_ip, default_port = self.data_address if name == "data" else (
            (listen.ip, listen.port) if listen is not None else ("0.0.0.0", 0))
        rcvbuf = listen.receive_buffer_bytes if listen is not None else 0
        return ip or default_ip or "0.0.0.0", int(default_port if port is None else port), rcvbuf

    def udp(self, factory: Callable[[], asyncio.BaseProtocol], name: str, ip: str | None,
            port: int | None) -> tuple[Any, Any]:
        transport, protocol = self.loop.run_until_complete(
            self.loop.create_datagram_endpoint(factory, sock=self._udp_socket(name, ip, port)))
        self._closers.append(transport.close)
        return transport, protocol

    def stream(self, factory: Callable[[], asyncio.Protocol], name: str, ip: str | None,
               port: int | None, limits: Limits | None) -> tuple[Any, None]:
        bind_ip, bind_port, _ = self.address(name, ip, port)
        sock = self.source.take(name, socket.SOCK_STREAM, bind_ip, bind_port)
        if limits is None:
            listen = getattr(self.sockets_config, name, None)
            limits = listen if isinstance(listen, StreamListenSettings) else StreamListenSettings()
        guard = ConnectionGuard(self.loop, self.counters, limits)
        self.guards.append(guard)
        server = self.loop.run_until_complete(self.loop.create_server(guard.wrap(factory), sock=sock))
        self._closers.append(server.close)
        return server, None

    def datagrams(self, handler: Callable[[DatagramBatch], None], name: str, ip: str | None,
                  port: int | None, max_bytes: int, batch: int, timestamps: bool,
                  coalesce_s: float, wait_first: bool) -> DatagramReader:
        reader = DatagramReader(self._udp_socket(name, ip, port), handler, self._handler_error,
                                max_bytes=max_bytes, batch=batch, timestamps=timestamps,
                                coalesce_s=coalesce_s, wait_first=wait_first)
        self.readers.append(reader)
        return reader

    def _udp_socket(self, name: str, ip: str | None, port: int | None) -> socket.socket:
        bind_ip, bind_port, rcvbuf = self.address(name, ip, port)
        sock = self.source.take(name, socket.SOCK_DGRAM, bind_ip, bind_port)
        tune_receive_buffer(sock, rcvbuf, self.log)
        return sock

    def _handler_error(self, exc: BaseException) -> None:
        self.counters.report("handler_errors", detail=f"{type(exc).__name__}: {exc}")
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("data path error", exc_info=exc)

    def start(self, after_s: float) -> None:
        """Start the readers in ``after_s`` seconds (input waits in the kernel meanwhile), unless
        :meth:`stop_reading` came first."""
        self.loop.call_later(after_s, self._start)
        if hang := os.environ.get(HANG_ENV):
            self.loop.call_later(float(hang), self.hang)

    def _start(self) -> None:
        if not self._stopped:
            for reader in self.readers:
                reader.start(self.loop)

    def stop_reading(self) -> None:
        """Stop taking input; what is queued in the kernel stays there for the successor."""
        self._stopped = True
        for reader in self.readers:
            reader.pause()
        for close in self._closers:
            close()

    def hang(self) -> None:
        """Test hook: stop servicing the sockets as a stuck data path would (stall detection stays)."""
        self.log.warning("%s is set: the data path now hangs (test hook)", HANG_ENV)
        for reader in self.readers:
            reader.pause()

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        for guard in self.guards:
            guard.close()

    def stalled(self, limit_s: float) -> str | None:
        """Why input is stuck (data waiting unread for ``limit_s``), or None."""
        for reader in self.readers:
            if reader.stalled(limit_s):
                return f"socket {reader.sock.getsockname()} not read for {limit_s:.0f} s with data waiting"
        return None

    def update_counters(self) -> None:
        """Show the readers' counts in the receiver's counters (the readers count, once).

        Receivers whose input is not a batched reader count ``received`` themselves.
        """
        values = self.counters.values
        if self.readers:
            values["received"] = sum(r.received for r in self.readers)
        values["kernel_drops"] = sum(r.kernel_drops for r in self.readers)
        values["oversize"] = sum(r.oversize for r in self.readers)
