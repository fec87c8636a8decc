"""The two examples of the user's API description run as written there.

Only two things differ from the document: the import path ``ssdaq.recievers`` of the second
example is the document's typo for ``ssdaq.receivers``, and each example gets a ``__main__`` that
builds it with its own ports, as a user's script would.
"""

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import zmq

from tests.conftest import child_env, free_port, stop

UDP_EXAMPLE = '''
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
        self.trans, self.tpp = self.setup_udp(
            lambda: PacketProtocol(self.log)
        )
        self.running = True
        # To send basic monitoring data a ReceiverMonSender instance is needed
        self.mon = ReceiverMonSender("PacketReceiver", self.loop, self._context)
    # This method will be automatically added to as a task to the
    # asyncio eventloop
    async def ct_relay(self):
        while self.running:
            packet = await self.tpp.buffer.get()
            # Need to register each time we get a packet
            # The ReceiverMonSender automatically calculates the
            # rate and pushes the monitoring data to a monitor receiver
            self.mon.register_data_packet()
            await self.publish(packet[0])
'''

ZMQ_EXAMPLE = '''
import asyncio
import zmq
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.receivers.mon_sender import ReceiverMonSender


class ZMQReceiver(ReceiverServer):
    def __init__(self, ip: str, port: int, publishers: list):
        super().__init__(ip, port, publishers, "ZMQReceiver")
        self.running = True
        # The ReceiverServer already has a zmq context
        self.receiver = self._context.socket(zmq.PULL)
        connectionstr = "tcp://{}:{}".format(ip, port)
        self.log.info("Setting up monitor zmq pull server at {}".format(connectionstr))
        self.receiver.bind(connectionstr)
        # NOTE: this is needed when not setting socket via the ReceiverServer methods
        self._setup = True
        self.mon = ReceiverMonSender("ZMQReceiver", self.loop, self._context)

    async def ct_pull(self):
        while self.running:
            packet = await self.receiver.recv()
            self.mon.register_data_packet()
            await self.publish(packet)
'''

MAIN = '''
if __name__ == "__main__":
    import sys
    from ssdaq.core.publishers import ZMQTCPPublisher
    cls, port, pub_port = globals()[sys.argv[1]], int(sys.argv[2]), int(sys.argv[3])
    sys.exit(cls("127.0.0.1", port, [ZMQTCPPublisher("127.0.0.1", pub_port)]).run())
'''


def start(tmp_path: Path, source: str, cls: str, kind: int) -> tuple[subprocess.Popen, int, int]:
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(source) + MAIN)
    port, pub_port = free_port(kind), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, str(script), cls, str(port), str(pub_port)],
                            env=child_env(), stderr=subprocess.PIPE, text=True)
    return proc, port, pub_port


def collect(ctx: zmq.Context, pub_port: int, send, n: int) -> list[bytes]:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(f"tcp://127.0.0.1:{pub_port}")
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    i = 0
    while len(got) < n and time.monotonic() < deadline:
        send(f"msg{i}".encode())
        i += 1
        try:
            got.append(sub.recv())
        except zmq.Again:
            pass
    sub.close()
    return got


def test_udp_packet_receiver_example_relays_datagrams(tmp_path: Path, runtime_dir: Path) -> None:
    proc, port, pub_port = start(tmp_path, UDP_EXAMPLE, "PacketReceiver", socket.SOCK_DGRAM)
    ctx = zmq.Context()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        got = collect(ctx, pub_port, lambda b: udp.sendto(b, ("127.0.0.1", port)), 3)
        assert len(got) == 3 and all(g.startswith(b"msg") for g in got)
        assert stop(proc) == 0
    finally:
        udp.close()
        stop(proc)
        ctx.destroy(linger=0)


def test_zmq_receiver_example_relays_pushed_messages(tmp_path: Path, runtime_dir: Path) -> None:
    proc, port, pub_port = start(tmp_path, ZMQ_EXAMPLE, "ZMQReceiver", socket.SOCK_STREAM)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        got = collect(ctx, pub_port, push.send, 3)
        assert len(got) == 3 and all(g.startswith(b"msg") for g in got)
        assert stop(proc) == 0
    finally:
        push.close()
        stop(proc)
        ctx.destroy(linger=0)
