"""The loss ledger's bookkeeping per process: restarts add entries, deltas are never negative."""

import numpy as np

from ssdaq.receivers.writer_ledger import Ledger

S = 10**9


def status(pid: int, uptime_s: float, **counters: int) -> dict:
    return {"pid": pid, "uptime_s": uptime_s, "counters": counters}


def by(rows: np.ndarray) -> dict:
    return {(int(r["pid"]), r["counter"].decode()): (int(r["at_open"]), int(r["at_close"]),
                                                     int(r["delta"]), bool(r["exact"]))
            for r in rows}


def test_a_restart_inside_the_interval_is_a_second_process_counting_from_zero() -> None:
    ledger = Ledger(now_ns=100 * S)
    ledger.observe("readout", status(7, 50.0, late=3, received=10), bound=True, now_ns=100 * S)
    ledger.observe("readout", status(7, 52.0, late=5, received=20), now_ns=102 * S)
    # restarted at 103 s: a new pid, counters from 0 again
    ledger.observe("readout", status(9, 1.0, late=1, received=4), now_ns=104 * S)
    ledger.observe("readout", status(9, 3.0, late=2, received=8), bound=True, now_ns=106 * S)
    rows, gaps = ledger.rows()
    assert by(rows) == {
        (7, "late"): (3, 5, 2, False), (7, "received"): (10, 20, 10, False),  # its end unseen
        (9, "late"): (0, 2, 2, True), (9, "received"): (0, 8, 8, True),
    }
    assert (rows["delta"] >= 0).all() and len(gaps) == 0
    assert {r["kind"].decode() for r in rows} == {"loss", "info"}


def test_the_same_pid_with_a_shorter_uptime_is_a_new_process_too() -> None:
    ledger = Ledger(now_ns=100 * S)
    ledger.observe("trigger", status(7, 50.0, received=10), bound=True, now_ns=100 * S)
    ledger.observe("trigger", status(7, 2.0, received=3), bound=True, now_ns=104 * S)
    rows = ledger.rows()[0]
    assert [(r["at_open"], r["at_close"], r["delta"], r["exact"]) for r in rows] == [
        (10, 10, 0, 0), (0, 3, 3, 1)], "the old process keeps its count, the new one from 0"


def test_the_next_interval_starts_where_this_one_ended_and_drops_the_silent() -> None:
    ledger = Ledger(now_ns=100 * S)
    ledger.observe("readout", status(7, 50.0, late=3), bound=True, now_ns=100 * S)
    ledger.observe("teldata", status(8, 50.0, polls=1), bound=True, now_ns=100 * S)
    ledger.observe("readout", status(7, 60.0, late=4), bound=True, now_ns=110 * S)
    ledger.observe("teldata", None, bound=True)  # did not answer at the bound
    ledger.gap("iro", 5, 9, 105 * S)
    assert ledger.rows()[1].tolist() == [(b"iro", b"gap", 5, 9, 3, 105 * S)]
    nxt = ledger.next(now_ns=110 * S)
    assert list(nxt.processes) == ["readout"] and nxt.gaps == []
    nxt.observe("readout", status(7, 70.0, late=6), bound=True, now_ns=120 * S)
    assert by(nxt.rows()[0]) == {(7, "late"): (4, 6, 2, True)}


def test_a_receiver_first_seen_late_in_the_interval_is_not_exact() -> None:
    ledger = Ledger(now_ns=100 * S)
    ledger.observe("readout", status(7, 500.0, late=30), now_ns=105 * S)  # up before, silent
    ledger.observe("readout", status(7, 505.0, late=31), bound=True, now_ns=110 * S)
    assert by(ledger.rows()[0]) == {(7, "late"): (30, 31, 1, False)}
