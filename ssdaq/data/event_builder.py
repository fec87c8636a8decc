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

Which modules a readout waits for is :mod:`ssdaq.data.module_presence`'s; the settings are
declared in :mod:`ssdaq.data.assembler_settings`.

At stop the caller may :meth:`~EventBuilder.hold` new readouts: records that would open one are
set aside instead (:meth:`~EventBuilder.take_held`), so the open readouts complete from what is
still arriving while the readouts not yet begun are handed on whole to a successor, which
starts with them (:meth:`~EventBuilder.add_held`) before it reads anything else.

Closed readouts too far from ``ref`` for the history's late/duplicate rules (the old counter's
after a reset, a far-future one, the new counter's before its reset is seen) are kept in a
second bounded history, ``_elsewhere``; the two swap roles at a reset, and
:func:`~ssdaq.data.tack_match.seen_before` finds copies of what either holds, so a copied
datagram is never published twice while its readout is remembered.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ssdaq.data import readout_rows
from ssdaq.data.assembler_settings import AssemblerSettings, check
from ssdaq.data.module_presence import ALL_SLOTS, ModulePresence
from ssdaq.data.readout import N_TM
from ssdaq.data.readout_rows import Published
from ssdaq.data.slowsignal import RECORD_BYTES, RecordBatch
from ssdaq.data.tack_match import NEW, ClosedHistory, OpenAnchors, group, seen_before

# A record as one opaque 144-byte scalar: fancy indexing then copies it whole, where a row of
# 72 words costs a strided copy per record.
_RECORD = np.dtype((np.void, RECORD_BYTES))


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
        return dict(vars(self))  # (``dataclasses.asdict`` deep-copies: 10x the cost, per batch)

    def add(self, other: "BuilderCounts") -> None:
        for name, n in vars(other).items():
            setattr(self, name, getattr(self, name) + n)


class Records(NamedTuple):
    """Records set aside while holding (see the module docstring), or a batch of any records:
    per record the TACK, the module slot, the 144 wire bytes (``_RECORD``) and the readout's CPU
    time estimate (UTC ns)."""

    tack: np.ndarray
    slot: np.ndarray
    record: np.ndarray
    cpu_ns: np.ndarray

    def part(self, sel: slice | np.ndarray) -> "Records":
        return Records(*(a[sel] for a in self))

    @classmethod
    def concat(cls, parts: "list[Records]") -> "Records":
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.intp), np.empty(0, _RECORD),
                       np.empty(0, np.int64))
        return cls(*(np.concatenate(arrays) for arrays in zip(*parts)))


class EventBuilder:
    """Groups records into readouts by TACK; see the module docstring for the rules.

    ``add`` (a decoded batch), ``expire`` (timer) and ``flush`` (shutdown) return ``Published``,
    numbered from their ``first_number``; ``take_counts`` hands over what was counted since its
    last call. ``expected_slots``: the modules a readout waits for. Per-slot ``packets``,
    ``records``, ``last_seen`` (monotonic s, NaN = never) and ``counts`` (totals): for ``status``.
    """

    def __init__(self, settings: AssemblerSettings, now: float,
                 expected_slots: tuple[int, ...] = ALL_SLOTS) -> None:
        check(settings)
        self.settings = s = settings
        self.expected_slots = expected_slots
        self.modules = m = ModulePresence(expected_slots, s.module_timeout_s, now)
        # the same arrays and method, for ``status``
        self.packets, self.records, self.last_seen, self.alive = (
            m.packets, m.records, m.last_seen, m.alive)
        self._counting = BuilderCounts()  # since the last ``take_counts``
        self._counted = BuilderCounts()  # taken before
        self.ref: int | None = None
        self._now = now
        self._quorum = min(2, len(expected_slots))
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
        self._held: list[Records] | None = None  # set aside while holding

    @property
    def n_open(self) -> int:
        return len(self._open)

    @property
    def counts(self) -> BuilderCounts:
        """Everything counted since the builder was made."""
        total = BuilderCounts(**vars(self._counted))
        total.add(self._counting)
        return total

    def take_counts(self) -> dict[str, int]:
        """What was counted since the last call (the names counted), each count handed over once."""
        taken = {name: n for name, n in vars(self._counting).items() if n}
        if taken:
            self._counted.add(self._counting)
            self._counting = BuilderCounts()
        return taken

    def add(self, batch: RecordBatch, now: float, wall_ns: int | np.ndarray,
            first_number: int = 0) -> Published:
        """Take a decoded batch that arrived at ``wall_ns`` (one UTC ns value, or one per
        datagram of the batch, indexed by ``batch.datagram``) and ``now``."""
        self._now = now
        self.modules.heard(batch.datagram_slot, batch.slot, now)
        if not len(batch.tack):  # (``len(batch)`` would call back into slowsignal)
            return Published.empty()
        if np.ndim(wall_ns) == 0:
            wall, self._batch_ns = wall_ns, int(wall_ns)
        else:
            wall, self._batch_ns = np.asarray(wall_ns)[batch.datagram], int(np.min(wall_ns))
        out: list[Published] = []
        record = np.ascontiguousarray(batch.words).view(_RECORD).reshape(-1)
        self._add(Records(batch.tack, batch.slot, record, wall - batch.age_ns), now, out)
        return _numbered(Published.concat(out), first_number)

    def hold(self) -> None:
        """From now on, set aside the records that would open a readout (see the module docstring)."""
        if self._held is None:
            self._held = []

    def take_held(self) -> Records:
        """The records set aside since :meth:`hold`, in arrival order; holding goes on."""
        held = Records.concat(self._held or [])
        if self._held is not None:
            self._held = []
        return held

    def add_held(self, held: Records, now: float, first_number: int = 0) -> Published:
        """Take records a predecessor set aside, as if they arrived now (before anything else)."""
        self._now = now
        if not len(held.tack):
            return Published.empty()
        self._batch_ns = int(held.cpu_ns.min())
        out: list[Published] = []
        self._add(held, now, out)
        return _numbered(Published.concat(out), first_number)

    def expire(self, now: float, first_number: int = 0) -> Published:
        """Publish readouts whose deadline passed or that no longer wait for an absent module."""
        self._now = now
        ids = self._open.ids
        due = self._deadline[ids] <= now
        if self.modules.newly_waived(now):  # (a readout fed a record was checked then)
            due |= (self._present[ids] | self.modules.waived(now)).all(axis=1)
        return _numbered(self._publish(ids[due]), first_number)

    def flush(self, first_number: int = 0) -> Published:
        """Publish every open readout, partial ones included (shutdown)."""
        return _numbered(self._publish(self._open.ids), first_number)

    def next_deadline(self) -> float | None:
        """When ``expire`` may next publish something (monotonic s), or None if nothing is open."""
        ids = self._open.ids
        if not len(ids):
            return None
        when = float(self._deadline[ids].min())
        dies = self.modules.absent_at()
        soon = self.modules.expected & (dies > self._now) & (dies < when)  # absent before ``when``
        if np.count_nonzero(soon):
            soon &= ~self._present[ids].all(axis=0)  # and waited for
        return float(dies[soon].min()) if np.count_nonzero(soon) else when

    def _add(self, rec: Records, now: float, out: list[Published]) -> None:
        n, n_open = len(rec.tack), len(self._open)
        if n_open:
            ro = self._open.match(rec.tack, self.settings.readout_window_ns)
            lost = (ro < 0).nonzero()[0]
        else:
            ro, lost = np.full(n, -1), np.arange(n)
        n_lost = n_new = dup_closed = 0
        if len(lost):
            every = len(lost) == n
            window = self.settings.readout_window_ns
            cls = self._history.classify(rec.tack if every else rec.tack[lost], window, self.ref,
                                         self.settings.tack_reset_ns)
            new = lost
            if cls is not None:
                # read the history now: opening readouts may evict into it
                dup_closed = self._history.holding(cls, rec.slot if every else rec.slot[lost])
                new = lost[cls == NEW]
            if len(new) and self.ref is not None and (self._history.len or self._elsewhere.len):
                known, dups = seen_before(self._history, self._elsewhere, self.ref, rec.tack[new],
                                          rec.slot, new, window, self.settings.tack_reset_ns)
                if known is not None:
                    new, dup_closed = new[~known], dup_closed + dups
            if len(new) and self._held is not None:
                self._held.append(rec.part(new))
                rest = np.setdiff1d(np.arange(n), new, assume_unique=True)
                if len(rest):
                    self._add(rec.part(rest), now, out)
                return
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
        out.append(self._publish(touched[(present | self.modules.waived(now)).all(axis=1)]))

    def _open_new(self, new: np.ndarray, rec: Records, ro: np.ndarray, now: float,
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
            self._counting.duplicate += dup_closed
            self._counting.late += n_lost - dup_closed
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
        self._counting.duplicate += len(cell) - int(np.count_nonzero(keep))
        return order[keep] if isinstance(take, slice) else take[keep], cell[keep]

    def _evict(self, n: int, keep: np.ndarray) -> Published:
        """Publish the ``n`` oldest open readouts early, except those in ``keep``."""
        ids = self._open.ids[~np.isin(self._open.ids, keep)]
        ids = ids[np.argsort(self._seq[ids], kind="stable")[:n]]
        self._counting.evicted += len(ids)
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
        self._counting.tack_resets += 1
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
        published = readout_rows.close(raw, present, self.modules.unexpected, self._cpu_ns[ids],
                                       self._arrived[ids])
        n_complete = int(np.count_nonzero(published.complete))
        self._counting.complete += n_complete
        self._counting.incomplete += k - n_complete
        span = self.settings.tack_reset_ns
        far = self._history.remember(self._anchor[ids], present, self.ref, span)
        if far is not None:
            self._elsewhere.add(*far)
        self._open.close(ids)
        if self._stale_open:
            self._stale[ids] = False
            self._stale_open = bool(self._stale[self._open.ids].any())
        return published


def _numbered(published: Published, first: int) -> Published:
    published.number(first)
    return published
