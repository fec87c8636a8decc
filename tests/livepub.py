"""Live test parts: a real zmq publisher that knows when it has a subscriber, and readouts
whose every value survives the float32 of the HDF5 files."""

import socket

import numpy as np
import zmq

from ssdaq.data.readout import N_TM, N_TM_PIX, SSReadout
from tests.conftest import free_port


class Publisher:
    """A zmq XPUB bound on loopback: a PUB that also sees subscriptions, so a test can wait for
    its subscriber instead of sleeping (a PUB drops what it sends before the subscription)."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.bind(self.endpoint)

    def wait_subscriber(self, timeout: float = 10.0) -> None:
        assert self.sock.poll(int(timeout * 1000)), f"no subscriber on {self.endpoint}"
        assert self.sock.recv()[:1] == b"\x01"

    def send(self, payload: bytes) -> None:
        self.sock.send(payload)


def readout(iro: int, seed: int = 0, absent: tuple[int, ...] = (5,)) -> SSReadout:
    """A readout with float32-exact random amplitudes and NaN rows for the ``absent`` modules."""
    rng = np.random.default_rng(iro * 7919 + seed)
    data = rng.uniform(0, 5000, (N_TM, N_TM_PIX)).astype(np.float32).astype(np.float64)
    data[list(absent)] = np.nan
    return SSReadout(timestamp=1_700_000_000_000_000_000 + iro * 100_000_000, readout_number=iro,
                     cpu_t_s=1_700_000_000 + iro, cpu_t_ns=123_456_789, data=data)
