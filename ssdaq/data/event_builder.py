"""TACK event builder: slow-signal records of up to 32 modules -> SSReadout rows, batch by batch.

Pure: no sockets and no clock. The caller passes ``now`` (monotonic seconds) and the batch's
arrival ``wall_ns`` (UTC ns) in, calls ``expire(now)`` from a timer armed at ``next_deadline()``,
and numbers and sends what comes back.

Matching is per record: a record joins the open readout whose anchor (the TACK of its first
record) is nearest, if within ``readout_window_ns``; else it is looked up in the bounded history
of closed readouts (``late``, or ``duplicate`` if that readout had its slot) or opens a readout.
A batch costs a fixed number of numpy operations, never Python per record or per datagram.

The reference TACK ``ref`` is the newest anchor of a readout holding at least two modules (one
if only one is expected). A single module's far-future TACK cannot move it, so it cannot make
the normal stream look late: it becomes a one-module readout of its own. A quorate readout more
than ``tack_reset_ns`` below ``ref`` means the TACK counter was reset: counted once in
``tack_resets``; ``ref`` follows the new counter, while readouts still open from before keep
collecting their stragglers (modules' packets straddle the reset) without pulling ``ref`` back.
Records that far below ``ref`` are never counted late: they open readouts and wait for a second
module. A backwards jump smaller than ``tack_reset_ns`` cannot be told from late data, and is
counted as late until the new TACKs pass the old ones.

Closed readouts too far from ``ref`` for the history's late/duplicate rules (the old counter's
after a reset, a far-future one, the new counter's before its reset is seen) are kept in a
second bounded history, ``_elsewhere``, and the two swap roles at a reset. A record far from
``ref``, or within the span of ``_elsewhere``, that exactly matches a readout kept there is a
duplicate (or late), not a new readout: a copied datagram is never published twice while its
readout is remembered. Both lookups are skipped unless a batch's TACKs reach those ranges.
"""

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from ssdaq.data.readout import HEADER, N_TM, N_TM_PIX, SSREADOUT_BYTES
from ssdaq.data.slowsignal import RECORD_BYTES, TACK_LIMIT, RecordBatch, records_to_mv
from ssdaq.data.tack_match import NEW, ClosedHistory, OpenAnchors, group

ROW_WORDS = SSREADOUT_BYTES // 8  # 2052 float64: the header's 4 u64 then 32 x 64 mV
HEADER_WORDS = HEADER.size // 8
_NS = 1_000_000_000
# A record as one opaque 144-byte scalar: fancy indexing then copies it whole, where a row of
# 72 words costs a strided copy per record.
_RECORD = np.dtype((np.void, RECORD_BYTES))


@dataclass(frozen=True)
class BuilderSettings:
    """Event-building settings; the receiver maps its ``[assembler]`` table onto these.

    ``readout_window_ns``: records this close to a readout's anchor belong to it (keep it below
    half the readout spacing). ``max_wait_s``: a readout is published this long after it opened
    at the latest. ``module_timeout_s``: a module silent this long is absent and not waited for.
    ``max_open_readouts``: beyond it the oldest open readout is published early (``evicted``).
    ``closed_history``: closed readouts remembered to tell late and duplicate records.
    ``tack_reset_ns``: a backwards TACK jump beyond this is a counter reset, not late data.
    ``expected_slots``: the modules a readout waits for.
    """

    readout_window_ns: int = 10_000_000
    max_wait_s: float = 0.5
    module_timeout_s: float = 5.0
    max_open_readouts: int = 1000
    closed_history: int = 4096
    tack_reset_ns: int = 10 * _NS
    expected_slots: tuple[int, ...] = tuple(range(N_TM))

    def __post_init__(self) -> None:
        for name in ("readout_window_ns", "max_open_readouts", "closed_history", "tack_reset_ns"):
            if not 1 <= getattr(self, name) <= TACK_LIMIT:
                raise ValueError(f"{name} must be in 1..2**62, got {getattr(self, name)}")
        for name in ("max_wait_s", "module_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.expected_slots or not set(self.expected_slots) <= set(range(N_TM)):
            raise ValueError(f"expected_slots must be slots in 0..{N_TM - 1}")


@dataclass
class BuilderCounts:
    """What the builder published and lost. ``evicted`` readouts are also ``incomplete``."""

    complete: int = 0
    incomplete: int = 0
    late: int = 0
    duplicate: int = 0
    evicted: int = 0
    tack_resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Published:
    """Readouts in publish order; ``rows[i]`` is readout i's 16 416 bytes once numbered.

    Each row is float64 in SSReadout layout: the first 4 elements are the ``<4Q`` header viewed as
    float64 (readout number 0 until ``number()``, TACK of the lowest slot present, CPU seconds,
    CPU ns), then 32 x 64 mV with NaN rows for absent modules. The arrays belong to the caller.
    The CPU time is UTC: the arrival wall time of the datagram holding the readout's first record
    (the kernel's receive timestamp, in the receiver), minus the TACK distance from that record to
    the last record of its datagram, i.e. an estimate of when the readout was sampled (a datagram
    is sent after its last record is taken). ``arrived_ns``: UTC ns when the first datagram of the
    batch that last fed each readout arrived: no later than the readout's last record, so the
    caller can bound how long building took.
    """

    rows: np.ndarray
    complete: np.ndarray
    n_modules: np.ndarray
    arrived_ns: np.ndarray

    @classmethod
    def empty(cls) -> "Published":
        return cls(np.empty((0, ROW_WORDS)), np.empty(0, bool), np.empty(0, np.intp),
                   np.empty(0, np.int64))

    @classmethod
    def concat(cls, parts: list["Published"]) -> "Published":
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.complete for p in parts]),
            np.concatenate([p.n_modules for p in parts]),
            np.concatenate([p.arrived_ns for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def header(self) -> np.ndarray:
        """(k, 4) uint64 view of the headers."""
        return self.rows[:, :HEADER_WORDS].view(np.uint64)

    @property
    def data(self) -> np.ndarray:
        """(k, 32, 64) mV view."""
        return self.rows[:, HEADER_WORDS:].reshape(len(self), N_TM, N_TM_PIX)

    def number(self, first: int) -> int:
        """Write readout numbers ``first, first + 1, ...`` into the headers; return the next one."""
        self.header[:, 0] = np.arange(first, first + len(self), dtype=np.uint64)
        return first + len(self)


class _Records(NamedTuple):
    """The per-record arrays the builder works on (a batch, or part of one)."""

    tack: np.ndarray
    slot: np.ndarray
    record: np.ndarray  # _RECORD
    cpu_ns: np.ndarray

    def part(self, sel: slice) -> "_Records":
        return _Records(*(a[sel] for a in self))


class EventBuilder:
    """Groups records into readouts by TACK; see the module docstring for the rules.

    ``add`` (a decoded batch), ``expire`` (timer) and ``flush`` (shutdown) return ``Published``.
    Per-slot ``packets``, ``records`` and ``last_seen`` (monotonic s, NaN = never) and ``counts``
    are read by the receiver for ``status`` and ``STATUS=``.
    """

    def __init__(self, settings: BuilderSettings, now: float) -> None:
        self.settings = s = settings
        self.counts = BuilderCounts()
        self.packets = np.zeros(N_TM, np.int64)
        self.records = np.zeros(N_TM, np.int64)
        self.last_seen = np.full(N_TM, np.nan)
        self.ref: int | None = None
        self._start = self._now = now
        self._heard = -np.inf  # when an expected module last sent
        self._expected = np.zeros(N_TM, bool)
        self._expected[list(s.expected_slots)] = True
        self._unexpected = ~self._expected
        # when a slot last counts as heard at the latest: expected slots at ``_start``
        self._floor = np.where(self._expected, now, -np.inf)
        self._quorum = min(2, len(s.expected_slots))
        cap = s.max_open_readouts
        # Open readouts: raw records per (readout, slot), converted to mV only when published.
        self._raw = np.zeros((cap, N_TM), _RECORD)
        self._present = np.zeros((cap, N_TM), bool)
        self._mark = np.zeros(cap * N_TM, np.intp)  # per (readout, slot): see ``_accept``
        self._anchor = np.zeros(cap, np.int64)
        self._deadline = np.zeros(cap)
        self._cpu_ns = np.zeros(cap, np.int64)
        self._arrived = np.zeros(cap, np.int64)  # arrival of the last batch that fed each
        self._batch_ns = 0  # arrival of the first datagram of the batch being added (UTC ns)
        self._seq = np.zeros(cap, np.int64)
        self._stale = np.zeros(cap, bool)  # open since before a TACK reset: may not move ``ref``
        self._stale_open = False  # whether any is (only open readouts are ever stale)
        self._created = 0
        self._open = OpenAnchors(cap)
        self._history = ClosedHistory(s.closed_history)
        # Closed readouts too far from ``ref`` for the history (a counter from before a reset, a
        # far-future TACK, a new counter before its reset is seen): only to know their copies.
        self._elsewhere = ClosedHistory(s.closed_history)

    @property
    def n_open(self) -> int:
        return len(self._open)

    def alive(self, now: float) -> np.ndarray:
        """Slots heard within ``module_timeout_s``. Expected slots count as heard at start, and
        again when data resumes after every expected module was silent that long: a camera
        coming back must not publish its first module's records alone, as if the rest were
        absent."""
        return now - np.fmax(self.last_seen, self._floor) < self.settings.module_timeout_s

    def _waived(self, now: float) -> np.ndarray:
        """Slots a readout does not wait for: not expected, or not ``alive``."""
        return ~self.alive(now) | self._unexpected

    def add(self, batch: RecordBatch, now: float, wall_ns: int | np.ndarray) -> Published:
        """Take a decoded batch that arrived at ``wall_ns`` (one UTC ns value, or one per
        datagram of the batch, indexed by ``batch.datagram``) and ``now``."""
        self._now = now
        if len(batch.datagram_slot):
            if np.count_nonzero(self._expected[batch.datagram_slot]):
                if now - max(self._heard, self._start) >= self.settings.module_timeout_s:
                    self._start = now  # the whole camera was silent: its return is a new start
                    self._floor[self._expected] = now
                self._heard = now
            self.packets += np.bincount(batch.datagram_slot, minlength=N_TM)
            self.records += np.bincount(batch.slot, minlength=N_TM)
            self.last_seen[batch.datagram_slot] = now
        if not len(batch):
            return Published.empty()
        if np.ndim(wall_ns) == 0:
            wall, self._batch_ns = wall_ns, int(wall_ns)
        else:
            wall, self._batch_ns = np.asarray(wall_ns)[batch.datagram], int(np.min(wall_ns))
        out: list[Published] = []
        record = np.ascontiguousarray(batch.words).view(_RECORD).reshape(-1)
        self._add(_Records(batch.tack, batch.slot, record, wall - batch.age_ns), now, out)
        return Published.concat(out)

    def expire(self, now: float) -> Published:
        """Publish readouts whose deadline passed or that no longer wait for an absent module."""
        self._now = now
        ids = self._open.ids
        due = (self._deadline[ids] <= now) | (self._present[ids] | self._waived(now)).all(axis=1)
        return self._publish(ids[due])

    def flush(self) -> Published:
        """Publish every open readout, partial ones included (shutdown)."""
        return self._publish(self._open.ids)

    def next_deadline(self) -> float | None:
        """When ``expire`` may next publish something (monotonic s), or None if nothing is open."""
        ids = self._open.ids
        if not len(ids):
            return None
        when = float(self._deadline[ids].min())
        dies = np.fmax(self.last_seen, self._floor) + self.settings.module_timeout_s
        soon = self._expected & (dies > self._now) & (dies < when)  # absent before ``when``
        if np.count_nonzero(soon):
            soon &= ~self._present[ids].all(axis=0)  # and waited for
        return float(dies[soon].min()) if np.count_nonzero(soon) else when

    def _add(self, rec: _Records, now: float, out: list[Published]) -> None:
        n, n_open = len(rec.tack), len(self._open)
        if n_open:
            ro = self._open.match(rec.tack, self.settings.readout_window_ns)
            lost = (ro < 0).nonzero()[0]
        else:
            ro, lost = np.full(n, -1), np.arange(n)
        n_lost = n_new = dup_closed = 0
        if len(lost):
            every = len(lost) == n
            cls = self._history.classify(rec.tack if every else rec.tack[lost],
                                         self.settings.readout_window_ns, self.ref,
                                         self.settings.tack_reset_ns)
            new = lost
            if cls is not None:
                # read the history now: opening readouts may evict into it
                dup_closed = self._history.holding(cls, rec.slot if every else rec.slot[lost])
                new = lost[cls == NEW]
            if len(new) and self.ref is not None and (self._history.len or self._elsewhere.len):
                new, dup_closed = self._seen_before(new, rec, dup_closed)
            n_new, n_lost = len(new), len(lost) - len(new)
            if n_new and not self._open_new(new, rec, ro, now, out):
                half = n // 2  # more new readouts than fit at once: take it in parts
                self._add(rec.part(slice(0, half)), now, out)
                self._add(rec.part(slice(half, None)), now, out)
                return
        fresh = n_new == n  # every record opened a readout: no slot of theirs is filled yet
        take, cell = self._accept(ro, n_lost, dup_closed, rec.slot, fresh)
        # (readout, slot) flattened: 1-D fancy indexing costs less than 2-D on every record
        self._raw.reshape(-1)[cell] = rec.record[take]
        self._present.reshape(-1)[cell] = True
        # if every open readout got its first record now, all of them were fed
        touched = self._open.ids if fresh and not n_open else self._open.among(ro[take])
        present = self._present[touched]
        self._arrived[touched] = self._batch_ns
        self._move_ref(touched, present)
        out.append(self._publish(touched[(present | self._waived(now)).all(axis=1)]))

    def _seen_before(self, new: np.ndarray, rec: _Records,
                     dup_closed: int) -> tuple[np.ndarray, int]:
        """Of records ``new``, those whose readout was published already though the history's
        rules cannot tell (far from ``ref``, so maybe a new counter; or kept ``_elsewhere``) are
        not new: duplicates (added to ``dup_closed``) if it held their slot, else late. Only an
        exact match counts: such a record is never late for being older than something
        forgotten. Returns the rest, in order. Costs nothing unless their TACKs reach a range
        that needs asking."""
        tack = rec.tack[new]
        window, span = self.settings.readout_window_ns, self.settings.tack_reset_ns
        lo, hi, there = int(tack.min()), int(tack.max()), self._elsewhere
        far_ones = self._history.len and (lo < self.ref - span or hi > self.ref + span)
        elsewhere = there.len and lo < there.high + window and hi > there.lowest - window
        if not (far_ones or elsewhere):
            return new, dup_closed
        known, dups = np.zeros(len(new), bool), 0
        if far_ones:
            far = np.flatnonzero(np.abs(tack - self.ref) > span)
            cls = self._history.lookup(tack[far], window, None)
            known[far[cls != NEW]] = True
            dups += self._history.holding(cls, rec.slot[new[far]])
        if elsewhere:
            cls = there.lookup(tack, window, None)
            cls[known] = NEW  # found in the history already
            known |= cls != NEW
            dups += there.holding(cls, rec.slot[new])
        if not np.count_nonzero(known):
            return new, dup_closed
        return new[~known], dup_closed + dups

    def _open_new(self, new: np.ndarray, rec: _Records, ro: np.ndarray, now: float,
                  out: list[Published]) -> bool:
        """Open readouts for records ``new`` and set their readout ids in ``ro``.

        False if more readouts would have to be open than ``max_open_readouts`` allows, even
        after evicting every open readout this batch feeds no record to.
        """
        every = len(new) == len(rec.tack)
        tack = rec.tack if every else rec.tack[new]
        order = tack.argsort(kind="stable")
        anchors, bounds = group(tack[order], self.settings.readout_window_ns)
        n, free = len(anchors), self._open.n_free
        if n > free:
            feeds = np.unique(ro[ro >= 0])
            if n > free + len(self._open) - len(feeds):
                return False
            out.append(self._evict(n - free, feeds))
        ids = self._open.open(anchors)
        first = np.minimum.reduceat(order, bounds[:-1])  # each readout's earliest-arrived record
        if not every:
            first, order = new[first], new[order]
        self._cpu_ns[ids] = rec.cpu_ns[first]
        self._present[ids] = False
        self._anchor[ids] = anchors
        self._deadline[ids] = now + self.settings.max_wait_s
        self._seq[ids] = self._created + first  # arrival order of each readout's first record
        self._created += len(rec.tack)
        ro[order] = ids.repeat(bounds[1:] - bounds[:-1])
        return True

    def _accept(self, ro: np.ndarray, n_lost: int, dup_closed: int, slot: np.ndarray,
                fresh: bool) -> tuple[np.ndarray | slice, np.ndarray]:
        """The records to store, and their flat (readout, slot) cells. Count the others: the
        ``n_lost`` that match no open readout are late, or duplicate (``dup_closed`` of them),
        and a record for a slot its readout already holds is a duplicate. ``fresh``: no
        record's cell can be filled already."""
        take: np.ndarray | slice = slice(None)
        if n_lost:
            take = (ro >= 0).nonzero()[0]
            self.counts.duplicate += dup_closed
            self.counts.late += n_lost - dup_closed
        cell = ro[take] * N_TM + slot[take]
        order = np.arange(len(cell))
        self._mark[cell] = order  # where a cell is written twice, one of the writes wins
        keep = self._mark[cell] == order
        empty = True if fresh else ~self._present.reshape(-1)[cell]
        keep &= empty
        if np.count_nonzero(keep) == len(cell):
            return take, cell
        keep[:] = False  # a duplicate: the first copy by arrival must be the one kept
        keep[np.unique(cell, return_index=True)[1]] = True
        keep &= empty
        self.counts.duplicate += len(cell) - int(np.count_nonzero(keep))
        return order[keep] if isinstance(take, slice) else take[keep], cell[keep]

    def _evict(self, n: int, keep: np.ndarray) -> Published:
        """Publish the ``n`` oldest open readouts early, except those in ``keep``."""
        ids = self._open.ids[~np.isin(self._open.ids, keep)]
        ids = ids[np.argsort(self._seq[ids], kind="stable")[:n]]
        self.counts.evicted += len(ids)
        return self._publish(ids)

    def _move_ref(self, touched: np.ndarray, present: np.ndarray) -> None:
        """Let readouts with a quorum of modules move ``ref``; a far drop is a TACK reset.
        ``touched``: open readouts in anchor order, ``present`` their rows.

        Readouts still open from before a reset are stale: as the modules' straddling packets
        fill them, they must not drag ``ref`` back to the old counter (and count more resets).
        """
        quorate = present.sum(axis=1) >= self._quorum
        if self._stale_open:
            quorate &= ~self._stale[touched]
        anchors = self._anchor[touched[quorate]]
        if not len(anchors):
            return
        top, span = int(anchors[-1]), self.settings.tack_reset_ns
        if self.ref is None or int(anchors[0]) >= self.ref - span:
            self.ref = top if self.ref is None else max(self.ref, top)
            return
        self.counts.tack_resets += 1
        # the old counter's readouts are now far from ``ref``; the new counter's, published
        # before the reset was seen, were kept far away and are now near
        self._history, self._elsewhere = self._elsewhere, self._history
        self.ref = int(anchors[anchors < self.ref - span][-1])
        self._history.focus(self.ref, span)
        stale = np.abs(self._open.anchors - self.ref) > span
        self._stale[self._open.ids] = stale
        self._stale_open = bool(stale.any())

    def _publish(self, ids: np.ndarray) -> Published:
        """Close readouts ``ids`` in the order their first records arrived: convert to mV, NaN
        the absent rows, fill the headers."""
        k = len(ids)
        if not k:
            return Published.empty()
        if k > 1:
            ids = ids[self._seq[ids].argsort()]
        present = self._present[ids]
        raw = self._raw[ids].view(">u2").reshape(k, N_TM, -1)  # 72 words per record
        complete = (present | self._unexpected).all(axis=1)
        n_modules = present.sum(axis=1)
        published = Published(np.empty((k, ROW_WORDS)), complete, n_modules, self._arrived[ids])
        records_to_mv(raw, published.data)
        if np.count_nonzero(present) < present.size:
            published.data[~present] = np.nan
        lowest = raw[np.arange(k), present.argmax(axis=1), :4]  # its TACK, 4 words
        cpu = np.maximum(self._cpu_ns[ids], 0)
        header = published.header
        header[:, 0] = 0
        header[:, 1] = np.ascontiguousarray(lowest).view(">u8")[:, 0]
        header[:, 2], header[:, 3] = np.divmod(cpu, _NS)
        n_complete = int(np.count_nonzero(complete))
        self.counts.complete += n_complete
        self.counts.incomplete += k - n_complete
        span = self.settings.tack_reset_ns
        far = self._history.remember(self._anchor[ids], present, self.ref, span)
        if far is not None:
            self._elsewhere.add(*far)
        self._open.close(ids)
        if self._stale_open:
            self._stale[ids] = False
            self._stale_open = bool(self._stale[self._open.ids].any())
        return published
