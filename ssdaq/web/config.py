"""``/etc/ssdaq/web.toml``: the settings of ``ssdaq-web``, declared once (see ssdaq.core.config)."""

from dataclasses import dataclass

from ssdaq.core.config import setting, table
from ssdaq.core.settings import LogSettings

#: ssdaq's HTTP port: beside ssdaq's own PUB ports (9001-9006), outside Prometheus's exporter
#: range 9100-9999, whose every port is allocated (docs/operations.md says more)
DEFAULT_PORT = 9010


@dataclass(frozen=True)
class HttpSocket:
    """The HTTP listening socket. Under systemd ssdaq-web.socket's socket is used instead (it wins)."""

    ip: str = setting("", help="Address to bind when started by hand; empty: all addresses, IPv4 and IPv6")
    port: int = setting(DEFAULT_PORT, help="TCP port to bind when started by hand", min=1, max=65535)


@dataclass(frozen=True)
class WebSockets:
    """Listening sockets (each named as the FileDescriptorName= of ssdaq-web.socket)."""

    http: HttpSocket = table(HttpSocket)


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
        "auto", help="Where unit states come from: auto (systemd when it runs this host), systemd,\n"
        "or none (receivers started by hand, as in the demo: their unit files mean nothing)",
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
class WebConfig:
    """Configuration of ``ssdaq-web``."""

    log: LogSettings = table(LogSettings)
    sockets: WebSockets = table(WebSockets)
    poll: PollSettings = table(PollSettings)
    expect: ExpectSettings = table(ExpectSettings)
