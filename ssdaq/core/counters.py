"""Named counters of what a receiver took in, published and lost, with rate-limited warnings.

Every counter of the package is declared once, in :data:`CATALOGUE`: its name, its kind (``loss``:
data was lost or rejected, and it adds to the "lost" total of ``STATUS=``; ``info``: anything
else) and one line of help that holds for every receiver using it (it is the HELP of the metric
family ``ssdaq_<name>_total``). A receiver class lists the names it uses; ``status``, ``STATUS=``,
the lost total, the monitoring message and the metrics derive from the catalogue. A site's own
receiver declares its own counters with :func:`define`.

Every place where data can be lost bumps a counter named for what was lost (``late``,
``duplicate``, ``bad_size``, ``unknown_source``, ``evicted``, ``pub_errors``, …).
:meth:`Counters.report` also warns, at most once per interval per counter, with the number of
events since the previous warning, so a flood of bad packets costs one journal line per interval.
Counting a name the receiver did not declare is a programming error: with ``SSDAQ_STRICT_COUNTERS=1``
(the test suite sets it) it raises; in production it is logged once and counted anyway, since a
typo in a rarely taken branch must not stop a camera's receiver.
"""

import functools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["loss", "info"]
STRICT_ENV = "SSDAQ_STRICT_COUNTERS"


@dataclass(frozen=True)
class CounterSpec:
    """One counter: its name, whether it counts lost data, and its help."""

    name: str
    kind: Kind
    help: str

    @property
    def loss(self) -> bool:
        return self.kind == "loss"


def _catalogue(*specs: tuple[str, Kind, str]) -> dict[str, CounterSpec]:
    return {name: CounterSpec(name, kind, help) for name, kind, help in specs}


#: every counter of the package; receivers name theirs in ``ReceiverServer.counter_names``
CATALOGUE: dict[str, CounterSpec] = _catalogue(
    # every receiver (the framework counts these)
    ("received", "info", "Input items taken in: datagrams, messages or records, before any check"),
    ("published", "info", "Messages handed to the publishers"),
    ("pub_errors", "loss", "Messages a publisher refused or failed to send"),
    ("kernel_drops", "loss", "Datagrams the kernel dropped because the socket's receive buffer was full"),
    ("oversize", "loss", "Input longer than the receiver accepts (a datagram, a framed record), dropped"),
    ("handler_errors", "loss", "Input batches whose handler raised an unexpected error (a software fault)"),
    # malformed input, named for what was wrong
    ("bad_size", "loss", "Input whose length fits no layout of the stream's wire format"),
    ("bad_message", "loss", "Messages that do not decode as the stream's message type"),
    ("bad_magic", "loss", "Trigger packets that do not start with the trigger packet's magic word"),
    ("unknown_type", "loss", "Trigger packets of a type or version the format does not define"),
    ("bad_phase", "loss", "Trigger packets whose phase byte is not a single bit"),
    ("bad_frame", "loss", "Log stream bytes that do not frame a length-delimited record"),
    ("truncated", "loss", "Log records cut short by the end of their connection (closed by the sender, "
     "or as idle or replaced)"),
    ("empty", "loss", "Datagrams with no record in them"),
    ("unknown_source", "loss", "Datagrams from an address that maps to no module slot"),
    # event building
    ("complete", "info", "Readouts published with every expected live module"),
    ("incomplete", "info", "Readouts published with a module missing (waited max_wait_s, or evicted)"),
    ("late", "loss", "Records that arrived after their readout was published"),
    ("duplicate", "loss", "Records already received for their readout (a copied datagram)"),
    ("evicted", "loss", "Readouts published early because max_open_readouts were being built"),
    ("tack_resets", "info", "Backward TACK jumps taken as a reset of the camera's counter"),
    ("paused", "loss", "Readouts built but not published while publishing was paused by command"),
    ("handed_on", "info", "Records of readouts not yet begun at stop, handed to the next start"),
    ("taken_over", "info", "Records handed over by the previous process, taken at start"),
    ("handover_rejected", "loss", "Hand-over files of a previous process that could not be read (kept aside)"),
    # connections
    ("connections", "info", "TCP connections accepted"),
    ("refused_connections", "loss",
     "TCP connections refused because max_connections_per_peer were open from that address"),
    ("replaced_connections", "info", "TCP connections closed to admit a newcomer while max_connections were "
     "open (the one that received bytes least recently)"),
    ("idle_closed", "info", "TCP connections closed after idle_timeout_s without a byte (where the "
     "receiver sees records: without a byte inside a record)"),
    ("connects", "info", "Connections to the upstream publisher established"),
    ("disconnects", "info", "Connections to the upstream publisher lost"),
    ("connect_failures", "info", "Attempts to connect to the upstream publisher that failed"),
    # timestamps
    ("triggers", "info", "Triggers taken from the timing board's bunches"),
    ("missed_bunches", "loss", "Bunches the timing board sent that never arrived (gaps in its counter)"),
    # monitoring
    ("forgotten", "info", "Receivers dropped from the monitoring table to keep it within max_receivers"),
    # telescope data
    ("db_errors", "loss", "Polls of the telescope database that failed"),
    ("no_data", "loss", "Polls that found no pointing row"),
    ("bad_row", "loss", "Pointing rows that could not be read as a pointing"),
    ("timeouts", "loss", "Polls that did not answer within timeout_s (or overlapped the previous one)"),
    # writers
    ("written", "info", "Rows written to files"),
    ("written_bytes", "info", "Bytes the rows written added to the files on disk"),
    ("files", "info", "Files completed"),
    ("missed", "loss", "Messages the writer's subscription lost upstream (gaps in sequence numbers)"),
    ("disk_full", "loss", "Rows dropped because the disk was at its reserve and the memory buffer full"),
    ("not_recorded", "info", "Messages received outside an observation by a writer that records "
     "only observations (record = \"runs\")"),
    # ssdaq-web's live page (its browsers, not data: nothing here is a loss)
    ("readouts", "info", "Readouts the live page's one subscription received"),
    ("frames_sent", "info", "Readouts sent to the page's browsers (each browser counted)"),
    ("frames_skipped", "info", "Readouts a browser was not sent: a newer one was sent instead"),
    ("status_sent", "info", "Status messages sent to the page's browsers"),
    ("refused_clients", "info", "Live connections refused because max_clients were open"),
    ("closed_stalled", "info", "Live connections closed because a frame was not taken in send_timeout_s"),
    ("closed_no_pong", "info", "Live connections closed because a ping went unanswered (half-open)"),
    ("client_messages", "info", "Messages browsers sent on the read-only live connection (ignored)"),
)

#: what every receiver counts (declared by the framework)
BASE_COUNTERS = ("received", "published", "pub_errors", "kernel_drops", "oversize", "handler_errors")


def define(name: str, kind: Kind, help: str) -> CounterSpec:
    """Declare a counter of a site's own receiver (once; the same declaration again is a no-op)."""
    spec = CounterSpec(name, kind, help)
    known = CATALOGUE.setdefault(name, spec)
    if known != spec:
        raise ValueError(f"counter {name!r} is already declared as {known}")
    return spec


def spec(name: str) -> CounterSpec:
    """The declaration of counter ``name`` (KeyError if it was never declared)."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"counter {name!r} is not in the catalogue (ssdaq.core.counters); "
                       "declare it there or with define()") from None


def loss_names(names: Iterable[str]) -> tuple[str, ...]:
    """Those of ``names`` that count lost data, in the given order."""
    return _loss_names(tuple(names))


@functools.lru_cache(maxsize=64)
def _loss_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`loss_names`, worked out once per set of counters (``status`` asks every second)."""
    return tuple(n for n in names if spec(n).loss)


class Counters:
    """Monotonic integer counters plus their per-second rates over the last :meth:`tick`."""

    def __init__(self, log: logging.Logger, interval_s: float = 10.0,
                 strict: bool | None = None) -> None:
        self.log = log
        self.interval_s = interval_s
        self.strict = os.environ.get(STRICT_ENV) == "1" if strict is None else strict
        self.values: dict[str, int] = {}
        self.rates: dict[str, float] = {}
        self._at_tick: dict[str, int] = {}
        self._tick_time = time.monotonic()
        self._logged_value: dict[str, int] = {}
        self._logged_time: dict[str, float] = {}
        self._last_detail: dict[str, tuple[str, str]] = {}

    def declare(self, names: Iterable[str]) -> None:
        """Make counters show as 0 in ``status`` before anything happened; each must be in the
        catalogue."""
        for name in names:
            spec(name)
            self.values.setdefault(name, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` events silently (for counters that are not losses)."""
        if name not in self.values:
            self._undeclared(name)
        self.values[name] += n

    def _undeclared(self, name: str) -> None:
        msg = f"counter {name!r} was not declared by this receiver (counter_names)"
        if self.strict:
            raise KeyError(msg)
        self.log.error("%s; counting it anyway", msg)
        self.values[name] = 0

    def __getitem__(self, name: str) -> int:
        return self.values.get(name, 0)

    def report(self, name: str, n: int = 1, detail: str = "", peer: str = "") -> None:
        """Count ``n`` lost or rejected items and warn, rate-limited, naming the peer if known."""
        if n <= 0:
            return
        self.add(name, n)
        self._last_detail[name] = (detail, peer)
        last = self._logged_time.get(name)
        if last is None or time.monotonic() - last >= self.interval_s:
            self._warn(name)

    def _warn(self, name: str) -> None:
        total = self.values[name]
        delta = total - self._logged_value.get(name, 0)
        detail, peer = self._last_detail.get(name, ("", ""))
        text = f"{name}: {delta} since last report (total {total})"
        if detail:
            text += f"; last: {detail}"
        if peer:
            text += f" from {peer}"
        self.log.warning(text, extra={"SSDAQ_COUNTER": name, "SSDAQ_PEER": peer})
        self._logged_value[name] = total
        self._logged_time[name] = time.monotonic()

    def flush_reports(self) -> None:
        """Warn about counts suppressed by the rate limit whose interval has passed."""
        now = time.monotonic()
        for name, logged in list(self._logged_value.items()):
            if self.values[name] > logged and now - self._logged_time[name] >= self.interval_s:
                self._warn(name)

    def tick(self) -> None:
        """Recompute :attr:`rates` (per second since the previous tick)."""
        now = time.monotonic()
        dt = max(now - self._tick_time, 1e-9)
        self.rates = {k: (v - self._at_tick.get(k, 0)) / dt for k, v in self.values.items()}
        self._at_tick = dict(self.values)
        self._tick_time = now
