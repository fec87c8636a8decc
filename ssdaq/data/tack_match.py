"""TACK matching for the event builder: open readouts by anchor, new ones, closed ones.

Pure numpy over int64 TACKs, with no notion of slots being waited for or of publishing (that is
:mod:`ssdaq.data.event_builder`). A readout is known by its anchor, the TACK of its first record;
a record belongs to the readout whose anchor is nearest, if closer than the window. Readouts are
known by ids ``0 .. size - 1``, the rows of the builder's storage.
"""

import numpy as np

from ssdaq.data.readout import N_TM

NEW, LATE = -1, -2  # classes of records that match no open readout; >= 0: a history entry


class OpenAnchors:
    """The open readouts' ids sorted by anchor, and a stack of the free ids.

    Every call costs in proportion to the readouts open (or opened), never to ``size``.
    """

    def __init__(self, size: int) -> None:
        self.ids = np.empty(0, np.intp)
        self.anchors = np.empty(0, np.int64)
        self.n_free = size
        self._free = np.arange(size)
        self._mark = np.zeros(size, bool)  # scratch, all False between calls

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, tack: np.ndarray, window: int) -> np.ndarray:
        """Id of the open readout nearest each TACK if within ``window``, else -1. Some
        readout must be open.

        Only TACKs within ``window`` of the open anchors' span are looked up: under load, the
        records of a batch open new readouts past every open one (the partial readouts waiting
        for a lost packet are older), and that costs two comparisons, not a search among them.
        """
        near = (tack - self.anchors[-1] < window) & (self.anchors[0] - tack < window)
        k = np.count_nonzero(near)
        if k == len(tack):
            best, dist = nearest(self.anchors, tack)
            return np.where(dist < window, self.ids[best], -1)
        ro = np.full(len(tack), -1, np.intp)
        if k:
            some = near.nonzero()[0]
            best, dist = nearest(self.anchors, tack[some])
            ro[some] = np.where(dist < window, self.ids[best], -1)
        return ro

    def open(self, anchors: np.ndarray) -> np.ndarray:
        """Ids for new readouts of these sorted anchors, at most ``n_free`` of them."""
        n = len(anchors)
        self.n_free -= n
        ids = self._free[self.n_free : self.n_free + n].copy()
        self.ids = np.concatenate((self.ids, ids))
        self.anchors = np.concatenate((self.anchors, anchors))
        if len(self.ids) > n and self.anchors[-n - 1] > anchors[0]:  # not all past the others
            by_anchor = np.argsort(self.anchors)
            self.ids, self.anchors = self.ids[by_anchor], self.anchors[by_anchor]
        return ids

    def among(self, ids: np.ndarray) -> np.ndarray:
        """Each of ``ids`` (open readouts, which may repeat) once, in anchor order."""
        self._mark[ids] = True
        found = self.ids[self._mark[self.ids]]
        self._mark[found] = False
        return found

    def close(self, ids: np.ndarray) -> None:
        """Free the open readouts ``ids`` (each once)."""
        if len(ids) == len(self.ids):
            self.ids, self.anchors = self.ids[:0], self.anchors[:0]
        else:
            self._mark[ids] = True
            kept = ~self._mark[self.ids]
            self._mark[ids] = False
            self.ids, self.anchors = self.ids[kept], self.anchors[kept]
        self._free[self.n_free : self.n_free + len(ids)] = ids
        self.n_free += len(ids)


class ClosedHistory:
    """Bounded ring of closed readouts (anchor, modules present) for late/duplicate detection.

    ``low`` is the highest anchor the ring has forgotten: a record near or below it that matches
    nothing kept is late, so a readout is never opened a second time after its entry is gone.
    """

    def __init__(self, size: int) -> None:
        self.anchor = np.zeros(size, np.int64)
        self.present = np.zeros((size, N_TM), bool)
        self.size, self.len, self.pos = size, 0, 0
        self.high: int | None = None  # highest anchor added: newer records need no lookup
        self.lowest: int | None = None  # lowest anchor added
        self.low: int | None = None

    def focus(self, ref: int, span: int) -> None:
        """Take ``high`` from the entries within ``span`` of ``ref`` only (after a TACK reset,
        when entries of other counters stay behind): records above it need no lookup."""
        kept = self.anchor[: self.len]
        near = kept[np.abs(kept - ref) <= span]
        self.high = int(near.max()) if len(near) else ref - span

    def remember(self, anchor: np.ndarray, present: np.ndarray, ref: int | None,
                 span: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Add closed readouts, unless farther than ``span`` from ``ref`` (a far-future one,
        or one from before a TACK reset): those would only make later lookups wrong here, and
        are returned as (anchors, present) for the caller to keep elsewhere, if any."""
        top, left = int(anchor.max()), None
        if ref is not None and (top > ref + span or anchor.min() < ref - span):
            near = (anchor >= ref - span) & (anchor <= ref + span)
            left = anchor[~near], present[~near]
            anchor, present = anchor[near], present[near]
            if not len(anchor):
                return left
            top = int(anchor.max())
        self.add(anchor, present, top)
        return left

    def add(self, anchor: np.ndarray, present: np.ndarray, top: int | None = None) -> None:
        """Add closed readouts; ``top``: their highest anchor, if known."""
        if len(anchor) > self.size:
            self._forget(anchor[: -self.size])
            anchor, present = anchor[-self.size :], present[-self.size :]
        end = self.pos + len(anchor)
        if end <= self.size:  # no wrap: entries are in use up to ``pos``, or all of them
            at: slice | np.ndarray = slice(self.pos, end)
            if self.len == self.size:
                self._forget(self.anchor[at])
        else:
            at = np.arange(self.pos, end) % self.size
            forgotten = at[self.size - self.len :]  # the first writes may go to free entries
            if len(forgotten):
                self._forget(self.anchor[forgotten])
        self.anchor[at], self.present[at] = anchor, present
        self.pos = (self.pos + len(anchor)) % self.size
        self.len = min(self.size, self.len + len(anchor))
        top = int(anchor.max()) if top is None else top
        self.high = top if self.high is None else max(self.high, top)
        bottom = int(anchor.min())
        self.lowest = bottom if self.lowest is None else min(self.lowest, bottom)

    def _forget(self, anchor: np.ndarray) -> None:
        top = int(anchor.max())
        self.low = top if self.low is None else max(self.low, top)

    def classify(self, tack: np.ndarray, window: int, ref: int | None,
                 span: int) -> np.ndarray | None:
        """``NEW``, ``LATE`` or a history entry for TACKs matching no open readout; None if
        every one is ``NEW`` (the usual case: newer than anything the history holds).

        ``ref`` is the builder's reference TACK and ``span`` its ``tack_reset_ns``: a TACK
        farther than ``span`` below ``ref`` may be a counter reset, so it is never late.
        """
        if not self.len or self.high is None:  # (``high`` is set once anything was added)
            return None
        low = self.low
        if ref is not None and low is not None and low > ref + span:
            low = None  # forgotten before ``ref`` existed, and implausible now
        top = (self.high if low is None else max(self.high, low)) + window
        if int(tack.min()) >= top:
            return None
        below = tack < top
        if ref is not None:
            below &= tack >= ref - span
        ask = below.nonzero()[0]
        if not len(ask):
            return None
        cls = np.full(len(tack), NEW)
        cls[ask] = self.lookup(tack[ask], window, low)
        return cls

    def holding(self, cls: np.ndarray, slot: np.ndarray) -> int:
        """How many records of ``classify`` class ``cls`` and module ``slot`` found their history
        entry already holding their slot: duplicates of a published record."""
        closed = cls >= 0
        return int(np.count_nonzero(self.present[cls[closed], slot[closed]]))

    def lookup(self, tack: np.ndarray, window: int, low: int | None) -> np.ndarray:
        """Entry index per TACK within ``window`` of a kept anchor, ``LATE`` if not but not
        above ``low`` (+ window), else ``NEW``."""
        order = np.argsort(self.anchor[: self.len])
        best, dist = nearest(self.anchor[order], tack)
        late = np.full(len(tack), False) if low is None else tack < low + window
        return np.where(dist < window, order[best], np.where(late, LATE, NEW))


def seen_before(history: ClosedHistory, elsewhere: ClosedHistory, ref: int, tack: np.ndarray,
                slot: np.ndarray, new: np.ndarray, window: int,
                span: int) -> tuple[np.ndarray | None, int]:
    """Which of records ``new`` (TACKs ``tack``, slots ``slot[new]``), that match no open readout
    and that ``history.classify`` left ``NEW``, belong to a readout published already though the
    history's rules cannot tell: far from ``ref`` (so maybe a new counter's), or kept in
    ``elsewhere`` (the other counter's readouts, far-future ones).

    Returns the mask of those (None if there are none) and how many of them are duplicates (their
    readout held their slot; the others are late). Only an exact match counts: such a record is
    never late for being older than something forgotten. ``window``, ``span``: the builder's
    ``readout_window_ns`` and ``tack_reset_ns``. Costs nothing unless the TACKs reach a
    range that needs asking.
    """
    lo, hi = int(tack.min()), int(tack.max())
    far_ones = history.len and (lo < ref - span or hi > ref + span)
    there = elsewhere.len and elsewhere.high is not None and elsewhere.lowest is not None and (
        lo < elsewhere.high + window and hi > elsewhere.lowest - window)
    if not (far_ones or there):
        return None, 0
    known, dups = np.zeros(len(new), bool), 0
    if far_ones:
        far = np.flatnonzero(np.abs(tack - ref) > span)
        cls = history.lookup(tack[far], window, None)
        known[far[cls != NEW]] = True
        dups += history.holding(cls, slot[new[far]])
    if there:
        cls = elsewhere.lookup(tack, window, None)
        cls[known] = NEW  # found in the history already
        known |= cls != NEW
        dups += elsewhere.holding(cls, slot[new])
    return (known, dups) if np.count_nonzero(known) else (None, 0)


def nearest(sorted_values: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``sorted_values`` (non-empty) of the element nearest each ``x``, and |distance|.

    TACKs are clipped to 0..2**62 on decoding, so these int64 differences cannot overflow.
    """
    hi = np.searchsorted(sorted_values, x)
    np.minimum(hi, len(sorted_values) - 1, out=hi)
    lo = np.maximum(hi - 1, 0)
    d_lo = np.abs(x - sorted_values[lo])
    d_hi = np.abs(sorted_values[hi] - x)
    return np.where(d_lo <= d_hi, lo, hi), np.minimum(d_lo, d_hi)


def group(tack: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted TACKs into readouts: each anchored at its first TACK, spanning < window.

    Returns the anchors and the bounds: readout j holds ``tack[bounds[j] : bounds[j + 1]]``.
    Gaps >= window separate readouts; a cluster chained wider than the window (jitter close to
    the window) is split greedily in Python.
    """
    n = len(tack)
    cut = np.empty(n + 1, bool)  # True where a readout starts, and at the end
    cut[0] = cut[n] = True
    np.greater_equal(tack[1:] - tack[:-1], window, out=cut[1:n])
    bounds = cut.nonzero()[0]
    anchors = tack[bounds[:-1]]
    if not np.count_nonzero(tack[bounds[1:] - 1] - anchors >= window):
        return anchors, bounds
    anchor, firsts = int(tack[0]), [0]
    for i, t in enumerate(tack.tolist()):
        if t - anchor >= window:
            anchor = t
            firsts.append(i)
    bounds = np.array([*firsts, n])
    return tack[bounds[:-1]], bounds
