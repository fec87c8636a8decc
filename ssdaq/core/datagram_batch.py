"""The datagrams of one ``recvmmsg`` call, as the batched reader hands them to a receiver.

Apart from the reader (:mod:`ssdaq.core.datagrams`) because a receiver reads a batch while the
reader's call to it is still running: a receiver asking a batch for its senders then calls into
this module, not back into the reader that called it.
"""

import ipaddress
import socket

import numpy as np

NAME_BYTES = 128  # sizeof(struct sockaddr_storage)


class DatagramBatch:
    """The datagrams of one ``recvmmsg`` call. Arrays are reused: copy what must outlive the call.

    ``data[i, :lengths[i]]`` is datagram ``i``; ``ipv4`` holds IPv4 senders as uint32 in network
    byte order (the bytes of ``sin_addr``) on an IPv4 socket; :meth:`sender` works for both families.
    """

    def __init__(self, batch: int, max_bytes: int, family: int) -> None:
        self.family = family
        self.count = 0
        self.data = np.zeros((batch, max_bytes), dtype=np.uint8)
        self.names = np.zeros((batch, NAME_BYTES), dtype=np.uint8)
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.ipv4 = self.names[:, 4:8].copy().view(np.uint32).ravel()
        # UTC ns each datagram arrived: the kernel's receive time if the reader asks for
        # timestamps, else the time of the call that returned the batch
        self.arrival_ns = np.zeros(batch, dtype=np.int64)

    def payload(self, i: int) -> memoryview:
        return self.data[i, : self.lengths[i]].data

    def sender(self, i: int) -> tuple[str, int]:
        """(address, port) of datagram ``i``."""
        name = self.names[i]
        port = int(name[2]) << 8 | int(name[3])
        if self.family == socket.AF_INET6:
            return str(ipaddress.IPv6Address(name[8:24].tobytes())), port
        return str(ipaddress.IPv4Address(name[4:8].tobytes())), port

    def addresses(self) -> list[str]:
        """Sender address strings of the whole batch (for explicit address -> module maps)."""
        return [self.sender(i)[0] for i in range(self.count)]
