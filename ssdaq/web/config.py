"""``/etc/ssdaq/web.toml``: the settings of ``ssdaq-web``, declared once (see ssdaq.core.config)."""

from dataclasses import dataclass

from ssdaq import streams
from ssdaq.core.config import setting, table
from ssdaq.core.settings import ConnectionLimits, LogSettings

#: ssdaq's HTTP port: beside ssdaq's own PUB ports (9001-9006), outside Prometheus's exporter
#: range 9100-9999, whose every port is allocated (docs/operations.md says more)
DEFAULT_PORT = 9010


@dataclass(frozen=True)
class HttpAddress:
    """Where the HTTP socket listens when started by hand."""

    ip: str = setting("", help="Address to bind when started by hand; empty: all addresses, IPv4 and IPv6")
    port: int = setting(DEFAULT_PORT, help="TCP port to bind when started by hand", min=1, max=65535)


@dataclass(frozen=True)
class HttpSocket(ConnectionLimits, HttpAddress):
    """The HTTP listening socket. Under systemd ssdaq-web.socket's socket is used instead (it wins)."""


@dataclass(frozen=True)
class WebSockets:
    """Listening sockets (each named as the FileDescriptorName= of ssdaq-web.socket)."""

    # more than a receiver's: every browser behind one reverse proxy comes from its address
    http: HttpSocket = table(HttpSocket, max_connections=256, max_connections_per_peer=64)


@dataclass(frozen=True)
class PollSettings:
    """The one shared poll of every receiver's and writer's ``status``, read by every request."""

    interval_s: float = setting(
        1.0, help="Seconds between two polls: however many scrapes and pages there are, each\n"
        "receiver is asked at most this often", min=1.0, max=60.0)
    timeout_s: float = setting(
        0.5, help="Seconds a receiver has to answer; one that does not counts as down for that\n"
        "poll (ssdaq_up 0) and its counters are not exported", min=0.05, max=1.0)
    units: str = setting(
        "auto", help="Where unit states come from: auto (systemd, when it runs this host and ssdaq's\n"
        "units are installed), systemd, or none (receivers started by hand, as in the demo:\n"
        "their unit files mean nothing)",
        choices=("auto", "systemd", "none"))
    stale_after_s: float = setting(
        5.0, help="A snapshot older than this (the poll itself is stuck) is not exported as\n"
        "fresh: every receiver shows as down", min=2.0, max=300.0)


@dataclass(frozen=True)
class ExpectSettings:
    """What the site expects, for the alert rules (prometheus/ssdaq-alerts.yml)."""

    data_from: tuple[str, ...] = setting(
        (), help="Receivers that must receive data at all times (e.g. [\"readout\", \"trigger\"] on\n"
        "a camera that runs around the clock): exported as ssdaq_data_expected 1, so the\n"
        "SsdaqNoData alert fires when one gets nothing for 5 minutes")


@dataclass(frozen=True)
class PageSettings:
    """The live page: its one readout subscription and the limits on its browsers."""

    readout_endpoint: str = setting(
        streams.endpoint("readout"), help="The readout receiver's PUB endpoint (the one\n"
        "subscription that every browser shares)")
    burst_s: float = setting(
        0.005, help="Readouts published within this many seconds of each other are one burst\n"
        "(a camera packet of ten records completes ten readouts at once): only the burst's\n"
        "newest is shown", min=0.0, max=0.1)
    max_clients: int = setting(
        32, help="Live connections (open pages and other clients of /api/live) at once; more\n"
        "are refused with 503 and counted", min=1, max=10_000)
    min_interval_s: float = setting(
        0.2, help="Seconds between two camera frames sent to one browser (0.2: at most 5/s;\n"
        "readouts in between are skipped, the newest always wins)", min=0.05, max=10.0)
    max_hold_s: float = setting(
        0.05, help="A readout that arrives within a browser's interval is sent at its end only\n"
        "if it is then at most this old; an older one waits for its successor (keeps the\n"
        "page's latency low at the camera's steady rate)", min=0.0, max=1.0)
    settle_s: float = setting(
        0.5, help="A skipped readout is sent anyway when nothing newer came for this long, so\n"
        "the page always ends on the newest readout", min=0.05, max=10.0)
    ping_interval_s: float = setting(
        10.0, help="Seconds between WebSocket pings; a browser that does not answer within\n"
        "half of it is disconnected (frees its slot from half-open connections)",
        min=1.0, max=300.0)
    send_timeout_s: float = setting(
        10.0, help="A browser that does not take a frame within this many seconds is\n"
        "disconnected", min=0.5, max=300.0)
    history_s: float = setting(
        600.0, help="Seconds of trigger, readout and timestamp rates kept for the page's plot",
        min=60.0, max=86_400.0)


@dataclass(frozen=True)
class WebConfig:
    """Configuration of ``ssdaq-web``."""

    log: LogSettings = table(LogSettings)
    sockets: WebSockets = table(WebSockets)
    poll: PollSettings = table(PollSettings)
    expect: ExpectSettings = table(ExpectSettings)
    page: PageSettings = table(PageSettings)
