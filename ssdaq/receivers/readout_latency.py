"""Recent latencies for ``status``: a bounded ring of the last values, percentiles on demand.

A receiver adds the latencies of what it publishes (ns, as arrays, once per batch); ``status``
asks for p50/p99/max over the ring. Memory is fixed; adding costs a copy of the batch, and the
percentiles are computed only when someone asks and something was added since (``status`` is
polled once a second by the metrics service: a quiet receiver answers from the last summary).
They are numpy's (linear interpolation) from one ``np.partition``: ``np.percentile`` is some twenty
Python-level numpy calls, and a once-a-second call finds every one of them out of the CPU's
caches (about 250 µs a ``status`` at the camera's 10 readouts/s, against some 30 µs this way).
"""

import math
from typing import Any

import numpy as np

QUANTILES = (0.50, 0.99, 1.0)


class LatencyWindow:
    """The last ``size`` latencies in ns."""

    def __init__(self, size: int = 10_000) -> None:
        self._ring = np.zeros(size, np.int64)
        self._added = 0
        self._summary: tuple[int, dict[str, Any]] = (0, {"count": 0})  # (_added, summary)

    def add(self, values_ns: np.ndarray) -> None:
        size = len(self._ring)
        values = np.asarray(values_ns, np.int64)
        self._added += max(0, len(values) - size)  # more than fit: the first would be overwritten
        values = values[-size:]
        pos = self._added % size
        first = min(len(values), size - pos)
        self._ring[pos : pos + first] = values[:first]
        self._ring[: len(values) - first] = values[first:]
        self._added += len(values)

    def summary(self) -> dict[str, Any]:
        """``count`` (how many the figures cover) and p50/p99/max in ms."""
        if self._summary[0] == self._added:
            return self._summary[1]
        n = min(self._added, len(self._ring))
        p50, p99, top = (v / 1e6 for v in _quantiles(self._ring[:n], QUANTILES))
        summary = {"count": n, "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
                   "max_ms": round(float(top), 3)}
        self._summary = (self._added, summary)
        return summary


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(values, qs)`` (its default, linear method, and its way of interpolating)
    from a single partition of a copy of ``values``."""
    last = len(values) - 1
    positions = [q * last for q in qs]
    ranks = sorted({r for p in positions for r in (math.floor(p), math.ceil(p))})
    at = dict(zip(ranks, np.partition(values, ranks)[ranks].tolist()))
    out = []
    for p in positions:
        a, b, t = at[math.floor(p)], at[math.ceil(p)], p - math.floor(p)
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)  # as numpy's _lerp
    return out
