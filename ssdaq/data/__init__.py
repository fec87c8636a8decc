"""Pure data formats of the camera: bytes to records and back. No sockets, no event loop."""

from ssdaq.data.readout import SSReadout
from ssdaq.data.trigger import TriggerPacket

__all__ = ["SSReadout", "TriggerPacket"]
