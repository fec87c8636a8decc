"""Typed subscribers, one per published stream, for scripts, notebooks and the tools.

>>> from ssdaq.subscribers import ReadoutSubscriber
>>> with ReadoutSubscriber(timeout_s=5) as sub:     # tcp://127.0.0.101:9004
...     for readout in sub:                          # stops after 5 s without a readout
...         print(readout.iro, readout.modules_present)
>>> sub.sequence.missed                              # readouts lost between assembler and here

Each subscriber is a zmq SUB socket connected to a receiver's PUB. zmq's own I/O thread receives
in the background into a queue bounded by ``rcvhwm`` messages, so no Python thread is needed and
nothing grows without bound. Iteration yields decoded messages and ends when ``timeout_s`` passes
without one (``None``: never). A message that does not decode is counted per reason in
``counters`` and skipped, never raised. A PUB drops messages silently for a subscriber that falls
behind, so the readout subscriber checks the readout numbers and reports gaps (``sequence``).
"""

import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import zmq

from ssdaq import streams
from ssdaq.core.counters import Counters
from ssdaq.core.errors import FormatError
from ssdaq.data import messages, trigger
from ssdaq.data.readout import SSREADOUT_BYTES, SSReadout, iro_tack

T = TypeVar("T")
#: a timeout in seconds, None to wait forever, or ... for the subscriber's own ``timeout_s``
Timeout = float | None | EllipsisType

_POLL_SLICE_MS = 200  # poll in slices so that Ctrl-C in a notebook or a script acts promptly
_BATCH = 1000  # messages taken from zmq at once (decoded together, handed out one by one)

log = logging.getLogger("ssdaq.subscribers")


def _deadline(wait: float | None) -> float | None:
    return None if wait is None else time.monotonic() + wait


@dataclass
class SequenceTracker:
    """Checks that sequence numbers (readout numbers) rise by exactly one.

    A jump forward is a gap: ``missed`` counts the numbers skipped. A number that does not rise
    is a restart (the assembler was reset with ``reset_ro_count``, or lost its state) and starts
    the count afresh. The first number seen is the baseline, whatever it is.
    """

    last: int | None = None
    missed: int = 0
    gaps: int = 0
    restarts: int = 0
    #: the most recent gaps as (last number before, first number after), newest last
    recent: list[tuple[int, int]] = field(default_factory=list)
    #: the restarts the last check found, as (number before, the number that did not rise)
    last_restarts: list[tuple[int, int]] = field(default_factory=list)
    keep: int = 100

    def check(self, numbers: np.ndarray) -> list[tuple[int, int]]:
        """Take a batch of numbers in arrival order; return the gaps found in it."""
        self.last_restarts = []
        if len(numbers) == 0:
            return []
        seq = np.asarray(numbers, np.int64)
        prev = np.concatenate(([seq[0] - 1 if self.last is None else self.last], seq[:-1]))
        step = seq - prev
        jumps = np.flatnonzero(step > 1)
        self.missed += int((step[jumps] - 1).sum())
        self.gaps += len(jumps)
        back = np.flatnonzero(step < 1)
        self.restarts += len(back)
        self.last_restarts = [(int(prev[i]), int(seq[i])) for i in back]
        self.last = int(seq[-1])
        found = [(int(prev[i]), int(seq[i])) for i in jumps]
        self.recent = (self.recent + found)[-self.keep:]
        return found


class Subscriber(Generic[T]):
    """A SUB socket on one stream, yielding decoded messages; see the module docstring.

    ``bind=True`` binds instead of connecting, for publishers in ``remote`` mode. ``context``
    defaults to the process-wide zmq context.
    """

    stream: ClassVar[str] = ""
    #: the counters a message that does not decode is counted under (the decoder's reasons)
    rejections: ClassVar[tuple[str, ...]] = ("bad_message",)

    def __init__(self, ip: str = streams.PUB_IP, port: int | None = None, *,
                 endpoint: str | None = None, timeout_s: float | None = None,
                 rcvhwm: int = 100_000, bind: bool = False,
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint or streams.endpoint(self.stream, ip, port)
        self.timeout_s = timeout_s
        self.counters = Counters(log.getChild(self.stream or "raw"))
        self.counters.declare(("received", *self.rejections))
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        (self._sock.bind if bind else self._sock.connect)(self.endpoint)
        self._ready: collections.deque[T] = collections.deque()  # decoded, not yet handed out

    # ---------------------------------------------------------------- decoding (per stream)

    def decode(self, payload: bytes) -> T:
        """One message from its bytes; raises FormatError when it is not one."""
        return payload  # type: ignore[return-value]

    def observe(self, payloads: list[bytes]) -> None:
        """Look at a batch of raw messages before decoding (sequence checks)."""

    # ---------------------------------------------------------------- receiving

    def recv_raw(self, timeout_s: Timeout = ..., max_messages: int = 1) -> list[bytes]:
        """Up to ``max_messages`` raw messages: waits for the first (TimeoutError after
        ``timeout_s``; the default is the subscriber's own), then takes what is already queued."""
        wait = self.timeout_s if timeout_s is ... else timeout_s
        return self._recv_raw(_deadline(wait), wait, max_messages)

    def _recv_raw(self, deadline: float | None, wait: float | None, max_messages: int
                  ) -> list[bytes]:
        while not self._sock.poll(self._slice_ms(deadline)):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"nothing from {self.endpoint} within {wait:g} s")
        out = [self._sock.recv()]
        while len(out) < max_messages:
            try:
                out.append(self._sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        self.counters.add("received", len(out))
        self.observe(out)
        return out

    @staticmethod
    def _slice_ms(deadline: float | None) -> int:
        if deadline is None:
            return _POLL_SLICE_MS
        return max(0, min(_POLL_SLICE_MS, int((deadline - time.monotonic()) * 1000) + 1))

    def decode_many(self, payloads: list[bytes]) -> list[T]:
        """Decode what decodes; count (and rate-limit-log) the rest by reason."""
        out = []
        for payload in payloads:
            try:
                out.append(self.decode(payload))
            except FormatError as e:
                self.counters.report(e.reason, detail=str(e), peer=self.endpoint)
        return out

    def recv(self, timeout_s: Timeout = ...) -> T:
        """The next message that decodes; TimeoutError if none arrives in time."""
        wait = self.timeout_s if timeout_s is ... else timeout_s
        deadline = _deadline(wait)
        while not self._ready:
            self._ready.extend(self.decode_many(self._recv_raw(deadline, wait, _BATCH)))
        return self._ready.popleft()

    def __iter__(self) -> Iterator[T]:
        """Messages until ``timeout_s`` passes without one (forever if it is None).

        Leaving the loop early loses nothing: the next ``recv`` or loop continues where it left.
        """
        while True:
            try:
                yield self.recv()
            except TimeoutError:
                return

    def take(self, count: int, timeout_s: Timeout = ...) -> list[T]:
        """Up to ``count`` messages; fewer if the stream stays silent for ``timeout_s``."""
        out: list[T] = []
        while len(out) < count:
            try:
                out.append(self.recv(timeout_s))
            except TimeoutError:
                break
        return out

    # ---------------------------------------------------------------- old API, lifetime

    def start(self) -> None:
        """Nothing to start (the old subscribers were threads that had to be started)."""

    def get_data(self, timeout: float | None = None) -> T:
        """The old name of :meth:`recv` (it blocked forever by default)."""
        return self.recv(timeout)

    @property
    def bad(self) -> int:
        """Messages that did not decode (all reasons)."""
        return sum(v for k, v in self.counters.values.items() if k != "received")

    def close(self, hard: bool = True) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> "Subscriber[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parser(cls: type) -> Callable[[bytes], object]:
    return lambda payload: messages.parse(cls, payload)


class ReadoutSubscriber(Subscriber[SSReadout]):
    """Slow-signal readouts (SSReadout) with readout-number gap detection in ``sequence``."""

    stream = "readout"
    rejections = ("bad_size",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence = SequenceTracker()

    def decode(self, payload: bytes) -> SSReadout:
        return SSReadout.from_bytes(payload)

    def observe(self, payloads: list[bytes]) -> None:
        # wrong-sized messages are counted when decoded; only the header is read here
        numbers, _ = iro_tack([p for p in payloads if len(p) == SSREADOUT_BYTES])
        for before, after in self.sequence.check(numbers):
            log.warning("readouts %d..%d missing from %s (%d); total missed %d", before + 1,
                        after - 1, self.endpoint, after - before - 1, self.sequence.missed)


class TriggerSubscriber(Subscriber[trigger.TriggerPacket]):
    """Trigger packets (V1, V2, V3), decoded into ``ssdaq.data.trigger`` packet classes."""

    stream = "trigger"
    rejections = ("bad_size", "bad_magic", "unknown_type", "bad_phase")

    def decode(self, payload: bytes) -> trigger.TriggerPacket:
        return trigger.unpack(payload)


class TimestampSubscriber(Subscriber[messages.TriggerMessage]):
    """CDTS TriggerMessages from the timing board, one per trigger."""

    stream = "timestamp"
    decode = staticmethod(_parser(messages.TriggerMessage))  # type: ignore[assignment]


class LogSubscriber(Subscriber[messages.LogData]):
    """chec.LogData records; ``records()`` gives them as ``logging.LogRecord``."""

    stream = "log"
    decode = staticmethod(_parser(messages.LogData))  # type: ignore[assignment]

    def records(self) -> Iterator[logging.LogRecord]:
        """The stream as logging records, to hand to local handlers."""
        return (messages.log_record(m) for m in self)


class MonitorSubscriber(Subscriber[messages.MonitorData]):
    """chec.MonitorData: each receiver's name, pid, input rate and whether data arrived."""

    stream = "monitor"
    decode = staticmethod(_parser(messages.MonitorData))  # type: ignore[assignment]


class TelDataSubscriber(Subscriber[messages.TelData]):
    """chec.TelData: telescope pointing (ra, dec) with its time."""

    stream = "teldata"
    decode = staticmethod(_parser(messages.TelData))  # type: ignore[assignment]


#: stream name -> subscriber class (the registry names the same class: tests/test_streams.py)
SUBSCRIBERS: dict[str, type[Subscriber]] = {
    cls.stream: cls for cls in (ReadoutSubscriber, TriggerSubscriber, TimestampSubscriber,
                                LogSubscriber, MonitorSubscriber, TelDataSubscriber)
}

# The original SSDAQ class names, for scripts written against them.
SSReadoutSubscriber = ReadoutSubscriber
BasicTriggerSubscriber = TriggerSubscriber
BasicTimestampSubscriber = TimestampSubscriber
BasicMonSubscriber = MonitorSubscriber
LogProtoSubscriber = LogSubscriber
