"""``GET /metrics``: the poller's latest snapshot as Prometheus metrics (prometheus_client).

Nothing here talks to a receiver: a scrape turns the latest :class:`~ssdaq.web.poller.Snapshot`
into metric families. A receiver that did not answer the latest poll (or a snapshot too old to
be current) is exported as ``ssdaq_up 0`` and without counters, so stale values never pass for
fresh ones. The format (Prometheus text or OpenMetrics) follows the scraper's ``Accept`` header.
"""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Summary
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ssdaq.daemons import ReceiverState
from ssdaq.web.poller import Snapshot, StatusPoller

#: ``ssdaq_unit_state``'s states
UNIT_STATES = ("active", "idle", "failed", "inactive")


def unit_state(state: ReceiverState, socket_listening: bool) -> str:
    """active, idle (its socket listens, the service waits for a first datagram), failed or
    inactive."""
    active = state.systemd.get("ActiveState") if state.systemd else None
    if active is None:
        return "active" if state.reply is not None else "inactive"
    if active in ("active", "reloading", "activating", "deactivating"):
        return "active"
    if active == "failed":
        return "failed"
    return "idle" if socket_listening else "inactive"


class SnapshotCollector:
    """A prometheus_client collector reading the poller's latest snapshot at each scrape."""

    def __init__(self, poller: StatusPoller) -> None:
        self.poller = poller

    def collect(self) -> Iterator[Metric]:
        snap = self.poller.latest()
        fresh = self.poller.fresh(snap)
        up = GaugeMetricFamily("ssdaq_up", "1 when the receiver or writer answered the latest "
                               "status poll, else 0", labels=["receiver"])
        for s in snap.states:
            up.add_metric([s.name], 1.0 if fresh and s.reply is not None else 0.0)
        yield up
        yield from self._poll_metrics(snap)

    def _poll_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("ssdaq_web_poll_age_seconds",
                                "Seconds since the latest status poll began", value=snap.age_s())
        yield GaugeMetricFamily("ssdaq_web_poll_duration_seconds",
                                "How long the latest status poll took", value=snap.duration_s)
        yield CounterMetricFamily("ssdaq_web_polls", "Status polls done", value=snap.polls)
        yield CounterMetricFamily("ssdaq_web_poll_failures",
                                  "Status polls that failed as a whole (e.g. systemctl timed out)",
                                  value=snap.failures)


class Metrics:
    """The registry behind ``/metrics``: the snapshot's families and the service's own."""

    def __init__(self, poller: StatusPoller) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(poller))  # type: ignore[arg-type]
        self.scrape_seconds = Summary("ssdaq_web_scrape_duration_seconds",
                                      "Time to render /metrics", registry=self.registry)
        self.scrape_errors = Counter("ssdaq_web_scrape_errors",
                                     "Scrapes of /metrics that failed to render", registry=self.registry)

    def render(self, accept: str) -> tuple[bytes, str]:
        """(body, content type) in the format ``accept`` asks for."""
        started = time.perf_counter()
        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(self.registry)
        except Exception:
            self.scrape_errors.inc()
            raise
        self.scrape_seconds.observe(time.perf_counter() - started)
        return body, content_type
