"""ReadoutAssembler (``ssdaq-receiver readout``): slow-signal datagrams of 32 modules -> SSReadouts.

Datagrams are read in batches (``recvmmsg``), each burst whole: a wake-up reads nothing and
waits ``coalesce_us`` (1 ms, the latency this spends) for the rest of the readouts it announces,
which no module's datagram completes alone, then reads all that came. They are handed to the
pure :class:`~ssdaq.data.readout_pipeline.ReadoutPipeline` (decode, TACK matching, rows), whose
output goes to the publishers and whose counts go to the counters as they are. A readout is
published as soon as every live expected module has contributed, or when its ``max_wait_s``
deadline passes (a timer, not the next packet). Readout numbers rise by exactly 1 per
published readout and continue across restarts (kept in the state directory).

At stop no readout is split: the assembler keeps reading for up to ``max_wait_s`` (at most
:data:`DRAIN_LIMIT_S`) to complete the readouts it has begun, sets aside the records of readouts
not yet begun and hands them to its successor in the state directory
(:mod:`~ssdaq.receivers.readout_handover`); the successor starts with them and finds the rest of
those readouts queued on the socket, which systemd keeps. Only a readout still missing a module
when the wait ends is published partial. Without a state directory the set-aside records are
published too, as partial readouts: nothing is lost either way.

``status`` shows the build latency of the last ``latency_readouts`` complete readouts
(``latency_ms``): from the kernel's arrival time of the first datagram of the batch that
completed a readout (no later than its last module's packet) to its hand-over to the
publishers, so an upper bound.
"""

import asyncio
import math
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.datagram_batch import DatagramBatch
from ssdaq.core.errors import CommandError, ConfigError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import (
    DataSocket,
    ListenSettings,
    PublisherSettings,
    ReceiverConfig,
    coalesce_setting,
    zmq_publisher,
)
from ssdaq.data import slowsignal
from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.event_builder import Records
from ssdaq.data.module_presence import describe_slots
from ssdaq.data.readout import N_TM
from ssdaq.data.readout_pipeline import BUILT, COUNTERS, Output, ReadoutPipeline
from ssdaq.receivers import readout_handover as handover
from ssdaq.receivers.readout_latency import LatencyWindow
from ssdaq.receivers.readout_number import ReadoutNumber

STREAM = streams.get("readout")
#: at stop, the longest wait for the begun readouts (max_wait_s if shorter): the 32 modules'
#: datagrams of a readout arrive within milliseconds, and TimeoutStopSec= is 10 s
DRAIN_LIMIT_S = 1.0


# Datagrams read and built in one pass at most. The builder's cost is mostly per pass, so a
# wake-up's whole backlog should go in one: at 1 record per datagram (160 000/s) a wake-up finds
# some 400, and 1024 cost 20 % less CPU per datagram than 256 did (make bench); the buffer is
# 1024 x max_datagram_bytes of address space, of which only what datagrams filled is resident.
READ_BATCH = 1024


@dataclass(frozen=True)
class ReadoutConfig(ReceiverConfig):
    """Settings of the slow-signal readout assembler."""

    max_datagram_bytes: int = setting(
        9000, help="Longest datagram accepted (144 bytes per record); longer ones are counted (oversize)",
        min=144, max=65535)
    state_file: str = setting(
        "", help="Where the next readout number is kept across restarts; empty:\n"
        "$STATE_DIRECTORY/readout-number (systemd's StateDirectory=), else not kept")
    coalesce_us: int = coalesce_setting(1000)
    latency_readouts: int = setting(
        10_000, help="How many of the latest complete readouts the latency figures of status cover",
        min=1, max=1_000_000)
    assembler: AssemblerSettings = table(AssemblerSettings)
    modules: dict[str, int] = setting(
        default_factory=dict, min=0, max=N_TM - 1,
        help="Sender address -> module slot. Empty: the last IPv4 octet mod 100 is the slot\n"
        "(x.y.z.100 .. x.y.z.131 -> 0 .. 31; above 31: unknown) and all 32 are expected. Listing\n"
        "modules here replaces that rule (IPv6 too) and makes readouts wait for these slots only")
    sockets: DataSocket = table(DataSocket, data=ListenSettings(port=STREAM.listen_port))
    publishers: tuple[PublisherSettings, ...] = tables(
        # 1000 readouts (16 MB) per subscriber: 100 s at the nominal rate; a subscriber that falls
        # further behind loses readouts, and sees the gap in their numbers, instead of growing RSS
        zmq_publisher(STREAM.pub_port, sndhwm=1000),
        help="Publishers: every readout (SSReadout, 16 416 bytes) goes to each")
    #: the reader is made once, at start
    restart_only: ClassVar[tuple[str, ...]] = (*ReceiverConfig.restart_only, "max_datagram_bytes",
                                               "coalesce_us")


class ReadoutAssembler(ReceiverServer[ReadoutConfig]):
    """Builds slow-signal readouts from the modules' datagrams and publishes them.

    The keywords of the old constructor still work and override the configuration:
    ``relaxed_ip_range``, ``readout_tw`` (ns), ``listen_ip``, ``listen_port``, ``buffer_length``
    (open readouts), ``buffer_time`` (ns; the longest wait), ``publishers`` and
    ``packet_debug_stream_file`` (a text line per published readout: number, TACK, CPU ns, modules).
    """

    service_name = "readout"
    config_class = ReadoutConfig
    counter_names = (*COUNTERS, "paused", "handed_on", "taken_over", "handover_rejected")

    def __init__(self, relaxed_ip_range: bool | None = None, readout_tw: float | None = None,
                 listen_ip: str | None = None, listen_port: int | None = None,
                 buffer_length: int | None = None, buffer_time: float | None = None,
                 publishers: list | None = None, packet_debug_stream_file: str | None = None) -> None:
        cfg = self.current_config() or ReadoutConfig()
        cfg = _legacy(cfg, relaxed_ip_range, readout_tw, listen_ip, listen_port, buffer_length, buffer_time)
        data = cfg.sockets.data
        super().__init__(data.ip, data.port, publishers, "ReadoutAssembler", config=cfg)
        self.pipeline = ReadoutPipeline(cfg.assembler, _module_map(cfg, self.config_file),
                                        time.monotonic())
        state = _state_path(cfg, self.service)
        self.numbers = ReadoutNumber(state, self.log)
        self.handover = state.with_name(f"{self.service}-handover.npz") if state else None
        self._taken: Records | None = None  # handed over by the predecessor, not yet merged
        self.publishing = True
        self._debug = open(packet_debug_stream_file, "a") if packet_debug_stream_file else None
        self._timer: Any = None
        self._timer_when = float("inf")
        self._absent: set[int] = set()
        self.latency = LatencyWindow(cfg.latency_readouts)
        # kernel receive times: a readout's CPU time must not grow with the backlog in a burst
        # every wake-up waits first: a readout is never complete from its first datagram
        self.reader = self.setup_datagrams(self._on_batch, max_bytes=cfg.max_datagram_bytes, batch=READ_BATCH,
                                           timestamps=True, coalesce_s=cfg.coalesce_us / 1e6,
                                           wait_first=True)

    @classmethod
    def from_config(cls, config: ReceiverConfig) -> "ReadoutAssembler":
        return cls()

    # ------------------------------------------------------------------ data path

    def _on_batch(self, batch: DatagramBatch) -> None:
        if self._taken is not None:
            self._take_over()
        n = batch.count
        sources = batch.ipv4[:n] if batch.family == socket.AF_INET else batch.addresses()
        self._emit(self.pipeline.feed(batch.data, batch.lengths[:n], sources, batch.arrival_ns[:n],
                                      time.monotonic(), self.numbers.next))

    def _on_timer(self) -> None:
        self._timer, self._timer_when = None, float("inf")
        self._emit(self.pipeline.expire(time.monotonic(), self.numbers.next))

    def _arm_timer(self, when: float | None) -> None:
        if when is None or when >= self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        # the builder's clock is time.monotonic(), which is also the event loop's clock
        self._timer, self._timer_when = self.loop.call_at(when, self._on_timer), when

    def _emit(self, out: Output) -> None:
        """Count what the pipeline counted, publish what it built, arm the timer it asks for."""
        for name, count in out.counts.items():
            if name in BUILT:
                self.counters.add(name, count)
            else:
                self.counters.report(name, count, peer=out.peers.get(name, ""))
        ro = out.readouts
        if len(ro.rows) and not self.publishing:
            self.counters.add("paused", len(ro.rows))
        elif len(ro.rows):
            self.numbers.next += len(ro.rows)  # the pipeline numbered them from numbers.next
            self.publish_many(ro.rows)
            if "complete" in out.counts:
                self.latency.add(time.time_ns() - ro.arrived_ns[ro.complete])
            if self._debug is not None:
                h = ro.header
                np.savetxt(self._debug, np.c_[h[:, :2], h[:, 2] * 10**9 + h[:, 3], ro.n_modules],
                           fmt="%d")
        self._arm_timer(out.next_deadline)

    # ------------------------------------------------------------------ lifecycle hooks

    async def on_start(self) -> None:
        if self.handover is None:
            return
        self._taken, rejected = handover.take(self.handover, self.log)
        if rejected:
            self.counters.report("handover_rejected", detail=f"{self.handover}{handover.REJECTED}")
        if self._taken is not None:  # merged when reading starts, before the first datagram
            self.loop.call_later(self.config.start_hold_s, self._take_over)

    def _take_over(self) -> None:
        if self._taken is None:
            return
        taken, self._taken = self._taken, None
        self.counters.add("taken_over", len(taken.tack))
        self._emit(self.pipeline.take_over(taken, time.monotonic(), self.numbers.next))
        assert self.handover is not None
        handover.done(self.handover)

    async def on_stop(self) -> None:
        """Complete the open readouts from what still arrives, hand on the records of the others."""
        self.pipeline.hold()
        if self.pipeline.builder.n_open:
            self.reader.start(self.loop)  # input stopped for everyone else; read on for the drain
            deadline = time.monotonic() + min(self.pipeline.settings.max_wait_s, DRAIN_LIMIT_S)
            while self.pipeline.builder.n_open and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            self.reader.pause()
        if self._timer is not None:
            self._timer.cancel()
        self._emit(self.pipeline.flush(self.numbers.next))  # still missing a module: partial
        held = Records.concat([r for r in (self._taken, self.pipeline.take_held()) if r is not None])
        if self.handover is not None and not len(held.tack):
            handover.done(self.handover)  # nothing to hand on: no file left from before either
        elif self.handover is not None:
            try:
                handover.save(self.handover, held)
                self.counters.add("handed_on", len(held.tack))
                self.log.info("handed %d records of readouts not yet begun to the next start (%s)",
                              len(held.tack), self.handover)
                held = held.part(slice(0, 0))
            except OSError as e:
                self.log.error("cannot hand over to %s (%s): publishing those readouts partial",
                               self.handover, e)
        if len(held.tack):  # nowhere to hand them: published as partial readouts
            self._emit(self.pipeline.take_over(held, time.monotonic(), self.numbers.next))
            self._emit(self.pipeline.flush(self.numbers.next))
        self.numbers.save()
        if self._debug is not None:
            self._debug.close()

    async def on_reload(self, old: ReadoutConfig, new: ReadoutConfig) -> None:
        if new.latency_readouts != getattr(old, "latency_readouts", None):
            self.latency = LatencyWindow(new.latency_readouts)
        modules = _module_map(new, self.config_file)
        if new.assembler != self.pipeline.settings or new.modules != getattr(old, "modules", None):
            # open readouts follow the rules they started under
            self._emit(self.pipeline.flush(self.numbers.next))
            self.pipeline = ReadoutPipeline(new.assembler, modules, time.monotonic())
            self.log.info("event building now: %s, waiting for modules %s", new.assembler,
                          modules.expected)

    # ------------------------------------------------------------------ status

    def status_line(self) -> str:
        c, expected = self.counters, len(self.pipeline.modules.expected)
        line = (f"{c.rates.get('complete', 0.0) + c.rates.get('incomplete', 0.0):.1f} ro/s, "
                f"{expected - len(self._absent_now())}/{expected} TMs, {c['late']} late, "
                f"{c['duplicate']} dup, {c['evicted']} evicted, "
                f"{c['bad_size'] + c['empty'] + c['unknown_source']} bad, "
                f"{c['incomplete']} incomplete, {c['kernel_drops']} kernel drops")
        return line + ("" if self.publishing else f", PAUSED ({c['paused']} not published)")

    def status_fields(self) -> dict[str, Any]:
        now = time.monotonic()
        b = self.pipeline.builder
        ago = np.round(now - b.last_seen, 3).tolist()  # python numbers: cheaper than per item
        packets, records = b.packets.tolist(), b.records.tolist()
        return {
            "publishing": self.publishing,
            "next_readout_number": self.numbers.next,
            "open_readouts": b.n_open,
            "latency_ms": self.latency.summary(),
            "assembler": b.counts.as_dict(),
            "absent_modules": self._absent_now(),
            "modules": {s: {"packets": packets[s], "records": records[s],
                            "last_seen_s_ago": None if math.isnan(ago[s]) else ago[s]}
                        for s in b.expected_slots},
        }

    def _absent_now(self) -> list[int]:
        return self.pipeline.builder.modules.absent_expected(time.monotonic())

    def on_tick(self) -> None:
        """Log once when modules go silent and when they come back (one record for all that changed
        together, each slot a ``SSDAQ_MODULE`` value); keep the state file fresh."""
        absent = set(self._absent_now())
        if gone := sorted(absent - self._absent):
            self.log.warning("%s absent (silent for %.1f s): readouts no longer wait for absent modules",
                             describe_slots(gone), self.pipeline.settings.module_timeout_s,
                             extra={"SSDAQ_MODULE": gone})
        if back := sorted(self._absent - absent):
            self.log.info("%s sending again", describe_slots(back), extra={"SSDAQ_MODULE": back})
        self._absent = absent
        self.numbers.checkpoint()

    # ------------------------------------------------------------------ commands

    def cmd_reset_ro_count(self, *_: str) -> str:
        """Restart readout numbering at 1 (the next published readout is number 1)."""
        self.numbers.reset()
        return "Readout count reset"

    def cmd_set_publish_readouts(self, flag: str) -> str:
        """Pause (false) or resume (true) publishing; readouts built while paused are counted."""
        value = flag.lower()
        if value not in ("true", "false", "1", "0"):
            raise CommandError(f"set_publish_readouts: expected true or false, got {flag!r}")
        self.publishing = value in ("true", "1")
        self.log.info("readout publishing %s", "resumed" if self.publishing else "paused")
        return "Unpaused readout publishing" if self.publishing else "Paused readout publishing"


def _legacy(cfg: ReadoutConfig, relaxed: bool | None, readout_tw: float | None, ip: str | None,
            port: int | None, buffer_length: int | None, buffer_time: float | None) -> ReadoutConfig:
    """Apply the old constructor keywords onto the configuration."""
    asm, data = cfg.assembler, cfg.sockets.data
    if relaxed is not None:
        asm = replace(asm, relaxed_ip_range=bool(relaxed))
    if readout_tw is not None:
        asm = replace(asm, readout_window_ns=int(readout_tw))
    if buffer_length is not None:
        asm = replace(asm, max_open_readouts=int(buffer_length))
    if buffer_time is not None:
        asm = replace(asm, max_wait_s=float(buffer_time) / 1e9)
    if ip is not None or port is not None:
        data = replace(data, ip=ip or data.ip, port=data.port if port is None else int(port))
    return replace(cfg, assembler=asm, sockets=replace(cfg.sockets, data=data))


def _module_map(cfg: ReadoutConfig, file: str | None) -> slowsignal.ModuleMap:
    try:
        return slowsignal.ModuleMap(cfg.modules or None, relaxed=cfg.assembler.relaxed_ip_range)
    except ValueError as e:
        raise ConfigError(file or "<defaults>", "modules", str(e)) from None


def _state_path(cfg: ReadoutConfig, service: str) -> Path | None:
    if cfg.state_file:
        return Path(cfg.state_file)
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state_dir) / f"{service}-number" if state_dir else None
