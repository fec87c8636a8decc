"""Recent latencies: the ring keeps exactly the last values, however they arrive."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdaq.receivers.readout_latency import LatencyWindow, _quantiles


def test_nothing_yet_is_a_count_of_zero() -> None:
    assert LatencyWindow(10).summary() == {"count": 0}


def test_summary_covers_exactly_the_last_size_values_across_wraps() -> None:
    rng = np.random.default_rng(1)
    window, everything = LatencyWindow(100), []
    for n in [3, 50, 97, 1, 250, 0, 42]:  # chunks that wrap the ring, and one larger than it
        values = rng.integers(1, 10**9, n)
        window.add(values)
        everything.extend(values.tolist())
        last = np.array(everything[-100:]) / 1e6
        p50, p99, top = np.percentile(last, [50, 99, 100])
        assert window.summary() == {"count": len(last), "p50_ms": round(p50, 3),
                                    "p99_ms": round(p99, 3), "max_ms": round(top, 3)}


def test_percentiles_match_numpys_for_every_small_count_and_after_each_addition() -> None:
    """The summary is numpy's interpolated percentile over the last values, and a
    value added after a summary is in the next one (the summary is kept between additions)."""
    rng = np.random.default_rng(2)
    for size in range(1, 40):
        window = LatencyWindow(size)
        for n in (1, size, 3):
            window.add(rng.integers(0, 10**8, n))
            last = window._ring[: min(window._added, size)] / 1e6
            p50, p99, top = np.percentile(last, [50, 99, 100])
            assert window.summary() == {"count": len(last), "p50_ms": round(p50, 3),
                                        "p99_ms": round(p99, 3), "max_ms": round(top, 3)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=300),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_quantiles_from_one_partition_are_numpys_exactly(values: list[int], qs: list[float]) -> None:
    """The one-partition quantiles equal ``np.quantile``'s to the last bit, for any values and
    any quantiles (ties, one value, the extremes)."""
    array = np.array(values, np.int64)
    assert _quantiles(array, tuple(qs)) == np.quantile(array, qs).tolist()
    assert array.tolist() == values  # the ring itself is not reordered
