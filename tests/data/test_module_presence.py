"""Which modules a readout waits for (:mod:`ssdaq.data.module_presence`), through the builder
that asks: an absent module is not waited for, a returning camera is waited for whole."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdaq.data.module_presence import ModulePresence, describe_slots
from tests.data.test_event_builder import (
    WALL,
    assert_pattern,
    batch,
    builder,
    camera,
    packet,
    readouts,
)


def test_silent_module_is_absent_after_the_timeout_and_rejoins_when_it_sends():
    b = builder(max_wait_s=10.0, module_timeout_s=2.0)
    b.add(camera(range(10), range(31)), now=1.0, wall_ns=WALL)
    assert b.next_deadline() == 2.0  # module 31 counts as alive until 2 s after start
    assert b.alive(1.9)[31] and not b.alive(2.0)[31]
    pub = b.expire(2.0)
    assert len(pub) == 10 and (pub.n_modules == 31).all()
    pub = b.add(camera(range(10, 20), range(31)), now=2.5, wall_ns=WALL)
    assert len(pub) == 10 and (pub.n_modules == 31).all()  # not waited for
    assert not len(b.add(camera(range(20, 30), [31]), now=3.0, wall_ns=WALL))
    assert b.alive(3.0)[31]
    pub = b.add(camera(range(20, 30), range(31)), now=3.1, wall_ns=WALL)
    assert len(pub) == 10 and pub.complete.all()
    assert b.counts.incomplete == 20 and b.counts.complete == 10


def test_camera_back_from_idle_waits_for_every_module_again():
    b = builder(max_wait_s=10.0, module_timeout_s=2.0)
    b.add(camera(range(10)), now=1.0, wall_ns=WALL)
    assert not b.alive(5.0).any()  # all silent: an idle camera
    assert not len(b.add(camera(range(10, 20), [0]), now=100.0, wall_ns=WALL))
    assert b.alive(100.0).all()
    pub = b.add(camera(range(10, 20), range(1, 32)), now=100.1, wall_ns=WALL)
    assert len(pub) == 10 and pub.complete.all()
    assert not len(b.add(camera(range(20, 30), range(31)), now=101.0, wall_ns=WALL))
    pub = b.expire(102.1)  # module 31 stayed silent: absent 2 s after it was last heard
    assert len(pub) == 10 and (pub.n_modules == 31).all()


def test_expected_slots_are_the_only_modules_waited_for():
    b = builder(expected_slots=(0, 1))
    pub = b.add(camera(range(10), (0, 1)), now=0.1, wall_ns=WALL)
    assert len(pub) == 10 and pub.complete.all()
    for r in readouts(pub):
        assert_pattern(r, (0, 1))


def test_per_slot_packets_records_and_last_seen_are_kept():
    b = builder()
    b.add(batch(packet(3, range(10)), packet(3, range(10, 15)), packet(7, [0])), 0.25, WALL)
    assert b.packets[3] == 2 and b.records[3] == 15 and b.packets[7] == 1 and b.records[7] == 1
    assert b.last_seen[3] == 0.25 and np.isnan(b.last_seen[0])
    assert b.packets.sum() == 3


def test_a_module_back_and_silent_again_between_two_timers_is_no_longer_waited_for():
    # expire() checks open readouts against the absent modules only when one became absent
    # since it last looked: a module heard in between must count as present until then
    b = builder(max_wait_s=10.0, module_timeout_s=1.0)
    b.add(camera(range(10), range(31)), now=0.1, wall_ns=WALL)
    b.add(camera(range(10, 20), range(31)), now=0.9, wall_ns=WALL)
    assert len(b.expire(1.0)) == 20  # module 31 absent
    assert len(b.add(camera(range(20, 30)), now=1.5, wall_ns=WALL)) == 10  # it is back
    assert not len(b.add(camera(range(30, 40), range(31)), now=1.6, wall_ns=WALL))
    assert b.next_deadline() == 2.5  # ... and waited for until silent for a second again
    pub = b.expire(2.5)
    assert len(pub) == 10 and (pub.n_modules == 31).all()
    assert b.n_open == 0


def test_the_slots_a_journal_record_names_are_runs():
    assert describe_slots([5]) == "module 5"
    assert describe_slots(list(range(32))) == "modules 0-31"
    assert describe_slots([8, 0, 2, 1, 5, 7]) == "modules 0-2, 5, 7-8"
    assert describe_slots([3, 9]) == "modules 3, 9"


# a step: (seconds later, slots heard then; empty: only asked)
STEPS = st.lists(st.tuples(st.floats(0.0, 3.0), st.lists(st.integers(0, 31), max_size=5)),
                 max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(0, 31), min_size=1), st.floats(0.1, 2.0), STEPS)
def test_absent_expected_is_always_what_alive_says(expected, timeout, steps) -> None:
    """The absent list is kept between calls, and never differs from working it out afresh:
    whatever is heard when, at and around every timeout, a camera going silent and coming back."""
    now = 1000.0
    presence = ModulePresence(tuple(sorted(expected)), timeout, now)
    for later, slots in steps:
        now += later
        if slots:
            heard = np.array(slots, np.intp)
            presence.heard(heard, heard, now)
        # now, then the moments a slot times out (and a hair before), in time order
        deaths = presence.absent_at()[presence.expected]
        for t in [now, *sorted({*deaths[deaths >= now], *np.nextafter(deaths[deaths > now], 0)})]:
            fresh = np.flatnonzero(presence.expected & ~presence.alive(t)).tolist()
            assert presence.absent_expected(t) == fresh, t
        presence.absent_expected(now)  # back to now for the next step
