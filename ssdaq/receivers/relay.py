"""UDPRelay (``ssdaq-receiver relay``): every UDP datagram, unchanged, to the publishers.

The smallest complete receiver: a socket-activated UDP input read in batches and a zmq PUB
output. Useful on its own for forwarding a device's datagrams onto the zmq bus.
"""

from dataclasses import dataclass

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.datagram_batch import DatagramBatch
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import (
    DataSocket,
    ListenSettings,
    PublisherSettings,
    ReceiverConfig,
    zmq_publisher,
)

STREAM = streams.get("relay")


@dataclass(frozen=True)
class RelayConfig(ReceiverConfig):
    """Settings of the UDP relay."""

    max_datagram_bytes: int = setting(
        9000, help="Longest datagram relayed; longer ones are dropped and counted (oversize)",
        min=1, max=65535)
    sockets: DataSocket = table(DataSocket, data=ListenSettings(port=STREAM.listen_port))
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(STREAM.pub_port), help="Publishers: every datagram goes to each of them")


class UDPRelay(ReceiverServer[RelayConfig]):
    """Relays datagrams from its ``data`` socket to its publishers, byte for byte."""

    service_name = "relay"
    config_class = RelayConfig

    def __init__(self, ip: str = "0.0.0.0", port: int = STREAM.listen_port, publishers: list | None = None,
                 name: str = "UDPRelay") -> None:
        super().__init__(ip, port, publishers, name)
        self.setup_datagrams(self._relay, max_bytes=self.config.max_datagram_bytes)

    def _relay(self, batch: DatagramBatch) -> None:
        for i in range(batch.count):
            self.publish_nowait(batch.payload(i))
