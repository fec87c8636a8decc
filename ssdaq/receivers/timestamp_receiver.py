"""TimestampReceiver (``ssdaq-receiver timestamp``): timing-board triggers, one message each.

It subscribes to the timing board's zmq PUB (UCTS/CDTS, default tcp://192.168.101.102:6666),
parses each ``CTA.ACTL.CDTS.TriggerBunch`` and publishes every ``TriggerMessage`` it holds,
serialized on its own (on :9003), as the old receiver did. Unlike the old one, a message that
does not parse is counted (``bad_message``) and logged, rate-limited, and the task goes on.

zmq reconnects by itself when the board goes away or restarts (every ``reconnect_ivl_s``,
backing off to ``reconnect_ivl_max_s``); TCP keepalive notices a board that vanished without
closing the connection. A socket monitor tracks the connection, so ``status`` and ``STATUS=``
show whether the board is connected, since when, and how old the last message is. A gap in the
bunch counter is counted (``missed_bunches``): bunches the board sent that never arrived.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.errors import ConfigError, FormatError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import PublisherSettings, ReceiverConfig, zmq_publisher
from ssdaq.data.messages import TriggerBunch, parse

STREAM = streams.get("timestamp")
#: the timing board's address on the camera network
BOARD_IP = "192.168.101.102"
_FAILURES = {
    zmq.EVENT_DISCONNECTED: "the connection closed before the zmq handshake",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "zmq handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "zmq handshake failed: protocol error",
}
_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


@dataclass(frozen=True)
class TimingBoardSettings:
    """The timing board's zmq PUB, which the receiver connects to."""

    endpoint: str = setting(f"tcp://{BOARD_IP}:{STREAM.input_port}", help="zmq endpoint of the board's PUB")
    reconnect_ivl_s: float = setting(
        0.1, help="First reconnection attempt after the connection is lost", min=0.01
    )
    reconnect_ivl_max_s: float = setting(
        5.0, help="Reconnection attempts back off (doubling) up to this interval", min=0.01
    )
    keepalive_idle_s: int = setting(
        10,
        help="TCP keepalive: probe a silent connection after this long; a board that vanished\n"
        "without closing it is noticed about 3 probes (5 s apart) later",
        min=1,
    )
    rcvhwm: int = setting(
        100000, help="Bunches queued in zmq before the board's PUB drops them", min=1
    )
    max_message_bytes: int = setting(
        1 << 20,
        help="Longest bunch taken; on a longer one zmq drops the connection and reconnects (the\n"
        "bunches lost meanwhile are counted as missed_bunches)",
        min=1024,
    )


@dataclass(frozen=True)
class TimestampConfig(ReceiverConfig):
    """Settings of the timestamp receiver."""

    timing_board: TimingBoardSettings = table(TimingBoardSettings)
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(STREAM.pub_port),
        help="Publishers: every TriggerMessage goes to each of them, serialized",
    )


class TimestampReceiver(ReceiverServer[TimestampConfig]):
    """Subscribes to the timing board and republishes each trigger of each bunch on its own.

    Seed API: ``TimestampReceiver(ip, port, publishers)`` with the board's address; without them
    the configured endpoint is used.
    """

    config_class = TimestampConfig
    service_name = "timestamp"
    counter_names = ("triggers", "bad_message", "missed_bunches", "connects", "disconnects",
                     "connect_failures")

    def __init__(
        self,
        ip: str | None = None,
        port: int | None = None,
        publishers: list | None = None,
        name: str = "TimestampReceiver",
    ) -> None:
        super().__init__(ip or "", port or 0, publishers, name)
        board = self.config.timing_board
        self.endpoint = f"tcp://{ip}:{port}" if ip else board.endpoint
        self._sub = self._context.socket(zmq.SUB)
        for option, value in (
            (zmq.SUBSCRIBE, b""),
            (zmq.RCVHWM, board.rcvhwm),
            (zmq.MAXMSGSIZE, board.max_message_bytes),
            (zmq.RECONNECT_IVL, round(board.reconnect_ivl_s * 1000)),
            (zmq.RECONNECT_IVL_MAX, round(board.reconnect_ivl_max_s * 1000)),
            (zmq.TCP_KEEPALIVE, 1),
            (zmq.TCP_KEEPALIVE_IDLE, board.keepalive_idle_s),
            (zmq.TCP_KEEPALIVE_INTVL, 5),
            (zmq.TCP_KEEPALIVE_CNT, 3),
            (zmq.LINGER, 0),
        ):
            self._sub.setsockopt(option, value)
        self._monitor = self._sub.get_monitor_socket(_EVENTS)
        try:
            self._sub.connect(self.endpoint)
        except zmq.ZMQError as e:
            where = self.config_file or "<defaults>"
            raise ConfigError(where, "timing_board.endpoint", f"{self.endpoint!r}: {e}") from None
        self._setup = True
        self.connected = False
        self._since = time.monotonic()
        self._last_message: float | None = None
        self._last_bunch: int | None = None
        self.log.info("subscribing to the timing board at %s", self.endpoint)

    @classmethod
    def from_config(cls, config: ReceiverConfig) -> "TimestampReceiver":
        return cls()

    async def ct_subscribe(self) -> None:
        # zmq queues the bunches meanwhile: subscribers of a previous process reconnect first
        await asyncio.sleep(self.config.start_hold_s)
        while True:
            self.on_message(await self._sub.recv())

    def on_message(self, payload: bytes) -> None:
        """Publish each trigger of one bunch; count what does not parse."""
        self.counters.values["received"] += 1
        self._last_message = time.monotonic()
        try:
            bunch = parse(TriggerBunch, payload)
        except FormatError as e:
            self.counters.report(
                "bad_message", detail=f"{e} ({len(payload)} bytes)", peer=self.endpoint
            )
            return
        self._check_counter(bunch)
        for message in bunch.triggers:
            self.publish_nowait(message.SerializeToString())
        self.counters.values["triggers"] += len(bunch.triggers)

    def _check_counter(self, bunch: TriggerBunch) -> None:
        if not bunch.HasField("bunch_counter"):
            return
        k, last = bunch.bunch_counter, self._last_bunch
        self._last_bunch = k
        if last is None:
            return
        if k > last + 1:
            self.counters.report(
                "missed_bunches",
                k - last - 1,
                detail=f"bunch counter {last} -> {k}",
                peer=self.endpoint,
            )
        elif k <= last:
            self.log.info(
                "bunch counter went back from %d to %d: the timing board restarted", last, k
            )

    async def ct_connection(self) -> None:
        """Follow the socket monitor: connection state for ``status``, a log line per change.

        Connected means the zmq handshake succeeded: a TCP peer that is not the board's PUB
        (a proxy, another service on the port) is a failed attempt, counted and rate-limited.
        """
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected, self._since = True, time.monotonic()
                self.counters.add("connects")
                self.log.info("connected to the timing board at %s", self.endpoint)
            elif self.connected:  # disconnected after a handshake
                self.connected, self._since = False, time.monotonic()
                self.counters.add("disconnects")
                self.log.warning(
                    "lost the timing board at %s; reconnecting",
                    self.endpoint,
                    extra={"SSDAQ_PEER": self.endpoint},
                )
            else:
                self.counters.report(
                    "connect_failures", detail=_FAILURES.get(zmq.Event(event), str(event)), peer=self.endpoint
                )

    def status_fields(self) -> dict[str, Any]:
        now = time.monotonic()
        age = None if self._last_message is None else round(now - self._last_message, 3)
        return {
            "timing_board": {
                "endpoint": self.endpoint,
                "connected": self.connected,
                "state_for_s": round(now - self._since, 3),
                "last_message_age_s": age,
                "last_bunch_counter": self._last_bunch,
            }
        }

    def status_line(self) -> str:
        state = "connected to" if self.connected else "waiting for"
        rates = self.counters.rates
        return (
            f"{state} {self.endpoint} ({time.monotonic() - self._since:.0f} s): "
            f"{rates.get('received', 0.0):.1f} bunches/s, "
            f"{rates.get('triggers', 0.0):.1f} triggers/s, "
            f"{self.lost_summary()}"
        )
