"""The readout data path as one pure object: datagrams in, numbered SSReadout rows and counts out.

:class:`ReadoutPipeline` owns the three steps a batch of slow-signal datagrams goes through:
decode (:mod:`ssdaq.data.slowsignal`), TACK matching (:mod:`ssdaq.data.event_builder`, with
:mod:`ssdaq.data.tack_match`) and rows (:mod:`ssdaq.data.readout_rows`). Each call returns an
:class:`Output`: what to publish, what was counted during that call (by counter name) and when
to call :meth:`ReadoutPipeline.expire` next. Calls go down and results come back: nothing in
here calls the receiver, and no count needs to be worked out afterwards.

Pure: no sockets and no clock. The caller passes ``now`` (monotonic seconds), the arrival times
(UTC ns) and the number of the first readout it will publish.
"""

from dataclasses import dataclass, field, fields

import numpy as np

from ssdaq.data import slowsignal
from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.event_builder import BuilderCounts, EventBuilder, Records
from ssdaq.data.readout_rows import Published

#: every counter an ``Output`` may hold: rejected datagrams, then what event building counted
COUNTERS = (*slowsignal.REJECT_REASONS, *(f.name for f in fields(BuilderCounts)))
#: the counters that are not losses (readouts published, complete or not)
BUILT = ("complete", "incomplete")


@dataclass(frozen=True, eq=False)
class Output:
    """What one call produced.

    ``readouts``: numbered from the ``first_number`` passed in, in publish order (see
    ``Published``). ``counts``: counter name -> how many this call counted, for the names in
    ``COUNTERS`` it counted any of. ``peers``: a sender (text) per rejected reason, for the log line.
    ``next_deadline``: when to call ``expire`` (monotonic s), None if nothing is open.
    """

    readouts: Published
    counts: dict[str, int]
    next_deadline: float | None
    peers: dict[str, str] = field(default_factory=dict)


class ReadoutPipeline:
    """Decode -> match -> rows for the ``[assembler]`` settings and a sender -> slot map.

    ``feed`` takes a batch as a batched reader hands it over: ``data`` (rows of datagram bytes),
    ``lengths``, ``sources`` (see ``slowsignal.ModuleMap.slots``) and ``arrival_ns`` (UTC ns
    per datagram, or one for all). ``expire`` is for the timer, ``flush`` for shutdown. ``builder`` is read for
    ``status`` (per-module figures, open readouts, totals).
    """

    def __init__(self, settings: AssemblerSettings, modules: slowsignal.ModuleMap,
                 now: float) -> None:
        self.settings, self.modules = settings, modules
        self.builder = EventBuilder(settings, now, modules.expected)

    def feed(self, data: np.ndarray, lengths: np.ndarray, sources: slowsignal.Addresses,
             arrival_ns: int | np.ndarray, now: float, first_number: int) -> Output:
        records = slowsignal.decode(data, lengths, sources, self.modules)
        built = self.builder.add(records, now, arrival_ns, first_number)
        return self._output(built, records.rejected, records.rejected_from)

    def expire(self, now: float, first_number: int) -> Output:
        """Publish readouts whose deadline passed or that wait for no live module any more."""
        return self._output(self.builder.expire(now, first_number))

    def hold(self) -> None:
        """From now on, set aside records of readouts not yet open (stopping: see EventBuilder)."""
        self.builder.hold()

    def take_held(self) -> Records:
        return self.builder.take_held()

    def take_over(self, held: Records, now: float, first_number: int) -> Output:
        """Start with the records a predecessor set aside."""
        return self._output(self.builder.add_held(held, now, first_number))

    def flush(self, first_number: int) -> Output:
        """Publish every open readout, partial ones included."""
        return self._output(self.builder.flush(first_number))

    def _output(self, built: Published, rejected: dict[str, int] | None = None,
                peers: dict[str, str] | None = None) -> Output:
        counts = dict(rejected or {})
        counts.update(self.builder.take_counts())
        return Output(built, counts, self.builder.next_deadline(), peers or {})
