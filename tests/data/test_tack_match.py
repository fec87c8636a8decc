"""TACK matching helpers: nearest anchors, grouping into readouts, the closed-readout history."""

import numpy as np

from ssdaq.data.readout import N_TM
from ssdaq.data.tack_match import LATE, NEW, ClosedHistory, OpenAnchors, group, nearest

WINDOW = 10


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def modules(*slots: int) -> np.ndarray:
    present = np.zeros(N_TM, bool)
    present[list(slots)] = True
    return present


def history(size: int, *anchors: int) -> ClosedHistory:
    h = ClosedHistory(size)
    h.add(ints(*anchors), np.array([modules(a % N_TM) for a in anchors]).reshape(-1, N_TM))
    return h


def test_nearest_picks_the_closer_neighbour_and_the_lower_on_a_tie():
    best, dist = nearest(ints(10, 20, 40), ints(0, 14, 16, 15, 100, 30, 20))
    assert best.tolist() == [0, 0, 1, 0, 2, 1, 1]
    assert dist.tolist() == [10, 4, 4, 5, 60, 10, 0]


def test_group_splits_sorted_tacks_at_gaps_of_the_window():
    anchors, bounds = group(ints(0, 5, 20, 29, 50), WINDOW)
    assert anchors.tolist() == [0, 20, 50]
    assert bounds.tolist() == [0, 2, 4, 5]


def test_group_splits_a_chain_wider_than_the_window_from_each_anchor():
    anchors, bounds = group(ints(0, 6, 12, 18, 24, 40), WINDOW)
    assert anchors.tolist() == [0, 12, 24, 40]
    assert bounds.tolist() == [0, 2, 4, 5, 6]


def test_group_of_one_tack_is_one_readout():
    anchors, bounds = group(ints(7), WINDOW)
    assert anchors.tolist() == [7] and bounds.tolist() == [0, 1]


def test_history_finds_the_entry_within_the_window_and_newer_tacks_are_new():
    h = history(8, 100, 200, 300)
    cls = h.classify(ints(205, 295, 105, 150, 1000), WINDOW, ref=300, span=10_000)
    assert h.anchor[cls[:3]].tolist() == [200, 300, 100]
    assert cls[3:].tolist() == [NEW, NEW]
    assert h.classify(ints(310, 1000), WINDOW, ref=300, span=10_000) is None  # all new


def test_history_counts_records_whose_slot_its_entry_already_holds():
    h = history(8, 100, 201)  # entry of 100 holds slot 4, that of 201 slot 9
    tack, slot = ints(101, 99, 202, 203, 500), np.array([4, 5, 9, 4, 4])
    assert h.holding(h.classify(tack, WINDOW, ref=201, span=10_000), slot) == 2


def test_record_near_a_forgotten_readout_is_late_not_new():
    h = history(2, 100, 200, 300)  # 100 is pushed out of the ring
    assert h.low == 100 and h.len == 2
    cls = h.classify(ints(100, 50, 250, 305), WINDOW, ref=300, span=10_000)
    assert cls[:3].tolist() == [LATE, LATE, NEW]
    assert h.anchor[cls[3]] == 300


def test_adding_more_readouts_than_fit_keeps_the_newest():
    h = history(2, 100, 200, 300, 400)
    assert sorted(h.anchor[: h.len].tolist()) == [300, 400]
    assert h.low == 200 and h.high == 400


def test_focus_leaves_other_counters_out_of_the_lookup_bound():
    h = history(8, 100, 200, 10**12)  # 10**12: a far-future readout
    assert h.high == 10**12
    h.focus(ref=150, span=1_000)
    assert h.high == 200
    assert h.classify(ints(10_000), WINDOW, ref=150, span=1_000) is None  # no lookup needed
    h.focus(ref=10**9, span=1_000)  # nothing near: nothing to look up above ref - span
    assert h.high == 10**9 - 1_000


def test_tack_far_below_ref_may_be_a_reset_and_is_never_late():
    h = history(1, 100, 200)  # 100 is forgotten: records up to it (+ window) are late
    cls = h.classify(ints(95, 105), WINDOW, ref=10_000, span=9_900)  # 95 is below ref - span
    assert cls.tolist() == [NEW, LATE]
    assert h.classify(ints(95), WINDOW, ref=10_000, span=9_900) is None


def test_ring_forgets_the_oldest_readouts_as_it_wraps():
    h = history(3, 100, 200)
    h.add(ints(300, 400), np.array([modules(1), modules(2)]))  # wraps: 100 is overwritten
    assert sorted(h.anchor[: h.len].tolist()) == [200, 300, 400] and h.low == 100
    h.add(ints(500), np.array([modules(3)]))
    assert sorted(h.anchor[: h.len].tolist()) == [300, 400, 500] and h.low == 200
    assert h.high == 500
    entry = h.classify(ints(401), WINDOW, ref=500, span=10_000)
    assert h.present[entry[0]].nonzero()[0].tolist() == [2]


def test_history_does_not_remember_readouts_far_from_ref_but_hands_them_back():
    h = ClosedHistory(8)
    present = np.array([modules(1), modules(2), modules(3), modules(4)])
    left = h.remember(ints(100, 5_000, 200, -4_000), present, ref=150, span=1_000)
    assert sorted(h.anchor[: h.len].tolist()) == [100, 200]
    assert left[0].tolist() == [5_000, -4_000] and (left[1] == present[[1, 3]]).all()
    assert h.remember(ints(9_000), np.array([modules(1)]), ref=None, span=1_000) is None
    assert h.len == 3 and h.high == 9_000


def test_open_anchors_match_the_nearest_within_the_window_in_any_opening_order():
    index = OpenAnchors(4)
    a = index.open(ints(200, 300))
    b = index.open(ints(100))  # below the others: still found
    assert index.anchors.tolist() == [100, 200, 300] and index.n_free == 1
    ro = index.match(ints(104, 296, 205, 150, 400), WINDOW)
    assert ro.tolist() == [b[0], a[1], a[0], -1, -1]


def test_open_anchors_reuse_closed_ids_and_report_each_fed_id_once():
    index = OpenAnchors(3)
    ids = index.open(ints(10, 20, 30))
    assert sorted(ids.tolist()) == [0, 1, 2] and index.n_free == 0
    assert index.among(np.r_[ids[2], ids[0], ids[2]]).tolist() == [ids[0], ids[2]]
    index.close(np.r_[ids[1]])
    assert index.ids.tolist() == [ids[0], ids[2]] and index.anchors.tolist() == [10, 30]
    assert index.open(ints(40)).tolist() == [ids[1]]
    index.close(index.ids)
    assert len(index) == 0 and index.n_free == 3


def test_open_anchors_match_what_a_search_among_all_of_them_finds():
    # match() looks up only the TACKs near the open anchors' span: the same answer as a search
    rng = np.random.default_rng(3)
    for _ in range(200):
        index = OpenAnchors(64)
        anchors = np.unique(rng.integers(0, 2_000, rng.integers(1, 20)))
        ids = index.open(anchors)
        tack = rng.integers(-100, 2_100, rng.integers(1, 50))
        best, dist = nearest(anchors, tack)
        assert index.match(tack, WINDOW).tolist() == np.where(dist < WINDOW, ids[best], -1).tolist()
    index = OpenAnchors(4)
    a = index.open(ints(100, 200))
    edge = ints(100 - WINDOW, 100 - WINDOW + 1, 200 + WINDOW - 1, 200 + WINDOW, 10**15)
    assert index.match(edge, WINDOW).tolist() == [-1, a[0], a[1], -1, -1]
