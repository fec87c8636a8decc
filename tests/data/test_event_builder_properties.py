"""Property: whatever the order, losses, duplicates and timing, every record given to the builder
is published exactly once, at its module's row with its exact values, or counted late/duplicate;
also when the TACK counter resets or jumps far ahead."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.event_builder import EventBuilder
from ssdaq.data.readout_rows import Published
from ssdaq.data.slowsignal import ModuleMap, decode, ipv4_raw, to_batch
from ssdaq.simulators.tm import datagram, pattern_mv, source_address

PERIOD = 100_000_000
WINDOW = 10_000_000
T0 = 1_750_000_000 * 10**9
CH = np.arange(64)


def cut_into_packets(draw: st.DrawFn, n_mod: int, n_ro: int) -> list[tuple[int, list[int]]]:
    """(module, readout indices): each module's readouts cut into packets of 1..10 records."""
    packets = []
    for m in range(n_mod):
        k = 0
        while k < n_ro:
            size = draw(st.integers(1, 10))
            packets.append((m, list(range(k, min(k + size, n_ro)))))
            k += size
    return packets


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    n_mod = draw(st.integers(1, 5))
    n_ro = draw(st.integers(1, 12))
    jitter = draw(st.lists(st.integers(-WINDOW // 2 + 1, WINDOW // 2 - 1),
                           min_size=n_mod * n_ro, max_size=n_mod * n_ro))
    packets = cut_into_packets(draw, n_mod, n_ro)
    lost = draw(st.lists(st.booleans(), min_size=len(packets), max_size=len(packets)))
    sent = [p for p, gone in zip(packets, lost) if not gone]
    sent += draw(st.lists(st.sampled_from(packets), max_size=4))  # duplicated packets
    sent += [(m, None) for m in draw(st.lists(st.integers(0, n_mod - 1), max_size=2))]  # bad size
    sent = draw(st.permutations(sent))
    cuts = sorted(draw(st.lists(st.integers(0, len(sent)), max_size=6)))
    steps = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)])]
    return {
        "n_mod": n_mod, "jitter": np.array(jitter).reshape(n_mod, max(n_ro, 1)), "steps": steps,
        "advance": draw(st.lists(st.floats(0, 1.5), min_size=len(steps), max_size=len(steps))),
        "expire": draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps))),
        "max_open": draw(st.sampled_from([1, 2, 3, 8, 1000])),
        "history": draw(st.sampled_from([1, 2, 5, 4096])),
    }


def to_datagram(m: int, ks: list[int] | None, jitter: np.ndarray) -> bytes:
    if ks is None:
        return b"\0" * 100
    return datagram(m, ks, [T0 + k * PERIOD + int(jitter[m, k]) for k in ks])


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_record_is_published_once_with_its_values_or_counted(sc):
    b = EventBuilder(AssemblerSettings(
        readout_window_ns=WINDOW, max_wait_s=0.5, module_timeout_s=2.0,
        max_open_readouts=sc["max_open"], closed_history=sc["history"],
    ), now=0.0, expected_slots=tuple(range(sc["n_mod"])))
    out, now, given_records, bad = [], 0.0, 0, 0
    for step, advance, expire in zip(sc["steps"], sc["advance"], sc["expire"]):
        now += advance
        dgs = [to_datagram(m, ks, sc["jitter"]) for m, ks in step]
        senders = ipv4_raw([source_address(m) for m, _ in step])
        given_records += sum(len(ks) for _, ks in step if ks is not None)
        records = decode(*to_batch(dgs), senders, ModuleMap())
        bad += sum(records.rejected.values())
        out.append(b.add(records, now, 10**18))
        if expire:
            out.append(b.expire(now))
    out.append(b.flush())
    pub = Published.concat(out)

    seen = set()
    for tack, data, n_modules, complete in zip(pub.header[:, 1], pub.data, pub.n_modules,
                                               pub.complete):
        k = round((int(tack) - T0) / PERIOD)
        present = np.flatnonzero(~np.isnan(data).all(axis=1))
        assert len(present) == n_modules >= 1
        assert complete == (n_modules == sc["n_mod"])
        assert int(tack) == T0 + k * PERIOD + sc["jitter"][present[0], k]  # the lowest slot's
        for m in present:
            assert (data[m] == pattern_mv(m, k, CH)).all()
            assert (m, k) not in seen
            seen.add((m, k))
    counts = b.counts
    assert bad == sum(ks is None for step in sc["steps"] for _, ks in step)
    assert len(seen) + counts.late + counts.duplicate == given_records
    assert counts.complete + counts.incomplete == len(pub)
    assert b.n_open == 0


@st.composite
def jumpy_scenarios(draw: st.DrawFn) -> dict:
    """Readouts whose TACKs mostly step on, but may fall back to near 0 (a counter reset, maybe
    the same value twice) or leap far ahead; each module's records in packets of 1..10, some
    lost, in any order."""
    n_mod, n_ro = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    tacks, t = [], T0
    for _ in range(n_ro):
        kind = draw(st.sampled_from(["next", "next", "next", "reset", "far"]))
        if kind == "next":
            t += PERIOD
        elif kind == "reset":
            t = draw(st.integers(0, 3)) * PERIOD
        else:
            t += draw(st.integers(11, 1000)) * 10**9
        tacks.append(t)
    packets = cut_into_packets(draw, n_mod, n_ro)
    history = draw(st.sampled_from([1, 4096]))
    sent = [p for p in packets if not draw(st.booleans())]
    if history > n_ro:
        # Copies of packets, only where the closed history holds every readout: a readout far
        # from the reference (another counter) that was forgotten cannot be told late, so a copy
        # of one of its records would open it again.
        sent += draw(st.lists(st.sampled_from(packets), max_size=4))
    sent = draw(st.permutations(sent))
    cuts = sorted(draw(st.lists(st.integers(0, len(sent)), max_size=5)))
    return {
        "n_mod": n_mod, "tacks": tacks,
        "steps": [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)])],
        "max_open": draw(st.sampled_from([1, 3, 1000])),
        "history": history,
    }


@settings(max_examples=200, deadline=None)
@given(jumpy_scenarios())
def test_every_record_is_published_once_or_counted_across_tack_resets_and_jumps(sc):
    b = EventBuilder(AssemblerSettings(
        readout_window_ns=WINDOW, max_open_readouts=sc["max_open"],
        closed_history=sc["history"],
    ), now=0.0, expected_slots=tuple(range(sc["n_mod"])))
    out, given_records = [], 0
    for i, step in enumerate(sc["steps"]):
        dgs = [datagram(m, ks, [sc["tacks"][k] for k in ks]) for m, ks in step]
        senders = ipv4_raw([source_address(m) for m, _ in step])
        given_records += sum(len(ks) for _, ks in step)
        out.append(b.add(decode(*to_batch(dgs), senders, ModuleMap()), 0.1 * i, 10**18))
    out.append(b.flush())
    pub = Published.concat(out)

    readout_of = [{pattern_mv(m, k, 0): k for k in range(len(sc["tacks"]))}
                  for m in range(sc["n_mod"])]
    seen = set()
    for data, n_modules in zip(pub.data, pub.n_modules):
        present = np.flatnonzero(~np.isnan(data).all(axis=1))
        assert len(present) == n_modules >= 1
        for m in present:
            k = readout_of[m][data[m, 0]]
            assert (data[m] == pattern_mv(m, k, CH)).all()
            assert (m, k) not in seen
            seen.add((m, k))
    counts = b.counts
    assert len(seen) + counts.late + counts.duplicate == given_records
    assert counts.complete + counts.incomplete == len(pub)
    assert b.n_open == 0
