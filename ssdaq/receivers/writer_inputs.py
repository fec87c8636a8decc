"""The zmq SUB sockets a writer receives on: one per stream of its layout that has an endpoint.

Kept apart from the service (:mod:`ssdaq.receivers.writer`) so that the zmq side of receiving
(socket options, connecting, moving to a reload's new endpoint, taking what zmq queued) is in
one place, and the service only decides what to do with the messages.
"""

import logging
from typing import Any

import zmq
import zmq.asyncio

from ssdaq.io.layouts import FileLayout, Input

_DRAIN_MAX = 10_000  # messages taken per wake-up, so one stream cannot starve the loop


class Subscriptions:
    """The subscribed inputs of a layout and their sockets (:attr:`sockets`), connected."""

    def __init__(self, context: zmq.asyncio.Context, layout: FileLayout, inputs: Any) -> None:
        self.sockets: list[tuple[Input, zmq.asyncio.Socket]] = []
        for inp in layout.inputs:
            sub = getattr(inputs, inp.stream)
            if sub.endpoint:
                sock = context.socket(zmq.SUB)
                sock.setsockopt(zmq.RCVHWM, sub.rcvhwm)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.connect(sub.endpoint)
                self.sockets.append((inp, sock))

    def reconnect(self, old: Any, new: Any, log: logging.Logger) -> None:
        """Move each socket from its endpoint in the ``old`` inputs to the one in ``new``."""
        for inp, sock in self.sockets:
            before, after = (getattr(c, inp.stream).endpoint for c in (old, new))
            if after != before:
                if before:
                    sock.disconnect(before)
                if after:
                    sock.connect(after)
                log.info("%s: subscribed to %s instead of %s", inp.stream, after or "nothing",
                         before or "nothing")

    def close(self) -> None:
        for _, sock in self.sockets:
            sock.close(linger=0)


def drain(sock: zmq.asyncio.Socket) -> list[bytes]:
    """What zmq queued for ``sock`` (up to ``_DRAIN_MAX`` messages), without waiting."""
    shadow: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    out: list[bytes] = []
    while len(out) < _DRAIN_MAX:
        try:
            out.append(shadow.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return out
