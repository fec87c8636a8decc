"""The ``ssdaq-writer`` service: subscribe, hold rows briefly, write HDF5, rotate, survive a full disk.

A writer is a ReceiverServer whose input is zmq SUB sockets, so the framework provides its
lifecycle (READY/STATUS/WATCHDOG/STOPPING, SIGHUP, command socket, MonitorData, exit codes).

Data path: each receive batch is converted to rows at once (bad messages counted per reason,
readout numbers checked for gaps) and held in memory; every ``flush_interval_s``, or once
``flush_bytes`` are waiting, the rows are appended to the open ``.part`` file in a worker thread
and flushed to disk, so the event loop keeps receiving meanwhile. At SIGTERM the writer stops
receiving, takes what zmq already queued, writes everything and publishes the file: nothing
received is lost. Files rotate by size (checked after each write) and by age.

A full disk never reaches HDF5: before each write the free space must exceed ``min_free_bytes``
plus the uncompressed size of the rows. Below that the writer closes the file (so it is
complete), says so in the journal and in STATUS=, holds rows in memory up to
``max_buffer_bytes`` (dropping the oldest beyond, counted as ``disk_full``), and resumes in a new
file when space returns. Should a write fail anyway (the disk filled between check and write),
the HDF5 library's state cannot be trusted: the process logs the loss and exits with 74
(EX_IOERR); systemd restarts it, and the restarted writer salvages the ``.part`` file it left
(``ssdaq.io.recovery``).

Observations: the writer follows the run state (:mod:`ssdaq.runs`), read at start, on the
``run_sync`` command and whenever the state file changes. When a run starts or stops, what was
received until then goes into the current file, which is closed; a run's first chunk opens at
once, and after a rotation inside a run the next chunk too, so that a run's chunks cover it
without a hole, each with its ledger. Outside runs, ``[run] record = "runs"`` discards what
arrives (counted as ``not_recorded``). Every file carries its provenance and the loss ledger of
its interval (:mod:`ssdaq.io.provenance`, :mod:`ssdaq.receivers.writer_ledger`).
"""

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zmq
import zmq.asyncio

from ssdaq import runs
from ssdaq.core import config as configlib
from ssdaq.core import systemd
from ssdaq.core.errors import UnavailableError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.io import files, provenance, recovery
from ssdaq.io.layouts import LAYOUTS, FileLayout, Input, Rows
from ssdaq.receivers.writer_config import (
    DEFAULT_DATA_DIR,
    MiB,
    ReadoutWriterConfig,
    TimestampWriterConfig,
    TriggerWriterConfig,
    WriterConfig,
    service_name,
)
from ssdaq.receivers.writer_ledger import Bookkeeper, Ledger
from ssdaq.subscribers import SequenceTracker

EX_IOERR = os.EX_IOERR
_DRAIN_MAX = 10_000  # messages taken per wake-up, so one stream cannot starve the loop
_SLACK_BYTES = 1024 * 1024  # HDF5 metadata written besides the rows (headers, B-tree nodes)
_KEEP_NAMES = 10


def default_directory(stream: str) -> Path:
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_DATA_DIR
    return Path(base) / stream


class StreamWriter(ReceiverServer[WriterConfig]):
    """Writes the streams of :attr:`layout` to rotating HDF5 files (see the module docstring)."""

    layout: ClassVar[FileLayout]
    counter_names = ("written", "written_bytes", "files", "missed", "disk_full", "not_recorded",
                     "bad_size", "bad_message", "bad_magic", "unknown_type", "bad_phase")

    def __init__(self) -> None:
        stream = self.layout.stream
        super().__init__("", 0, [], f"{stream.capitalize()}Writer")
        out = self.config.output
        self.directory = Path(out.directory) if out.directory else default_directory(stream)
        self.prefix = out.prefix or stream
        self.sequence = SequenceTracker()
        self._pending: list[Rows] = []
        self._pending_bytes = 0
        self._file: files.OpenFile | None = None
        self._file_bytes = 0  # size of the open file after its latest write
        self._finished: list[str] = []
        self._disk_full = False
        self._recovery_waits = False
        self._free = 0
        self._lock = asyncio.Lock()
        self._writing_since: float | None = None
        self._last_flush = time.monotonic()
        self._subscriptions: list[tuple[Input, zmq.asyncio.Socket]] = []
        #: the observation being recorded (None: outside runs), the state file's signature when read
        self.obs: runs.Run | None = None
        self._run_seen: tuple[int, int, int] | None = None
        self.books = Bookkeeper(self.service, lambda: dict(self.counters.values))
        for inp in self.layout.inputs:
            sub = getattr(self.config.inputs, inp.stream)  # type: ignore[attr-defined]
            if sub.endpoint:
                sock = self._context.socket(zmq.SUB)
                sock.setsockopt(zmq.RCVHWM, sub.rcvhwm)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.connect(sub.endpoint)
                self._subscriptions.append((inp, sock))
        self._setup = True

    @classmethod
    def from_config(cls, config: Any) -> "StreamWriter":
        return cls()

    # ------------------------------------------------------------------ lifecycle hooks

    async def on_start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UnavailableError(f"cannot create the data directory {self.directory}: {e}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise UnavailableError(f"cannot write in the data directory {self.directory}")
        await self._recover()
        self._free = files.free_bytes(self.directory)
        self.log.info("writing %s files to %s (%d MB free)", self.layout.stream, self.directory,
                      self._free // MiB)
        await self.poll_ledger(bound=True)  # the first interval starts with what is up now
        await self.follow_run()

    async def _recover(self) -> None:
        """Publish or salvage the ``.part`` files a killed writer left, once there is room for
        the copies a salvage makes (until then they wait; see ``ssdaq.io.recovery``)."""
        parts = list(self.directory.glob(f"{self.prefix}_*{files.PART}"))
        need = sum(p.stat().st_size for p in parts) + self.config.output.min_free_bytes
        if parts and files.free_bytes(self.directory) < need + _SLACK_BYTES:
            if not self._recovery_waits:
                self.log.warning("%d unfinished files are left as they are until the disk has "
                                 "room to recover them", len(parts))
            self._recovery_waits = True
            return
        self._recovery_waits = False
        for path in await asyncio.to_thread(recovery.recover, self.directory, self.prefix,
                                            self.layout, self.log):
            self._remember(path)

    async def ct_receive(self) -> None:
        """Receive every subscribed stream (one task each) until stopped."""
        await asyncio.gather(*(self._receive(inp, sock) for inp, sock in self._subscriptions))

    async def ct_flush(self) -> None:
        """Write on the timer, rotate by age, notice when space comes back or the run changed."""
        while True:
            interval = self.config.output.flush_interval_s  # read each time: reload changes it
            await asyncio.sleep(min(0.2, interval))
            if runs.signature() != self._run_seen:
                await self.follow_run()
            if time.monotonic() - self._last_flush >= interval:
                await self.flush()

    async def ct_ledger(self) -> None:
        """Read the upstream receivers' counters between the bounds (restarts are noticed)."""
        while True:
            await asyncio.sleep(self.config.ledger.poll_interval_s)
            await self.poll_ledger()

    async def on_stop(self) -> None:
        """Stop receiving, take what zmq already queued, write it all and publish the file."""
        task = self.tasks.get("ct_receive")
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for inp, sock in self._subscriptions:
            while batch := self._drain(sock):
                self._take(inp, batch)
        await self.flush(final=True)
        for _, sock in self._subscriptions:
            sock.close(linger=0)
        if self._pending:
            self.log.error("stopped with %d rows unwritten: the disk is full",
                           self._rows(self._pending))

    async def on_reload(self, old: Any, new: Any) -> None:
        """Everything applies live: a new directory or prefix starts a new file, a new endpoint
        is subscribed instead of the old one (the other settings are read at each use)."""
        directory = Path(new.output.directory) if new.output.directory else default_directory(
            self.layout.stream)
        prefix = new.output.prefix or self.layout.stream
        if (directory, prefix) != (self.directory, self.prefix):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self.log.error("cannot create %s (%s): still writing to %s", directory, e,
                               self.directory)
            else:
                await self.flush(final=True, reopen=False)
                self.directory, self.prefix = directory, prefix
                self.log.info("writing to %s/%s_* from now on", directory, prefix)
        for inp, sock in self._subscriptions:
            before, after = (getattr(c.inputs, inp.stream).endpoint for c in (old, new))
            if after != before:
                if before:
                    sock.disconnect(before)
                if after:
                    sock.connect(after)
                self.log.info("%s: subscribed to %s instead of %s", inp.stream, after or "nothing",
                              before or "nothing")

    # ------------------------------------------------------------------ receiving

    async def _receive(self, inp: Input, sock: zmq.asyncio.Socket) -> None:
        while True:
            await sock.poll(flags=zmq.POLLIN)  # type: ignore[call-arg]  # pyzmq's stub lacks flags
            batch = self._drain(sock)
            if batch:
                self._take(inp, batch)
            if self._pending_bytes >= self.config.output.flush_bytes and not self._lock.locked():
                await self.flush()

    @staticmethod
    def _drain(sock: zmq.asyncio.Socket) -> list[bytes]:
        shadow: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        out: list[bytes] = []
        while len(out) < _DRAIN_MAX:
            try:
                out.append(shadow.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def _take(self, inp: Input, batch: list[bytes]) -> None:
        self.counters.add("received", len(batch))
        rows, rejected = inp.convert(batch, time.time_ns())
        for error in rejected:
            self.counters.report(error.reason, detail=str(error), peer=inp.stream)
        if self.layout.sequence and self.layout.sequence[0] in rows:
            self._check_sequence(rows)
        if self.obs is None and self.config.run.record == "runs":
            self.counters.add("not_recorded", len(batch))
            return
        self._pending.append(rows)
        self._pending_bytes += files.rows_nbytes(rows)
        if self._disk_full:
            self._bound_buffer()

    def _check_sequence(self, rows: Rows) -> None:
        path, column = self.layout.sequence  # type: ignore[misc]
        now = time.time_ns()
        for before, after in self.sequence.check(rows[path][column]):
            self.counters.report("missed", after - before - 1,
                                 detail=f"{column} {before + 1}..{after - 1} never arrived")
            self.books.current.gap(column, before, after, now)
        for before, after in self.sequence.last_restarts:
            self.books.current.restart(column, before, after, now)

    def _bound_buffer(self) -> None:
        limit = self.config.output.max_buffer_bytes
        while self._pending_bytes > limit and self._pending:
            oldest = self._pending.pop(0)
            self._pending_bytes -= files.rows_nbytes(oldest)
            self.counters.report("disk_full", self._rows([oldest]),
                                 detail=f"memory buffer of {limit // MiB} MB is full")

    def _rows(self, batches: list[Rows]) -> int:
        main = self.layout.datasets[0].path
        return sum(len(b.get(main, ())) for b in batches)

    # ------------------------------------------------------------------ writing

    async def flush(self, final: bool = False, reopen: bool = True) -> None:
        """Write what is pending (if the disk allows), then rotate or close as due; inside a
        run a closed chunk is followed by the next at once unless ``reopen`` is false."""
        async with self._lock:
            self._last_flush = time.monotonic()
            out = self.config.output
            if self._recovery_waits and not self._disk_full:
                await self._recover()
            await self._write_pending(self.obs)
            if self._file is not None and (
                    final or self._disk_full
                    or time.monotonic() - self._file.opened >= out.max_file_age_s
                    or self._file.size() >= out.max_file_bytes):
                await self._close()
                if reopen and self.obs is not None and self.running and not self._disk_full:
                    await self._in_thread(self._open, self.obs)

    async def _write_pending(self, run: runs.Run | None) -> None:
        """Write the pending rows into the open file (one named for ``run`` if none is open)."""
        room = (self._pending or self._disk_full) and self._space_for(self._pending_bytes)
        if self._pending and room:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            await self._in_thread(self._write, _merge(batch), run, in_flight=self._rows(batch))

    async def _close(self) -> None:
        """End the file's interval: the counters at the bound, then the ledger into the file."""
        ledger = await self.poll_ledger(bound=True)
        await self._in_thread(self._close_file, ledger)

    def _space_for(self, nbytes: int) -> bool:
        self._free = files.free_bytes(self.directory)
        need = nbytes + self.config.output.min_free_bytes + _SLACK_BYTES
        if self._free >= need:
            if self._disk_full:
                self._disk_full = False
                self.log.warning("disk space is back (%d MB free): writing again",
                                 self._free // MiB)
            return True
        if not self._disk_full:
            self._disk_full = True
            self._bound_buffer()
            self.log.error("disk full: %d MB free in %s, %d MB needed; writing stopped, holding "
                           "data in memory (up to %d MB)", self._free // MiB,
                           self.directory, need // MiB,
                           self.config.output.max_buffer_bytes // MiB)
            systemd.notify(f"STATUS={self.status_line()}")
        return False

    async def _in_thread(self, work: Any, *args: Any, in_flight: int = 0) -> None:
        self._writing_since = time.monotonic()
        try:
            await asyncio.to_thread(work, *args)
        except files.WriteFailed as e:
            self._fail(e, in_flight)
        finally:
            self._writing_since = None

    def _open(self, run: runs.Run | None) -> None:
        if run is None:
            stems = files.continuous_stems(self.prefix)
        else:
            chunk = files.next_chunk(self.directory, self.prefix, run.obs_id, run.stamp)
            stems = files.run_stems(self.prefix, run.obs_id, run.stamp, chunk)
        self._file = files.OpenFile(self.directory, stems, self.layout,
                                    self.config.output.compression_level)
        self._file.annotate(provenance.opening(
            self._file, run, stream=self.layout.stream, writer=self.service,
            record=self.config.run.record, interval_start_ns=self.books.current.start_ns,
            upstream=self._upstream(), writer_config=configlib.render(self.config)))
        self._file_bytes = 0
        self.counters.add("files")
        self.log.info("new file %s", self._file.part.name)

    def _write(self, rows: Rows, run: runs.Run | None) -> None:
        if self._file is None:
            self._open(run)
        assert self._file is not None
        self._file.append(rows)
        self.counters.add("written", len(rows.get(self.layout.datasets[0].path, ())))
        size = self._file.size()
        self.counters.add("written_bytes", size - self._file_bytes)
        self._file_bytes = size

    def _close_file(self, ledger: Ledger) -> None:
        file = self._file
        if file is not None:
            file.annotate(provenance.closing(file, ledger.configs, ledger.dropins, [
                s for s in self._upstream() if not ledger.processes.get(s)]), *ledger.rows())
            path = file.close()
            # the provenance written at the close, and the checksum beside the file
            self.counters.add("written_bytes", path.stat().st_size - self._file_bytes
                              + Path(f"{path}{files.CHECKSUM}").stat().st_size)
            self._file = None  # only now: status shows no file once the file is complete
            self._remember(path)
            self.log.info("closed %s (%d rows)", path.name, file.rows)

    # ------------------------------------------------------------------ runs and the ledger

    async def follow_run(self) -> dict[str, Any]:
        """Switch to the run the state file names, unless it is the one being recorded."""
        async with self._lock:  # read inside: a switch in progress ends before the next read
            seen = runs.signature()
            try:
                run = runs.read().run
            except runs.RunError as e:
                if seen != self._run_seen:
                    self.log.error("%s: recording goes on as before", e)
                self._run_seen = seen
                return self.run_fields()
            self._run_seen = seen
            if run == self.obs:
                return self.run_fields()
            previous, self.obs = self.obs, run  # from here on, what arrives is the new run's
            await self._write_pending(previous)
            if self._file is not None:
                await self._close()
            else:  # the interval ends with no file to keep its ledger: nothing was written
                await self.poll_ledger(bound=True)
            if previous is not None:
                self.log.info("observation %d ended", previous.obs_id)
            if run is not None:
                if self._space_for(0):
                    await self._in_thread(self._open, run)
                self.log.info("observation %d started: recording into %s", run.obs_id,
                              self._file.part.name if self._file else "nothing (disk full)")
        return self.run_fields()

    def _upstream(self) -> list[str]:
        """The receivers whose streams are subscribed: their counters go into the ledger."""
        return [inp.stream for inp in self.layout.inputs
                if getattr(self.config.inputs, inp.stream).endpoint]  # type: ignore[attr-defined]

    async def poll_ledger(self, bound: bool = False) -> Ledger:
        """Read the counters into the ledger; at a ``bound`` the interval ends (its ledger)."""
        return await self.books.poll(self._upstream(), self.config.ledger.timeout_s, bound)

    async def cmd_run_sync(self) -> dict[str, Any]:
        """Follow the run state now (ssdaqctl run start|stop sends it); the run and the file."""
        return await self.follow_run()

    def run_fields(self) -> dict[str, Any]:
        run = self.obs
        return {"obs_id": run.obs_id if run else None, "comment": run.comment if run else None,
                "start_utc": runs.iso(run.start_ns) if run else None,
                "recording": run is not None or self.config.run.record == "continuous",
                "file": self._file.part.name if self._file else None}

    def _remember(self, path: Path) -> None:
        self._finished = (self._finished + [path.name])[-_KEEP_NAMES:]

    def _fail(self, error: files.WriteFailed, in_flight: int) -> None:
        """HDF5 failed: its handles cannot be trusted, so exit now and let systemd restart."""
        lost = in_flight + self._rows(self._pending)
        self.log.critical("%s; exiting (%d rows held in memory are lost); the next start verifies "
                          "the file", error, lost)
        systemd.notify(f"STATUS=write failed, exiting: {error}")
        os._exit(EX_IOERR)

    # ------------------------------------------------------------------ status

    async def cmd_rotate(self) -> str:
        """Write what is pending and close the current file now (the next rows open a new one)."""
        await self.flush(final=True)
        return self._finished[-1] if self._finished else "no file written yet"

    def health_problem(self) -> str | None:
        stuck = max(10.0, 2 * (systemd.watchdog_interval_s() or 0.0))
        if self._writing_since is not None and time.monotonic() - self._writing_since > stuck:
            return f"HDF5 write stuck for {time.monotonic() - self._writing_since:.0f} s"
        return super().health_problem()

    def status_line(self) -> str:
        rate = self.counters.rates.get("received", 0.0)
        held = self._rows(self._pending)
        obs = f"obs {self.obs.obs_id}: " if self.obs is not None else ""
        if self._disk_full:
            state = (f"DISK FULL ({self._free // MiB} MB free): {obs}holding {held} rows, "
                     f"dropped {self.counters['disk_full']}")
        elif self.obs is None and self.config.run.record == "runs":
            state = "no observation open: not recording"
        else:
            state = obs + (self._file.part.name if self._file else "no file open")
        return (f"{state}; {rate:.1f} msg/s, {self.counters['written']} rows in "
                f"{self.counters['files']} files; {self.lost_summary()}")

    def status_fields(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "file": self._file.part.name if self._file else None,
            "file_rows": self._file.rows if self._file else 0,
            "file_bytes": self._file_bytes if self._file else 0,
            "file_age_s": round(time.monotonic() - self._file.opened, 1) if self._file else None,
            "finished": list(self._finished),
            "pending_rows": self._rows(self._pending),
            "pending_bytes": self._pending_bytes,
            "disk_full": self._disk_full,
            "free_bytes": self._free,
            "reserve_bytes": self.config.output.min_free_bytes,
            "sequence": {"last": self.sequence.last, "missed": self.sequence.missed,
                         "gaps": self.sequence.gaps, "restarts": self.sequence.restarts},
            "inputs": [inp.stream for inp, _ in self._subscriptions],
            "run": self.run_fields(),
        }


def _merge(batches: list[Rows]) -> Rows:
    """One Rows per write: each dataset's rows concatenated in arrival order."""
    out: dict[str, list] = {}
    for rows in batches:
        for path, values in rows.items():
            out.setdefault(path, []).append(values)
    return {path: np.concatenate(parts) if isinstance(parts[0], np.ndarray)
            else list(itertools.chain.from_iterable(parts)) for path, parts in out.items()}


class ReadoutWriter(StreamWriter):
    """``ssdaq-writer readout``: /SlowSignal/readout (+ tel_table), the original layout."""

    config_class = ReadoutWriterConfig
    service_name = service_name("readout")
    layout = LAYOUTS["readout"]


class TriggerWriter(StreamWriter):
    """``ssdaq-writer trigger``: /Trigger/packet and /Trigger/raw."""

    config_class = TriggerWriterConfig
    service_name = service_name("trigger")
    layout = LAYOUTS["trigger"]


class TimestampWriter(StreamWriter):
    """``ssdaq-writer timestamp``: /Timestamp/trigger."""

    config_class = TimestampWriterConfig
    service_name = service_name("timestamp")
    layout = LAYOUTS["timestamp"]
