"""The TACK event builder, one test per failure mode: it keeps publishing and counts exactly."""

import numpy as np
import pytest

from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.event_builder import BuilderCounts, EventBuilder
from ssdaq.data.module_presence import ALL_SLOTS
from ssdaq.data.readout import SSREADOUT_BYTES, SSReadout
from ssdaq.data.readout_rows import Published
from ssdaq.data.slowsignal import ModuleMap, RecordBatch, decode, encode_records, ipv4_raw, to_batch
from ssdaq.simulators.tm import datagram, pattern_mv, source_address

PERIOD = 100_000_000  # 10 readouts/s, as the camera
T0 = 1_750_000_000 * 10**9
WALL = 1_760_000_000 * 10**9
CH = np.arange(64)
ALL = range(32)


def tack(k: int) -> int:
    return T0 + k * PERIOD


def packet(module: int, readouts, jitter: int = 0, tacks=None) -> tuple[int, bytes]:
    tacks = [tack(k) + jitter for k in readouts] if tacks is None else tacks
    return module, datagram(module, list(readouts), tacks)


def batch(*packets: tuple[int, bytes]) -> RecordBatch:
    modules = [m for m, _ in packets]
    senders = ipv4_raw([source_address(m) for m in modules])
    return decode(*to_batch([d for _, d in packets]), senders, ModuleMap())


def camera(readouts, modules=ALL) -> RecordBatch:
    return batch(*(packet(m, readouts) for m in modules))


def builder(expected_slots=ALL_SLOTS, **settings) -> EventBuilder:
    return EventBuilder(AssemblerSettings(**settings), now=0.0, expected_slots=expected_slots)


def readouts(pub: Published) -> list[SSReadout]:
    """Decode what would go on the wire, through the subscriber's own class."""
    assert pub.rows.shape[1] * 8 == SSREADOUT_BYTES
    return [SSReadout.from_bytes(row.tobytes()) for row in pub.rows]


def index_of(r: SSReadout) -> int:
    return round((r.time - T0) / PERIOD)


def assert_pattern(r: SSReadout, modules) -> None:
    """Rows of ``modules`` hold the simulator's pattern for this readout, every other row NaN."""
    k = index_of(r)
    for m in range(32):
        if m in modules:
            assert (r.data[m] == pattern_mv(m, k, CH)).all(), (m, k)
        else:
            assert np.isnan(r.data[m]).all(), (m, k)


def test_readouts_are_published_as_soon_as_every_module_arrived():
    b = builder()
    pub = b.add(camera(range(10)), now=0.1, wall_ns=WALL)
    assert len(pub) == 10 and pub.complete.all() and (pub.n_modules == 32).all()
    out = readouts(pub)
    assert [r.time for r in out] == [tack(k) for k in range(10)]
    for r in out:
        assert_pattern(r, ALL)
    assert b.counts.as_dict() == {"complete": 10, "incomplete": 0, "late": 0, "duplicate": 0,
                                  "evicted": 0, "tack_resets": 0}
    assert b.n_open == 0 and b.next_deadline() is None


def test_records_match_per_record_across_batches_and_packet_sizes():
    b = builder()
    assert not len(b.add(batch(*(packet(m, range(10)) for m in range(16))), 0.1, WALL))
    pub = b.add(batch(*(packet(m, range(5)) for m in range(16, 32))), 0.1, WALL)
    assert len(pub) == 5 and pub.complete.all()
    pub = Published.concat([pub, b.add(batch(*(packet(m, [k]) for m in range(16, 32)
                                               for k in range(5, 10))), 0.2, WALL)])
    assert len(pub) == 10 and pub.complete.all()
    for r in readouts(pub):
        assert_pattern(r, ALL)
    assert b.counts.complete == 10 and b.counts.late == b.counts.duplicate == 0


def test_readout_tack_is_that_of_the_lowest_slot_present():
    b = builder(expected_slots=(3, 5, 9))
    pub = b.add(batch(packet(9, [0], 3_000_000), packet(5, [0], -2_000_000),
                      packet(3, [0], 1_000_000)), 0.1, WALL)
    (r,) = readouts(pub)
    assert pub.complete.tolist() == [True] and r.time == tack(0) + 1_000_000
    assert_pattern(r, (3, 5, 9))


def test_tacks_closer_than_the_window_are_one_readout_and_farther_are_two():
    b = builder(readout_window_ns=10_000_000, expected_slots=(0, 1, 2))
    b.add(batch(packet(0, [0]), packet(1, [0], 9_999_999), packet(2, [0], 10_000_000)), 0.1, WALL)
    pub = b.flush()
    assert pub.n_modules.tolist() == [2, 1]
    assert pub.header[:, 1].tolist() == [tack(0), tack(0) + 10_000_000]


def test_missing_module_is_a_nan_row_once_the_deadline_passes():
    b = builder(max_wait_s=0.5)
    assert not len(b.add(camera(range(10), range(31)), now=1.0, wall_ns=WALL))
    assert b.next_deadline() == 1.5
    assert not len(b.expire(1.49))
    pub = b.expire(1.5)
    assert len(pub) == 10 and not pub.complete.any() and (pub.n_modules == 31).all()
    for r in readouts(pub):
        assert_pattern(r, range(31))
    assert b.counts.incomplete == 10 and b.counts.complete == 0


def test_late_record_joins_its_readout_while_it_is_open():
    b = builder(max_wait_s=0.5)
    b.add(camera(range(10), range(31)), now=0.1, wall_ns=WALL)
    pub = b.add(camera(range(10), [31]), now=0.5, wall_ns=WALL)
    assert len(pub) == 10 and pub.complete.all()
    assert b.counts.late == 0


def test_late_record_after_its_readout_closed_is_counted_late():
    b = builder(max_wait_s=0.5)
    b.add(camera(range(10), range(31)), now=0.1, wall_ns=WALL)
    assert len(b.expire(0.6)) == 10
    assert not len(b.add(camera(range(10), [31]), now=0.7, wall_ns=WALL))
    assert b.counts.late == 10 and b.counts.duplicate == 0 and b.n_open == 0


def bogus(module: int, readouts) -> tuple[int, bytes]:
    """A copy of a module's packet with other values (all words 0x8000: 0 mV)."""
    tacks = np.array([tack(k) for k in readouts])
    return module, encode_records(tacks, np.full((len(tacks), 64), 0x8000, np.uint16)).tobytes()


def test_duplicate_record_keeps_the_first_copy_across_batches():
    b = builder()
    b.add(camera(range(10), range(31)), now=0.1, wall_ns=WALL)
    pub = b.add(batch(bogus(5, range(10)), *(packet(31, [k]) for k in range(10))), 0.2, WALL)
    assert len(pub) == 10 and pub.complete.all()
    for r in readouts(pub):
        assert_pattern(r, ALL)
    assert b.counts.duplicate == 10


def test_duplicate_record_keeps_the_first_copy_within_one_batch():
    b = builder()
    pub = b.add(batch(*(packet(m, range(10)) for m in range(6)), bogus(5, range(10)),
                      *(packet(m, range(10)) for m in range(6, 32))), 0.1, WALL)
    assert len(pub) == 10
    for r in readouts(pub):
        assert_pattern(r, ALL)
    assert b.counts.duplicate == 10 and b.counts.late == 0


def test_duplicate_of_a_slot_in_a_closed_readout_is_a_duplicate_not_late():
    b = builder()
    b.add(camera(range(10)), now=0.1, wall_ns=WALL)
    assert not len(b.add(camera(range(10), [5]), now=0.2, wall_ns=WALL))
    assert b.counts.duplicate == 10 and b.counts.late == 0 and b.n_open == 0


def test_tack_counter_reset_starts_afresh_counted_once_and_nothing_late():
    b = builder()
    new_epoch = 1_000_000  # the counter restarts near 0
    tacks = [tack(k) if k < 25 else new_epoch + (k - 25) * PERIOD for k in range(40)]
    published = []
    for first in range(0, 40, 10):  # packets straddle the reset; modules arrive one by one
        for m in ALL:
            ks = range(first, first + 10)
            published += readouts(b.add(batch(packet(m, ks, tacks=[tacks[k] for k in ks])),
                                        now=0.1 * first, wall_ns=WALL))
    assert [r.time for r in published] == tacks
    assert all(len(r.modules_present) == 32 for r in published)
    assert b.counts.tack_resets == 1 and b.counts.late == 0 and b.counts.complete == 40


def test_copy_of_a_record_from_before_a_tack_reset_is_a_duplicate_after_it():
    b = builder()
    new_epoch = 1_000_000
    old = readouts(b.add(camera(range(3)), now=0.1, wall_ns=WALL))
    new = [packet(m, [0], tacks=[new_epoch]) for m in ALL]
    new = readouts(b.add(batch(*new), now=0.2, wall_ns=WALL))
    assert b.counts.tack_resets == 1 and len(old) == 3 and len(new) == 1
    copies = readouts(b.add(batch(packet(5, [1]), packet(6, [0])), now=0.3, wall_ns=WALL))
    copies += readouts(b.flush())
    assert copies == [] and b.counts.duplicate == 2 and b.counts.late == 0
    again = readouts(b.add(batch(packet(5, [0], tacks=[new_epoch])), now=0.4, wall_ns=WALL))
    assert again + readouts(b.flush()) == [] and b.counts.duplicate == 3  # the new counter's


def test_copy_of_a_far_future_record_is_a_duplicate():
    b = builder(max_wait_s=0.5)
    b.add(camera(range(2)), now=0.1, wall_ns=WALL)
    far = tack(1) + 100 * 10**9
    glitch = readouts(b.add(batch(packet(3, [2], tacks=[far])), now=0.2, wall_ns=WALL))
    glitch += readouts(b.expire(1.0))  # published alone at its deadline
    assert len(glitch) == 1 and list(glitch[0].modules_present) == [3]
    copy = readouts(b.add(batch(packet(3, [2], tacks=[far])), now=1.1, wall_ns=WALL))
    assert copy + readouts(b.flush()) == [] and b.counts.duplicate == 1


def test_one_far_future_tack_does_not_swallow_the_normal_stream():
    b = builder(max_wait_s=0.5)
    assert len(b.add(camera(range(10)), now=0.1, wall_ns=WALL)) == 10
    future = tack(10) + 86_400 * 10**9
    assert not len(b.add(batch(packet(7, [10], tacks=[future])), now=0.2, wall_ns=WALL))
    for first in (10, 20, 30):
        pub = b.add(camera(range(first, first + 10)), now=0.3, wall_ns=WALL)
        assert len(pub) == 10 and pub.complete.all()
    pub = b.expire(0.7)
    assert pub.header[:, 1].tolist() == [future] and pub.n_modules.tolist() == [1]
    assert b.counts.as_dict() == {"complete": 40, "incomplete": 1, "late": 0, "duplicate": 0,
                                  "evicted": 0, "tack_resets": 0}


def test_overflow_publishes_the_oldest_open_readout_early_and_counts_it():
    b = builder(max_open_readouts=4)
    published = []
    for k in range(10):  # module 31 is alive but silent: every readout waits for it
        published += readouts(b.add(camera([k], range(31)), now=0.1, wall_ns=WALL))
    assert [index_of(r) for r in published] == list(range(6))
    assert b.counts.evicted == 6 and b.counts.incomplete == 6 and b.n_open == 4
    assert [index_of(r) for r in readouts(b.flush())] == list(range(6, 10))
    assert b.counts.incomplete == 10 and b.n_open == 0


def test_batch_with_more_new_readouts_than_may_be_open_is_taken_in_parts():
    b = builder(max_open_readouts=4)
    pub = Published.concat([b.add(camera(range(10)), now=0.1, wall_ns=WALL), b.flush()])
    stored = int(pub.n_modules.sum())
    assert stored + b.counts.late + b.counts.duplicate == 320
    assert b.counts.evicted > 0 and b.n_open == 0


def test_flush_publishes_every_open_readout_partials_included():
    b = builder()
    b.add(camera(range(10), range(3)), now=0.1, wall_ns=WALL)
    b.add(camera(range(10, 12), [4]), now=0.1, wall_ns=WALL)
    pub = b.flush()
    assert [index_of(r) for r in readouts(pub)] == list(range(12))
    assert pub.n_modules.tolist() == [3] * 10 + [1] * 2 and b.n_open == 0
    assert b.next_deadline() is None


def test_cpu_time_is_utc_arrival_minus_the_tack_distance_to_the_datagram_end():
    b = builder()
    arrival = np.array([WALL + 5_000, WALL + 9_000])  # per datagram: module 0's came first
    pub = b.add(batch(packet(0, range(10)), packet(1, range(10))), now=0.1, wall_ns=arrival)
    b.add(camera(range(10), range(2, 32)), now=0.2, wall_ns=WALL + 10**9)
    pub = Published.concat([pub, b.flush()])
    for r in readouts(pub):
        expected = WALL + 5_000 - (9 - index_of(r)) * PERIOD
        assert (r.cpu_t_s, r.cpu_t_ns) == divmod(expected, 10**9)


def test_arrival_of_a_readout_is_that_of_the_last_batch_that_fed_it():
    """The receiver's build latency is bounded from it: the first datagram of the batch that
    completed a readout arrived no later than the readout's last record."""
    b = builder()
    arrival = np.array([WALL + 5_000, WALL + 9_000])
    assert not len(b.add(batch(packet(0, range(2)), packet(1, range(2))), now=0.1, wall_ns=arrival))
    pub = b.add(camera([0], range(2, 32)), now=0.2, wall_ns=WALL + 7 * 10**6)
    assert pub.arrived_ns.tolist() == [WALL + 7 * 10**6]  # readout 0: completed by the 2nd batch
    rest = b.flush()  # readout 1: fed by the first batch only, at its first datagram
    assert rest.arrived_ns.tolist() == [WALL + 5_000]
    assert Published.concat([pub, rest]).arrived_ns.tolist() == [WALL + 7 * 10**6, WALL + 5_000]


def test_numbers_rise_by_one_per_published_readout():
    b = builder()
    pub = b.add(camera(range(10)), now=0.1, wall_ns=WALL)
    assert pub.number(41) == 51
    assert [r.iro for r in readouts(pub)] == list(range(41, 51))
    pub = b.add(camera(range(10, 13)), now=0.2, wall_ns=WALL, first_number=51)
    assert [r.iro for r in readouts(pub)] == [51, 52, 53]


def test_record_older_than_the_remembered_history_is_late():
    b = builder(closed_history=2, expected_slots=(0, 1))
    for k in range(5):
        b.add(camera([k], (0, 1)), now=0.1, wall_ns=WALL)
    assert not len(b.add(camera([1], [0]), now=0.2, wall_ns=WALL))  # history keeps 3 and 4 only
    assert not len(b.add(camera([4], [0]), now=0.2, wall_ns=WALL))
    assert b.counts.late == 1 and b.counts.duplicate == 1 and b.n_open == 0


def test_wild_tacks_are_published_not_raised():
    b = builder(expected_slots=(0,))
    pub = b.add(batch(packet(0, [0, 1, 2], tacks=[0, 2**64 - 1, 2**63])), now=0.1, wall_ns=WALL)
    assert len(pub) + b.counts.duplicate + b.counts.late == 3 and b.n_open == 0
    assert pub.header[0, 1] == 0


def test_batch_of_only_rejected_datagrams_publishes_nothing():
    b = builder()
    bad = decode(*to_batch([b"", b"x" * 10]), ipv4_raw(["127.0.0.100"] * 2), ModuleMap())
    assert not len(b.add(bad, now=0.1, wall_ns=WALL))
    assert b.counts == BuilderCounts() and b.packets.sum() == 0 and b.n_open == 0


@pytest.mark.parametrize("settings", [
    {"readout_window_ns": 0}, {"max_open_readouts": 0}, {"max_wait_s": 0},
    {"module_timeout_s": -1}, {"expected_slots": ()}, {"expected_slots": (32,)},
    {"tack_reset_ns": 2**63},
])
def test_bad_settings_are_rejected(settings):
    with pytest.raises(ValueError):
        builder(**settings)


# ------------------------------------------------------------------ hand-over at stop


def test_holding_completes_begun_readouts_and_sets_aside_the_rest_for_a_successor() -> None:
    old = builder()
    assert not len(old.add(camera([0, 1], range(20)), 0.0, WALL))  # readouts 0, 1 begun
    old.hold()
    # the other 12 modules' datagrams hold readouts 0..3: 0 and 1 complete, 2 and 3 are set aside
    done = readouts(old.add(camera([0, 1, 2, 3], range(20, 32)), 0.01, WALL, first_number=7))
    assert [(r.iro, index_of(r), len(r.modules_present)) for r in done] == [(7, 0, 32), (8, 1, 32)]
    late = old.add(camera([1], [5]), 0.02, WALL)  # a copy of a record already published
    assert not len(late) and old.counts.duplicate == 1 and old.n_open == 0
    held = old.take_held()
    assert len(held.tack) == 2 * 12 and not len(old.take_held().tack)

    new = builder()
    assert not len(new.add_held(held, 1.0, first_number=9))
    got = readouts(new.add(camera([2, 3, 4], range(20)), 1.01, WALL, first_number=9))
    assert [(r.iro, index_of(r), len(r.modules_present)) for r in got] == [(9, 2, 32), (10, 3, 32)]
    for r in done + got:
        assert_pattern(r, range(32))
    assert new.n_open == 1  # readout 4: 20 modules so far
