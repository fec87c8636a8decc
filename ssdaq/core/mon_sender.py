"""ReceiverMonSender: pushes a chec.MonitorData message once per interval to the MonitorReceiver.

:class:`Monitoring` is the receiver's side: which sender it has, and its replacement on reload.

The message is what old dashboards read: the receiver's name, pid, whether data arrived since
the previous message, and the input rate (datagrams or messages per second). Sending never
blocks and never queues for an absent MonitorReceiver (``ZMQ_IMMEDIATE``): a message that cannot
go out is dropped and counted in :attr:`dropped`, so a missing MonitorReceiver costs a counter.
"""

import asyncio
import os
import time
from collections.abc import Callable, Iterable

import zmq
import zmq.asyncio

from ssdaq import streams
from ssdaq.core.settings import MonitorSettings
from ssdaq.data.messages import monitor_data

#: where the MonitorReceiver pulls from (the seed examples construct the sender without one)
DEFAULT_ENDPOINT = streams.get("monitor").input_endpoint()


class ReceiverMonSender:
    """Counts input packets and reports their rate; seed API: ``register_data_packet()``."""

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        context: zmq.asyncio.Context,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        interval_s: float = 1.0,
        input_count: Callable[[], int] | None = None,
    ) -> None:
        self.name, self.endpoint, self.interval_s = name, endpoint, interval_s
        self.sent = self.dropped = 0
        self._own = 0
        self._input_count = input_count
        # a plain (non-asyncio) socket on the same context: a NOBLOCK send then fails at once
        self._sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.SNDHWM, 10)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._task = loop.create_task(self._run(), name=f"monitor:{name}")

    def register_data_packet(self) -> None:
        """Count one input packet (the seed receivers call this per packet)."""
        self._own += 1

    def total(self) -> int:
        return self._own + (self._input_count() if self._input_count else 0)

    async def _run(self) -> None:
        last_total, last_time = self.total(), time.monotonic()
        pid = os.getpid()
        while True:
            await asyncio.sleep(self.interval_s)
            total, now = self.total(), time.monotonic()
            rate = (total - last_total) / max(now - last_time, 1e-9)
            msg = monitor_data(self.name, pid, total > last_total, rate, time.time_ns())
            last_total, last_time = total, now
            try:
                self._sock.send(msg.SerializeToString(), zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1

    def close(self) -> None:
        self._task.cancel()
        self._sock.close(linger=0)

    def stats(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "sent": self.sent, "dropped": self.dropped}



class Monitoring:
    """A receiver's MonitorData: the sender a seed receiver made itself, else one from ``[monitor]``."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, context: zmq.asyncio.Context,
                 input_count: Callable[[], int]) -> None:
        self.name, self.loop, self.context, self.input_count = name, loop, context, input_count
        self.sender: ReceiverMonSender | None = None
        self.owned = False

    def start(self, receiver_attributes: Iterable[object], settings: MonitorSettings) -> None:
        """Adopt the receiver's own sender if it has one; otherwise make the configured one."""
        self.sender = next((v for v in receiver_attributes if isinstance(v, ReceiverMonSender)), None)
        if self.sender is None:
            self.owned = True
            self.sender = self._make(settings)

    def reconfigure(self, old: MonitorSettings, new: MonitorSettings) -> None:
        """Replace the sender made from ``old`` (a receiver's own sender is left alone)."""
        if new != old and self.owned:
            self.close()
            self.sender = self._make(new)

    def _make(self, settings: MonitorSettings) -> ReceiverMonSender | None:
        if not settings.enabled:
            return None
        return ReceiverMonSender(self.name, self.loop, self.context, endpoint=settings.endpoint,
                                 interval_s=settings.interval_s, input_count=self.input_count)

    def stats(self) -> dict[str, object] | None:
        return self.sender.stats() if self.sender else None

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
