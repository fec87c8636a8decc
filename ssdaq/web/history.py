"""Trigger, readout and timestamp rates over the last minutes, kept by ssdaq-web for the page.

Each new poller snapshot adds one point (the receivers' own per-second rates, so no rate is
computed twice); points older than the window are dropped and the ring's length is bounded by
the window over the poll interval, so memory stays fixed however long the service runs. A page
opened now fetches the whole window at once (``GET /api/history``) and then gets each new
point with the status.
"""

import collections
import math
from dataclasses import dataclass
from typing import Any

from ssdaq.web.poller import Snapshot

#: plotted series -> (receiver, counter whose rate is plotted): what the camera sent for the
#: trigger and timestamp streams, the readouts the assembler built for the readout stream
SERIES = {"trigger": ("trigger", "received"), "readout": ("readout", "published"),
          "timestamp": ("timestamp", "received")}


@dataclass(frozen=True)
class RatePoint:
    """The rates of one poll; None for a receiver that did not answer."""

    t_unix: float
    rates: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t_unix, 3), **self.rates}


def rates_of(snapshot: Snapshot) -> dict[str, float | None]:
    """Each series' rate in ``snapshot`` (None when its receiver gave no status)."""
    replies = {s.name: s.reply for s in snapshot.states}
    out: dict[str, float | None] = {}
    for series, (receiver, counter) in SERIES.items():
        reply = replies.get(receiver)
        rate = None if reply is None else reply.get("rates", {}).get(counter)
        out[series] = None if rate is None else float(rate)
    return out


class RateHistory:
    """The last ``window_s`` of rate points, at most one per poll."""

    def __init__(self, window_s: float, poll_interval_s: float) -> None:
        self.window_s = window_s
        self.points: collections.deque[RatePoint] = collections.deque(
            maxlen=math.ceil(window_s / poll_interval_s) + 1)
        self._polls = 0

    def add(self, snapshot: Snapshot) -> RatePoint | None:
        """The new point of ``snapshot``, or None if it was seen already (or is the empty one)."""
        if snapshot.polls == self._polls or not snapshot.polls:
            return None
        self._polls = snapshot.polls
        point = RatePoint(snapshot.taken_unix, rates_of(snapshot))
        self.points.append(point)
        while self.points and self.points[0].t_unix < point.t_unix - self.window_s:
            self.points.popleft()
        return point

    def to_json(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "series": list(SERIES),
                "points": [p.to_json() for p in self.points]}
