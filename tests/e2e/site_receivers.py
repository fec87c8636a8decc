"""A site's own receiver, the seed document's UDP example as written, for the template units.

The end-to-end test installs this module into the container's /usr/local Python path and runs it
as ``ssdaq-receiver@site-packets`` (config /etc/ssdaq/site-packets.toml names the class).
"""

import asyncio

from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.receivers.mon_sender import ReceiverMonSender


class PacketProtocol(asyncio.Protocol):
    def __init__(self, log):
        self.buffer = asyncio.Queue()
        self.log = log.getChild("PacketProtocol")

    def connection_made(self, transport):
        self.log.info("Connected to port")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.buffer.put_nowait((data, addr))


class PacketReceiver(ReceiverServer):
    def __init__(self, ip: str, port: int, publishers: list):
        super().__init__(ip, port, publishers, "PacketReceiver")
        self.trans, self.tpp = self.setup_udp(lambda: PacketProtocol(self.log))
        self.running = True
        self.mon = ReceiverMonSender("PacketReceiver", self.loop, self._context)

    async def ct_relay(self):
        while self.running:
            packet = await self.tpp.buffer.get()
            self.mon.register_data_packet()
            await self.publish(packet[0])
