"""TriggerPacketReceiver (``ssdaq-receiver trigger``): backplane trigger packets, checked, relayed.

Each UDP datagram on the ``data`` socket (8307) is one trigger packet (V1, V2 or V3, see
:mod:`ssdaq.data.trigger`). Valid packets are published byte for byte, as before, so existing
subscribers decode them unchanged; the old receiver relayed anything, this one drops what is not
a trigger packet and counts it per reason (``bad_magic``, ``unknown_type``, ``bad_size``) with a
rate-limited warning naming the sender.

Each payload is checked with :func:`ssdaq.data.trigger.validate`, whose V1 fast path is one
struct call (~0.3 µs). A vectorised numpy check per batch was measured and rejected: its fixed
cost (~10 µs a batch) exceeds the per-packet check below ~40 packets a batch, and batches stay
small whenever the receiver keeps up.
"""

from dataclasses import dataclass

from ssdaq.core.config import setting, table, tables
from ssdaq.core.datagrams import DatagramBatch
from ssdaq.core.errors import FormatError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import DataSocket, ListenSettings, PublisherSettings, ReceiverConfig, zmq_publisher
from ssdaq.data import trigger

# The largest UDP payload (over IPv4): the format allows longer V2 packets than UDP can carry.
MAX_PACKET_BYTES = 65507


@dataclass(frozen=True)
class TriggerConfig(ReceiverConfig):
    """Settings of the trigger packet receiver."""

    batch: int = setting(64, help="Datagrams read per recvmmsg call", min=1, max=1024)
    sockets: DataSocket = table(DataSocket, data=ListenSettings(port=8307))
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(9002), help="Publishers: every valid trigger packet goes to each of them, unchanged"
    )


class TriggerPacketReceiver(ReceiverServer):
    """Relays valid trigger packets from its ``data`` socket to its publishers, byte for byte."""

    config_class = TriggerConfig
    service_name = "trigger"
    loss_counters = ReceiverServer.loss_counters + ("bad_magic", "unknown_type", "bad_size")

    def __init__(self, ip: str = "0.0.0.0", port: int = 8307, publishers: list | None = None,
                 name: str = "TriggerPacketReceiver") -> None:
        super().__init__(ip, port, publishers, name)
        reader = self.setup_datagrams(self._on_batch, max_bytes=MAX_PACKET_BYTES, batch=self.config.batch)
        # One flat view made once: a payload is then a memoryview slice, no numpy call per packet.
        self._flat = memoryview(reader.batch.data.reshape(-1))
        self._row_bytes = reader.batch.data.shape[1]

    def _on_batch(self, batch: DatagramBatch) -> None:
        flat, row, publish, validate = self._flat, self._row_bytes, self.publish_nowait, trigger.validate
        for i, length in enumerate(batch.lengths[:batch.count].tolist()):
            payload = flat[i * row:i * row + length]
            try:
                validate(payload)
            except FormatError as e:
                host, port = batch.sender(i)
                self.counters.report(e.reason, detail=str(e), peer=f"{host}:{port}")
                continue
            publish(payload)
