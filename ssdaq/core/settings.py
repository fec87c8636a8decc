"""The settings every receiver shares: logging, command socket, monitoring, sockets, publishers.

A receiver's own configuration class derives from :class:`ReceiverConfig`, adds its tables and
overrides the defaults that differ (its port, its publishers).
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from ssdaq import streams
from ssdaq.core.config import setting, table, tables


@dataclass(frozen=True)
class LogSettings:
    """Logging (journald under systemd, stderr otherwise)."""

    level: str = setting(
        "info", help="Lowest level written to the log", choices=("debug", "info", "warning", "error")
    )
    rate_limit_interval_s: float = setting(
        10.0,
        help="Repeated warnings about bad input are logged at most once per interval,\n"
        "with the number suppressed in between",
        min=0.1,
    )


@dataclass(frozen=True)
class ControlSettings:
    """Command socket used by ssdaqctl."""

    socket: str = setting(
        "",
        help="Path of the zmq IPC command socket; empty: <name>.ctl in $RUNTIME_DIRECTORY, else in\n"
        "/run/ssdaq if it exists, else in $XDG_RUNTIME_DIR/ssdaq (ssdaqctl finds it by the same rule)",
    )


@dataclass(frozen=True)
class MonitorSettings:
    """MonitorData sent to the MonitorReceiver (chec.MonitorData, as the old dashboards read)."""

    enabled: bool = setting(True, help="Send MonitorData at all")
    endpoint: str = setting(
        streams.get("monitor").input_endpoint(),
        help="zmq PUSH endpoint of the MonitorReceiver (connected to)"
    )
    interval_s: float = setting(1.0, help="Seconds between two MonitorData messages", min=0.1)


@dataclass(frozen=True)
class ListenSettings:
    """A listening socket. Under systemd the .socket unit's socket is used instead (it wins)."""

    ip: str = setting("0.0.0.0", help="Address to bind when started by hand")
    port: int = setting(0, help="Port to bind when started by hand", min=0, max=65535)
    receive_buffer_bytes: int = setting(
        16 * 1024 * 1024,
        help="Kernel receive buffer asked for (SO_RCVBUFFORCE, then SO_RCVBUF); a larger buffer\n"
        "inherited from systemd's ReceiveBuffer= is kept",
        min=0,
    )


@dataclass(frozen=True)
class ConnectionLimits:
    """Limits on a TCP listener's connections (see ssdaq.core.connections)."""

    idle_timeout_s: float = setting(
        30.0,
        help="A connection that received no bytes for this long is closed (counted as idle_closed);\n"
        "where the receiver sees records (or a request is being answered), only one stuck\n"
        "inside a record (or a request). 0: never",
        min=0.0,
    )
    max_connections: int = setting(
        64,
        help="Connections open at once; a newcomer beyond it replaces the one that received bytes\n"
        "least recently (counted as replaced_connections)",
        min=1,
    )
    max_connections_per_peer: int = setting(
        16, help="Connections open at once from one address; more are refused (counted)", min=1
    )


@dataclass(frozen=True)
class StreamListenSettings(ConnectionLimits, ListenSettings):
    """A listening TCP socket and its connection limits. Under systemd the .socket unit's socket is used."""


@dataclass(frozen=True)
class PublisherSettings:
    """A publisher: where what the receiver produces goes."""

    kind: str = setting("zmq", help="zmq: a PUB socket; raw: append to a file", choices=("zmq", "raw"))
    ip: str = setting(streams.PUB_IP, help="zmq: address to bind (local, outbound) or connect (remote)")
    port: int = setting(9000, help="zmq: TCP port", min=1, max=65535)
    mode: str = setting(
        "local",
        help="zmq: local binds on a loopback address; outbound binds on an outward interface so\n"
        "remote hosts can subscribe; remote connects to a remote SUB/XSUB",
        choices=("local", "outbound", "remote"),
    )
    sndhwm: int = setting(
        10000,
        help="zmq: messages queued per subscriber; beyond it zmq drops for that subscriber,\n"
        "which sees the gap in the stream's sequence numbers",
        min=1,
    )
    linger_s: float = setting(1.0, help="zmq: at stop, how long unsent messages may delay exit", min=0.0)
    path: str = setting("", help="raw: file to append every published message to")


def coalesce_setting(default_us: int) -> Any:
    """The ``coalesce_us`` setting of a receiver that reads datagrams in batches
    (:class:`~ssdaq.core.datagrams.DatagramReader`'s ``coalesce_s``)."""
    return setting(
        default_us, help="A wake-up that finds a burst of datagrams under way waits this long for the\n"
        "rest and then reads them all, so that one pass takes a whole burst or more (its cost is\n"
        "mostly per pass and per wake-up): the latency it may add to a datagram, in µs;\n"
        "0: handle what each wake-up finds",
        min=0, max=10_000)


def zmq_publisher(port: int, ip: str = streams.PUB_IP, mode: str = "local",
                  sndhwm: int = 10000) -> PublisherSettings:
    """Default for a receiver's ``[[publishers]]``: a zmq PUB on the old SSDAQ port."""
    return PublisherSettings(kind="zmq", ip=ip, port=port, mode=mode, sndhwm=sndhwm)


@dataclass(frozen=True)
class ReceiverConfig:
    """Settings every receiver has."""

    start_hold_s: float = setting(
        0.5,
        help="At start, seconds to leave input waiting in the kernel buffer before reading it, so\n"
        "that subscribers of the previous process have reconnected (zmq retries every 0.1 s)\n"
        "before anything is published: a restart then loses nothing",
        min=0.0, max=1.5,
    )
    log: LogSettings = table(LogSettings)
    control: ControlSettings = table(ControlSettings)
    monitor: MonitorSettings = table(MonitorSettings)
    publishers: tuple[PublisherSettings, ...] = tables(
        help="Publishers: every published message goes to each of them"
    )
    #: the top-level settings and tables a reload takes in but that act only at the next start
    #: (sockets are bound, publishers connected, readers made once); a subclass adds its own.
    #: The reload reply and STATUS= name those that changed, the config file's comments mark them
    restart_only: ClassVar[tuple[str, ...]] = ("publishers", "sockets", "control")


@dataclass(frozen=True)
class DataSocket:
    """The receiver's listening socket (FileDescriptorName=data in its .socket unit)."""

    data: ListenSettings = table(ListenSettings)


@dataclass(frozen=True)
class StreamSocket:
    """The receiver's listening TCP socket (FileDescriptorName=data in its .socket unit)."""

    data: StreamListenSettings = table(StreamListenSettings)


@dataclass(frozen=True)
class GenericReceiverConfig(ReceiverConfig):
    """Settings of a site's own ReceiverServer subclass run by ``ssdaq-receiver``."""

    receiver_class: str = setting(
        "", help="The receiver to run, as package.module:Class (a ReceiverServer subclass)"
    )
    sockets: DataSocket = table(DataSocket)
