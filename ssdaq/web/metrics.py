"""``GET /metrics``: the poller's latest snapshot as Prometheus metrics (prometheus_client).

Nothing here talks to a receiver: a scrape turns the latest :class:`~ssdaq.web.poller.Snapshot`
into metric families. A receiver that did not answer the latest poll (or a snapshot too old to
be current) is exported as ``ssdaq_up 0`` with its unit state and without anything from its
``status``, so stale values never pass for fresh ones. No rates: Prometheus derives them from the
counters. The format (Prometheus text or OpenMetrics) follows the scraper's ``Accept`` header.
"""

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ssdaq.core import counters
from ssdaq.daemons import ReceiverState
from ssdaq.web.poller import Snapshot, StatusPoller

PREFIX = "ssdaq_"
#: ``ssdaq_unit_state``'s states (:attr:`ReceiverState.activity`)
UNIT_STATES = ("active", "idle", "failed", "inactive")
#: the label every per-daemon metric carries (writers are named writer-STREAM)
LABEL = "receiver"


def counter_help(name: str) -> str:
    """HELP of ``ssdaq_<name>_total``: its declaration in the catalogue."""
    try:
        return counters.spec(name).help
    except KeyError:  # a site receiver's own counter, declared in its own process
        return f"{name}: a counter of a site receiver (declared in its own package)"


class Families:
    """The metric families of one scrape, filled receiver by receiver."""

    def __init__(self) -> None:
        self._gauges: dict[str, GaugeMetricFamily] = {}
        self._counters: dict[str, CounterMetricFamily] = {}

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        if name not in self._gauges:
            self._gauges[name] = GaugeMetricFamily(PREFIX + name, help, labels=[LABEL, *labels])
        return self._gauges[name]

    def counter(self, name: str, help: str) -> CounterMetricFamily:
        if name not in self._counters:
            self._counters[name] = CounterMetricFamily(PREFIX + name, help, labels=[LABEL])
        return self._counters[name]

    def __iter__(self) -> Iterator[Metric]:
        yield from self._gauges.values()
        yield from self._counters.values()


def add_state(fam: Families, s: ReceiverState, answered: bool, expected: bool) -> None:
    """What is known with or without an answer: up, unit state, restarts, the site's expectation."""
    fam.gauge("up", "1 when the receiver or writer answered the latest status poll, else 0 (also "
              "when it is not running)").add_metric([s.name], float(answered))
    fam.gauge("data_expected", "1 when the site expects data at all times ([expect] data_from "
              "in web.toml)").add_metric([s.name], float(expected))
    state = fam.gauge("unit_state", "1 for the unit's state: active (running, or should be), idle "
                      "(its socket listens, nothing has started it yet), failed, inactive",
                      ("state",))
    for name in UNIT_STATES:
        state.add_metric([s.name, name], float(s.activity == name))
    if s.systemd.get("NRestarts", "").isdigit():
        fam.counter("unit_restarts", "Times systemd restarted the unit (NRestarts)").add_metric(
            [s.name], float(s.systemd["NRestarts"]))


def add_status(fam: Families, s: ReceiverState, reply: dict[str, Any]) -> None:
    """What the receiver's ``status`` says: counters, process, readout and writer figures."""
    values = reply.get("counters", {})
    for name, value in sorted(values.items()):
        fam.counter(name, counter_help(name)).add_metric([s.name], float(value))
    fam.counter("lost", "Sum of the counters of lost or rejected data (kind loss in the "
                "catalogue): the lost of STATUS=").add_metric(
        [s.name], float(sum(v for n, v in values.items() if n in counters.CATALOGUE
                            and counters.spec(n).loss)))
    fam.gauge("healthy", "1 when the receiver reports itself healthy (what its watchdog checks)"
              ).add_metric([s.name], float(reply.get("health") == "ok"))
    if (proc := reply.get("process")) is not None:
        fam.counter("process_cpu_seconds", "CPU time (user and system) of the receiver's process"
                    ).add_metric([s.name], float(proc["cpu_s"]))
        fam.gauge("process_resident_memory_bytes", "Resident memory of the receiver's process"
                  ).add_metric([s.name], float(proc["rss_bytes"]))
        fam.gauge("process_start_time_seconds", "Start time of the receiver's process (Unix time)"
                  ).add_metric([s.name], float(proc["started_unix"]))
    if "modules" in reply:
        add_readout(fam, s.name, reply)
    if "free_bytes" in reply:
        add_writer(fam, s.name, reply)


def add_readout(fam: Families, name: str, reply: dict[str, Any]) -> None:
    modules, absent = reply["modules"], set(reply.get("absent_modules", []))
    fam.gauge("modules_present", "Expected modules that sent within the module timeout"
              ).add_metric([name], float(len(modules) - len(absent & {int(m) for m in modules})))
    gone = fam.gauge("module_absent", "1 for an expected module silent beyond the module timeout",
                     ("module",))
    seen = fam.gauge("module_last_seen_seconds", "Seconds since the module's latest packet",
                     ("module",))
    for module, info in sorted(modules.items(), key=lambda kv: int(kv[0])):
        gone.add_metric([name, str(module)], float(int(module) in absent))
        if info.get("last_seen_s_ago") is not None:
            seen.add_metric([name, str(module)], float(info["last_seen_s_ago"]))
    latency = reply.get("latency_ms", {})
    for quantile in ("p50", "p99"):
        if f"{quantile}_ms" in latency:
            fam.gauge(f"build_latency_{quantile}_seconds",
                      f"Build latency of the latest complete readouts, {quantile} (first datagram "
                      "of the completing batch to hand-over to the publishers)"
                      ).add_metric([name], latency[f"{quantile}_ms"] / 1e3)
    if "next_readout_number" in reply:
        fam.gauge("next_readout_number", "Number the next published readout gets"
                  ).add_metric([name], float(reply["next_readout_number"]))
    if "publishing" in reply:
        fam.gauge("publishing", "1 while readouts are published, 0 while paused"
                  ).add_metric([name], float(bool(reply["publishing"])))


def add_writer(fam: Families, name: str, reply: dict[str, Any]) -> None:
    fam.gauge("writer_free_bytes", "Free disk space where the writer writes"
              ).add_metric([name], float(reply["free_bytes"]))
    if "reserve_bytes" in reply:
        fam.gauge("writer_reserve_bytes", "Free space the writer leaves untouched (min_free_bytes): "
                  "below it, it stops writing and holds data in memory"
                  ).add_metric([name], float(reply["reserve_bytes"]))
    fam.gauge("writer_disk_full", "1 while writing is stopped for lack of disk space"
              ).add_metric([name], float(bool(reply.get("disk_full"))))
    fam.gauge("writer_pending_rows", "Rows received and not yet written"
              ).add_metric([name], float(reply.get("pending_rows", 0)))
    if reply.get("file_age_s") is not None:
        fam.gauge("writer_file_age_seconds", "Age of the file being written"
                  ).add_metric([name], float(reply["file_age_s"]))
        fam.gauge("writer_file_bytes", "Size of the file being written"
                  ).add_metric([name], float(reply.get("file_bytes", 0)))


class SnapshotCollector:
    """A prometheus_client collector reading the poller's latest snapshot at each scrape."""

    def __init__(self, poller: StatusPoller, data_from: tuple[str, ...] = ()) -> None:
        self.poller, self.data_from = poller, data_from

    def collect(self) -> Iterator[Metric]:
        snap = self.poller.latest()
        fresh = self.poller.fresh(snap)
        fam = Families()
        for s in snap.states:
            answered = fresh and s.reply is not None
            add_state(fam, s, answered, s.name in self.data_from)
            if answered:
                add_status(fam, s, s.reply or {})
        yield from fam
        yield from self._poll_metrics(snap)

    def _poll_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("ssdaq_web_poll_age_seconds",
                                "Seconds since the latest status poll began", value=snap.age_s())
        yield GaugeMetricFamily("ssdaq_web_poll_duration_seconds",
                                "How long the latest status poll took", value=snap.duration_s)
        yield CounterMetricFamily("ssdaq_web_polls", "Status polls done", value=snap.polls)
        yield CounterMetricFamily("ssdaq_web_poll_failures",
                                  "Status polls that failed as a whole (systemctl timed out or gave no unit state)",
                                  value=snap.failures)
        missed = CounterMetricFamily("ssdaq_web_poll_no_answers",
                                     "Polls a running receiver or writer did not answer in time",
                                     labels=[LABEL])
        for name, n in sorted(snap.no_answers.items()):
            missed.add_metric([name], n)
        yield missed


class Metrics:
    """The registry behind ``/metrics``: the snapshot's families and the service's own."""

    def __init__(self, poller: StatusPoller, data_from: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(poller, data_from))  # type: ignore[arg-type]
        self.scrape_seconds = Histogram(
            "ssdaq_web_scrape_duration_seconds", "Time ssdaq-web took to render /metrics",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=self.registry)
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
