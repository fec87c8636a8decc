"""``ssdaq-dash``: a live terminal table of every receiver and writer, refreshed every second.

Each refresh asks every command socket for ``status`` (health, rates, counters, the status line)
and, if systemd runs the host, systemd for the unit states (``ssdaq.daemons``); between
refreshes it reads the MonitorReceiver's stream (chec.MonitorData, as the old ``chec-daq-dash``
did), which also shows receivers without a local command socket, such as those on other hosts.
"Last data" is the newest of: what the receiver reports, the last time its input counter grew,
the last MonitorData saying data arrived. Rendering uses rich (the "tools" extra).
"""

import sys
import time
from dataclasses import dataclass
from typing import Any

from ssdaq import daemons, streams
from ssdaq.core.cli import Parser
from ssdaq.core.errors import EX_UNAVAILABLE
from ssdaq.daemons import ReceiverState
from ssdaq.subscribers import MonitorSubscriber

STALE_S = 3.0  # MonitorData comes every second; this late, its sender is probably gone
WIDE = 150  # terminal columns from which the status line fits in the table
LEFT = ("receiver", "state", "health", "status")


@dataclass
class Heard:
    """The latest MonitorData of one sender."""

    pid: int
    rate: float
    at: float  # time.monotonic() of arrival
    data_at: float | None  # the last arrival that said data had come in


class Dashboard:
    """Collects the state shown in a frame; :meth:`frame` renders it as a rich Table."""

    def __init__(self, monitor_endpoint: str | None, names: list[str] | None = None,
                 timeout_s: float = 0.5, use_systemd: bool | None = None) -> None:
        self.names, self.timeout_s, self.use_systemd = names, timeout_s, use_systemd
        self.monitor = (MonitorSubscriber(endpoint=monitor_endpoint, timeout_s=0)
                        if monitor_endpoint else None)
        self.heard: dict[str, Heard] = {}
        self._inputs: dict[str, tuple[int, float | None]] = {}  # name -> (received, when it grew)
        self.states: list[ReceiverState] = []

    def listen(self, seconds: float) -> None:
        """Read MonitorData for ``seconds`` (or just what is queued, for 0)."""
        if self.monitor is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while True:
            try:
                payloads = self.monitor.recv_raw(max(0.0, deadline - time.monotonic()), 1000)
            except TimeoutError:
                return
            now = time.monotonic()
            for m in self.monitor.decode_many(payloads):
                r = m.reciver
                before = self.heard.get(r.name)
                data_at = now if r.recv_data else (before.data_at if before else None)
                self.heard[r.name] = Heard(r.pid, r.data_rate, now, data_at)

    def refresh(self) -> None:
        """Ask every receiver for its status."""
        self.states = daemons.gather(self.names, self.timeout_s, self.use_systemd)
        now = time.monotonic()
        for s in self.states:
            received = (s.reply or {}).get("counters", {}).get("received")
            if received is None:
                continue
            before = self._inputs.get(s.name)
            since = before[1] if before else None  # unknown until seen to grow
            if before is not None and received > before[0]:
                since = now
            self._inputs[s.name] = (received, since)

    def monitor_of(self, state: ReceiverState) -> tuple[str, Heard] | None:
        """The MonitorData sender that is this receiver (same pid, else same class name)."""
        reply = state.reply or {}
        for name, heard in self.heard.items():
            if reply.get("pid") == heard.pid or reply.get("class") == name:
                return name, heard
        return None

    def last_data_s_ago(self, state: ReceiverState, heard: Heard | None) -> float | None:
        now = time.monotonic()
        candidates = [state.last_data_s_ago]
        if (grown := self._inputs.get(state.name)) and grown[1] is not None:
            candidates.append(now - grown[1])
        if heard is not None and heard.data_at is not None:
            candidates.append(now - heard.data_at)
        known = [c for c in candidates if c is not None]
        return min(known) if known else None

    def frame(self, width: int = 160) -> Any:
        """The table; narrower than ``WIDE`` columns, status lines go below it instead."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        wide = width >= WIDE
        systemd = self.use_systemd is not False and daemons.managed_by_systemd()
        table = Table(title=f"ssdaq  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
                      caption=None if systemd else
                      "systemd does not manage ssdaq here: state from command sockets and MonitorData",
                      expand=wide)
        columns = ["receiver", "state", "health", "in/s", "out/s", "received", "published",
                   "last data", "monitor", "status"]
        shown = [c for c in columns if wide or c not in ("state", "received", "published", "status")
                 or c == "state" and systemd]
        for column in shown:
            table.add_column(column, justify="left" if column in LEFT else "right",
                             overflow="fold", ratio=3 if column == "status" else None)
        lines: list[Text] = []
        for cells, status in self._rows():
            table.add_row(*(cells[c] for c in shown), style=None if cells.pop("_running") else "dim")
            if not wide and status:
                lines.append(Text.assemble((f"{cells['receiver']}: ", "bold"), status))
        return table if wide else Group(table, *lines)

    def _rows(self) -> list[tuple[dict[str, Any], str]]:
        """Each row's cells by column name (plus ``_running``), and its status line."""
        from rich.text import Text

        out, matched = [], set()
        for s in self.states:
            found = self.monitor_of(s)
            heard = found[1] if found else None
            if found:
                matched.add(found[0])
            counters = (s.reply or {}).get("counters", {})
            style = "green" if s.healthy else ("red" if s.running or s.health == "failed" else "dim")
            out.append(({
                "receiver": s.name, "state": s.unit_state or ("running" if s.reply else "-"),
                "health": Text(s.health, style=style), "in/s": _num(s.rate("received")),
                "out/s": _num(s.rate("published")), "received": _int(counters.get("received")),
                "published": _int(counters.get("published")),
                "last data": _ago(self.last_data_s_ago(s, heard)),
                "monitor": self._heard_text(heard), "status": s.status_line, "_running": s.running,
            }, s.status_line))
        for name, heard in sorted(self.heard.items()):
            if name not in matched:  # a sender with no local command socket (another host?)
                data_ago = None if heard.data_at is None else time.monotonic() - heard.data_at
                out.append(({
                    "receiver": name, "state": "-", "health": Text("monitor only", style="yellow"),
                    "in/s": _num(heard.rate), "out/s": "-", "received": "-", "published": "-",
                    "last data": _ago(data_ago), "monitor": self._heard_text(heard),
                    "status": f"pid {heard.pid}", "_running": True,
                }, f"pid {heard.pid}"))
        return out

    @staticmethod
    def _heard_text(heard: Heard | None) -> Any:
        from rich.text import Text

        if heard is None:
            return "-"
        ago = time.monotonic() - heard.at
        return Text(f"{heard.rate:.1f}/s, {ago:.0f} s ago", style="yellow" if ago > STALE_S else "")

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s ago"


def run(dash: Dashboard, duration_s: float | None, interval_s: float = 1.0) -> None:
    """Live view until ``duration_s`` passed (None: until Ctrl-C)."""
    from rich.console import Console
    from rich.live import Live

    end = None if duration_s is None else time.monotonic() + duration_s
    console = Console()
    dash.refresh()
    with Live(dash.frame(console.width), console=console, refresh_per_second=4) as live:
        while end is None or time.monotonic() < end:
            dash.listen(interval_s if end is None else max(0.0, min(interval_s, end - time.monotonic())))
            dash.refresh()
            live.update(dash.frame(console.width))


def parser() -> Parser:
    p = Parser(
        prog="ssdaq-dash",
        description="Live terminal dashboard of the ssdaq receivers and writers: state, health, "
        "rates, counters, last data and MonitorData, refreshed every second.",
    )
    p.add_argument("--monitor", default=streams.endpoint("monitor"),
                   help="MonitorReceiver's PUB endpoint (default %(default)s); '' for none")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--once", action="store_true",
                   help="listen for one MonitorData interval, print one frame and exit")
    p.add_argument("--wait", type=float, default=1.5,
                   help="--once: seconds to collect MonitorData first (default 1.5)")
    p.add_argument("names", nargs="*", help="receivers to show (default: all known)")
    p.epilog = f"MonitorData normally comes from {streams.endpoint('monitor')}."
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import rich  # noqa: F401
    except ImportError:
        print("ssdaq-dash: needs rich (Debian: apt install python3-rich; pip: ssdaq[tools])",
              file=sys.stderr)
        return EX_UNAVAILABLE
    from rich.console import Console

    dash = Dashboard(args.monitor or None, args.names or None)
    try:
        if args.once:
            dash.listen(args.wait)
            dash.refresh()
            console = Console()
            console.print(dash.frame(console.width))
        else:
            run(dash, args.duration, args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        dash.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
