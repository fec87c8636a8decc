"""Recent latencies for ``status``: a bounded ring of the last values, percentiles on demand.

A receiver adds the latencies of what it publishes (ns, as arrays, once per batch); ``status``
asks for p50/p99/max over the ring. Memory is fixed; adding costs a copy of the batch, and the
percentiles are computed only when someone asks and something was added since (``status`` is
polled once a second by the metrics service: a quiet receiver answers from the last summary).
"""

from typing import Any

import numpy as np


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
        p50, p99, top = np.percentile(self._ring[:n], [50, 99, 100]) / 1e6
        summary = {"count": n, "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
                   "max_ms": round(float(top), 3)}
        self._summary = (self._added, summary)
        return summary
