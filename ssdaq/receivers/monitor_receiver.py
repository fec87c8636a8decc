"""MonitorReceiver (``ssdaq-receiver monitor``): receivers' MonitorData, republished and tabled.

Each receiver pushes a ``chec.MonitorData`` once a second (``[monitor] endpoint``, by default
tcp://127.0.0.101:10002). This receiver binds the PULL end, republishes every message verbatim
on :9005 (what the dashboards read) and keeps the newest message per receiver name: ``status``
and ``ssdaqctl monitor receivers`` return that table (pid, input rate, last seen, stale).

It binds 127.0.0.101 by default, the address every receiver pushes to, so the monitoring bus is
not open to the network; a site whose receivers run on several hosts binds 0.0.0.0. A message
that does not parse is counted (``bad_message``) and not republished. At most
``max_receivers`` names are remembered; beyond that the one heard from longest ago is forgotten.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zmq

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.errors import FormatError, UnavailableError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import PublisherSettings, ReceiverConfig, zmq_publisher
from ssdaq.data.messages import MonitorData, parse

STREAM = streams.get("monitor")

@dataclass(frozen=True)
class PullSettings:
    """The PULL socket the receivers push their MonitorData to."""

    endpoint: str = setting(
        STREAM.input_endpoint(),
        help="zmq endpoint to bind; the receivers' [monitor] endpoint must reach it (tcp://0.0.0.0:PORT\n"
        "takes MonitorData from other hosts too)",
    )
    rcvhwm: int = setting(
        1000,
        help="Messages queued in zmq per sender before it is held back (a sender reports once a\n"
        "second; memory under a flood is about this times max_message_bytes per connection)",
        min=1,
    )
    max_message_bytes: int = setting(
        65536,
        help="Longest message taken (a MonitorData is under 200 bytes); zmq drops the connection\n"
        "of a sender that sends a longer one",
        min=64,
    )


@dataclass(frozen=True)
class MonitorConfig(ReceiverConfig):
    """Settings of the monitoring receiver."""

    pull: PullSettings = table(PullSettings)
    stale_after_s: float = setting(
        3.0,
        help="A receiver not heard from for this long is shown as stale (they report every second)",
        min=0.1,
    )
    max_receivers: int = setting(256, help="Receiver names remembered in the table", min=1)
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(STREAM.pub_port), help="Publishers: every MonitorData goes to each of them, verbatim"
    )


@dataclass
class Seen:
    """The newest MonitorData of one receiver and when it arrived."""

    message: MonitorData
    wall_s: float
    mono_s: float
    messages: int


class MonitorReceiver(ReceiverServer[MonitorConfig]):
    """Pulls MonitorData, republishes it, and keeps a table of the receivers it hears from.

    Seed API: ``MonitorReceiver(ip, port, publishers)`` binds ``tcp://ip:port``; without them the
    configured endpoint is bound.
    """

    config_class = MonitorConfig
    service_name = "monitor"
    counter_names = ("bad_message", "forgotten")

    def __init__(
        self,
        ip: str | None = None,
        port: int | None = None,
        publishers: list | None = None,
        name: str = "MonitorReceiver",
    ) -> None:
        super().__init__(ip or "", port or 0, publishers, name)
        self.endpoint = f"tcp://{ip}:{port}" if ip else self.config.pull.endpoint
        self.seen: dict[str, Seen] = {}
        self._pull = self._context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, self.config.pull.rcvhwm)
        self._pull.setsockopt(zmq.MAXMSGSIZE, self.config.pull.max_message_bytes)
        self._pull.setsockopt(zmq.LINGER, 0)
        try:
            self._pull.bind(self.endpoint)
        except zmq.ZMQError as e:
            raise UnavailableError(
                f"cannot bind the MonitorData endpoint {self.endpoint}: {e}"
            ) from None
        self._setup = True
        self.log.info("taking MonitorData on %s", self.endpoint)

    @classmethod
    def from_config(cls, config: ReceiverConfig) -> "MonitorReceiver":
        return cls()

    async def ct_pull(self) -> None:
        while True:
            self.on_message(await self._pull.recv())

    def on_message(self, payload: bytes) -> None:
        """Republish one MonitorData unchanged and make it its receiver's newest."""
        self.counters.values["received"] += 1
        try:
            message = parse(MonitorData, payload)
        except FormatError as e:
            self.counters.report(
                "bad_message", detail=f"{e} ({len(payload)} bytes)", peer=self.endpoint
            )
            return
        self.publish_nowait(payload)
        name = message.reciver.name
        previous = self.seen.pop(name, None)  # re-inserted last: the dict stays in arrival order
        self.seen[name] = Seen(
            message, time.time(), time.monotonic(), previous.messages + 1 if previous else 1
        )
        if len(self.seen) > self.config.max_receivers:
            del self.seen[next(iter(self.seen))]
            self.counters.add("forgotten")

    def receivers(self) -> list[dict[str, Any]]:
        """The table: one row per receiver name, sorted by name."""
        now, stale = time.monotonic(), self.config.stale_after_s
        rows = []
        for name, seen in sorted(self.seen.items()):
            r = seen.message.reciver
            age = now - seen.mono_s
            rows.append(
                {
                    "name": name,
                    "pid": r.pid,
                    "rate": round(r.data_rate, 3),
                    "receiving": r.recv_data,
                    "last_seen": datetime.fromtimestamp(seen.wall_s, UTC).isoformat(
                        timespec="milliseconds"
                    ),
                    "age_s": round(age, 3),
                    "stale": age > stale,
                    "messages": seen.messages,
                }
            )
        return rows

    def cmd_receivers(self) -> list[dict[str, Any]]:
        """The receivers heard from: name, pid, input rate, last seen, stale."""
        return self.receivers()

    def status_fields(self) -> dict[str, Any]:
        return {"receivers": self.receivers()}

    def status_line(self) -> str:
        rows = self.receivers()
        stale = sum(r["stale"] for r in rows)
        return (
            f"{len(rows)} receivers ({stale} stale), "
            f"{self.counters.rates.get('received', 0.0):.1f} "
            f"messages/s, {self.lost_summary()}"
        )
