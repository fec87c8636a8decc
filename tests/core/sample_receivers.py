"""Small ReceiverServer subclasses the framework tests run as real processes.

Run as ``ssdaq-receiver tests.core.sample_receivers:Class`` (with the source tree on PYTHONPATH),
the way a site runs its own receiver.
"""

import asyncio

from ssdaq.core.datagrams import DatagramBatch
from ssdaq.core.errors import CommandError
from ssdaq.core.receiver_server import ReceiverServer


class LineProtocol(asyncio.Protocol):
    """Publishes every received line."""

    def __init__(self, server: "StreamLines") -> None:
        self.server = server
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.server.counters.add("received")
            self.server.publish_nowait(line)


class StreamLines(ReceiverServer):
    """A TCP receiver: one published message per line."""

    service_name = "lines"

    def __init__(self, ip: str, port: int, publishers: list | None) -> None:
        super().__init__(ip, port, publishers, "StreamLines")
        self.setup_stream(lambda: LineProtocol(self))


class Worker(ReceiverServer):
    """A UDP receiver whose ct_ task dies when told to, and with a slow command."""

    service_name = "worker"

    def __init__(self, ip: str, port: int, publishers: list | None) -> None:
        super().__init__(ip, port, publishers, "Worker")
        self.orders: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)
        self.setup_datagrams(self._on_batch)

    def _on_batch(self, batch: DatagramBatch) -> None:
        for i in range(batch.count):
            payload = bytes(batch.payload(i))
            if payload == b"die":
                self.orders.put_nowait(payload)
            else:
                self.publish_nowait(payload)

    async def ct_orders(self) -> None:
        while True:
            order = await self.orders.get()
            raise RuntimeError(f"told to {order.decode()}")

    async def cmd_sleep(self, seconds: str) -> str:
        """Sleep, then answer (a slow command)."""
        try:
            delay = float(seconds)
        except ValueError:
            raise CommandError(f"sleep: expected seconds, got {seconds!r}") from None
        await asyncio.sleep(delay)
        return f"slept {delay:g} s"
