"""ReceiverMonSender: pushes a chec.MonitorData message once per interval to the MonitorReceiver.

The message is what old dashboards read: the receiver's name, pid, whether data arrived since
the previous message, and the input rate (datagrams or messages per second). Sending never
blocks and never queues for an absent MonitorReceiver (``ZMQ_IMMEDIATE``): a message that cannot
go out is dropped and counted in :attr:`dropped`, so a missing MonitorReceiver costs a counter.
"""

import asyncio
import os
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from ssdaq import streams
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
        self._sock = zmq.Context.shadow(context.underlying).socket(zmq.PUSH)
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
