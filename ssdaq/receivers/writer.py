"""The ``ssdaq-writer`` service: subscribe, hold rows briefly, write HDF5, rotate, survive a full disk.

A writer is a ReceiverServer whose input is zmq SUB sockets (:mod:`ssdaq.receivers.writer_inputs`),
so the framework provides its lifecycle (READY/STATUS/WATCHDOG/STOPPING, SIGHUP, command socket,
MonitorData, exit codes). This module decides when things happen; the files, the rows held
and the disk are :mod:`ssdaq.receivers.writer_output`'s, the run being followed
:mod:`ssdaq.receivers.writer_runs`'s.

Data path: each receive batch is converted to rows at once (bad messages counted per reason,
readout numbers checked for gaps) and held in memory; every ``flush_interval_s``, or once
``flush_bytes`` are waiting, the rows are appended to the open ``.part`` file in a worker thread
and flushed to disk, so the event loop keeps receiving meanwhile. At SIGTERM the writer stops
receiving, takes what zmq already queued, writes everything and publishes the file: nothing
received is lost. Files rotate by size (checked after each write) and by age.

A full disk never reaches HDF5: below the reserve the writer closes the file (so it is
complete), says so in the journal and in STATUS=, holds rows in memory, and resumes in a new
file when space returns. Should a write fail anyway (the disk filled between check and write),
the HDF5 library's state cannot be trusted: the process logs the loss and exits with 74
(EX_IOERR); systemd restarts it, and the restarted writer salvages the ``.part`` file it left
(``ssdaq.io.recovery``).

Observations: when a run starts or stops, what was
received until then goes into the current file, which is closed; a run's first chunk opens at
once, and after a rotation inside a run the next chunk too, so that a run's chunks cover it
without a hole, each with its ledger. Outside runs, ``[run] record = "runs"`` discards what
arrives (counted as ``not_recorded``). Every file carries its provenance and the loss ledger of
its interval (:mod:`ssdaq.io.provenance`, :mod:`ssdaq.receivers.writer_ledger`).
"""

import asyncio
import os
import time
from typing import Any, ClassVar

import zmq
import zmq.asyncio

from ssdaq import runs
from ssdaq.core import config as configlib
from ssdaq.core import systemd
from ssdaq.core.errors import UnavailableError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.io import files
from ssdaq.io.layouts import LAYOUTS, FileLayout, Input, Rows
from ssdaq.receivers.writer_config import (
    MiB,
    ReadoutWriterConfig,
    TimestampWriterConfig,
    TriggerWriterConfig,
    WriterConfig,
    service_name,
)
from ssdaq.receivers.writer_inputs import Subscriptions, drain
from ssdaq.receivers.writer_ledger import Bookkeeper, Ledger
from ssdaq.receivers.writer_output import Output, place
from ssdaq.receivers.writer_runs import RunFollower, stems
from ssdaq.subscribers import SequenceTracker

EX_IOERR = os.EX_IOERR


class StreamWriter(ReceiverServer[WriterConfig]):
    """Writes the streams of :attr:`layout` to rotating HDF5 files (see the module docstring)."""

    layout: ClassVar[FileLayout]
    counter_names = ("written", "written_bytes", "files", "missed", "disk_full", "not_recorded",
                     "bad_size", "bad_message", "bad_magic", "unknown_type", "bad_phase")

    def __init__(self) -> None:
        stream = self.layout.stream
        super().__init__("", 0, [], f"{stream.capitalize()}Writer")
        self.out = Output(*place(self.config.output, stream), self.layout, self.counters, self.log)
        self.sequence = SequenceTracker()
        self._lock = asyncio.Lock()
        self._writing_since: float | None = None
        self._last_flush = time.monotonic()
        self.subscriptions = Subscriptions(
            self._context, self.layout, self.config.inputs)  # type: ignore[attr-defined]
        self.runs = RunFollower(self.log)
        self.books = Bookkeeper(self.service, lambda: dict(self.counters.values))
        self._setup = True

    @classmethod
    def from_config(cls, config: Any) -> "StreamWriter":
        return cls()

    # ------------------------------------------------------------------ lifecycle hooks

    async def on_start(self) -> None:
        directory = self.out.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UnavailableError(f"cannot create the data directory {directory}: {e}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UnavailableError(f"cannot write in the data directory {directory}")
        await asyncio.to_thread(self.out.recover, self.config.output.min_free_bytes)
        self.out.free = files.free_bytes(directory)
        self.log.info("writing %s files to %s (%d MB free)", self.layout.stream, directory,
                      self.out.free // MiB)
        await self.poll_ledger(bound=True)  # the first interval starts with what is up now
        await self.follow_run()

    async def ct_receive(self) -> None:
        """Receive every subscribed stream (one task each) until stopped."""
        await asyncio.gather(*(self._receive(inp, sock)
                               for inp, sock in self.subscriptions.sockets))

    async def ct_flush(self) -> None:
        """Write on the timer, rotate by age, notice when space comes back or the run changed."""
        while True:
            interval = self.config.output.flush_interval_s  # read each time: reload changes it
            await asyncio.sleep(min(0.2, interval))
            if self.runs.stale():
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
        for inp, sock in self.subscriptions.sockets:
            while batch := drain(sock):
                self._take(inp, batch)
        await self.flush(final=True)
        self.subscriptions.close()
        if self.out.held:
            self.log.error("stopped with %d rows unwritten: the disk is full", self.out.held_rows)

    async def on_reload(self, old: Any, new: Any) -> None:
        """Everything applies live: a new directory or prefix starts a new file, a new endpoint
        is subscribed instead of the old one (the other settings are read at each use)."""
        directory, prefix = place(new.output, self.layout.stream)
        if (directory, prefix) != (self.out.directory, self.out.prefix):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self.log.error("cannot create %s (%s): still writing to %s", directory, e,
                               self.out.directory)
            else:
                await self.flush(final=True, reopen=False)
                self.out.directory, self.out.prefix = directory, prefix
                self.log.info("writing to %s/%s_* from now on", directory, prefix)
        self.subscriptions.reconnect(old.inputs, new.inputs, self.log)

    # ------------------------------------------------------------------ receiving

    async def _receive(self, inp: Input, sock: zmq.asyncio.Socket) -> None:
        while True:
            await sock.poll(flags=zmq.POLLIN)  # type: ignore[call-arg]  # pyzmq's stub lacks flags
            batch = drain(sock)
            if batch:
                self._take(inp, batch)
            if self.out.held_bytes >= self.config.output.flush_bytes and not self._lock.locked():
                await self.flush()

    def _take(self, inp: Input, batch: list[bytes]) -> None:
        self.counters.add("received", len(batch))
        rows, rejected = inp.convert(batch, time.time_ns())
        for error in rejected:
            self.counters.report(error.reason, detail=str(error), peer=inp.stream)
        if self.layout.sequence and self.layout.sequence[0] in rows:
            self._check_sequence(rows)
        if self.runs.discards(self.config.run.record):
            self.counters.add("not_recorded", len(batch))
            return
        self.out.hold(rows, self.config.output)

    def _check_sequence(self, rows: Rows) -> None:
        path, column = self.layout.sequence  # type: ignore[misc]
        now = time.time_ns()
        for before, after in self.sequence.check(rows[path][column]):
            self.counters.report("missed", after - before - 1,
                                 detail=f"{column} {before + 1}..{after - 1} never arrived")
            self.books.current.gap(column, before, after, now)
        for before, after in self.sequence.last_restarts:
            self.books.current.restart(column, before, after, now)

    # ------------------------------------------------------------------ writing

    async def flush(self, final: bool = False, reopen: bool = True) -> None:
        """Write what is pending (if the disk allows), then rotate or close as due; inside a
        run a closed chunk is followed by the next at once unless ``reopen`` is false."""
        async with self._lock:
            self._last_flush = time.monotonic()
            out = self.config.output
            if self.out.recovery_waits and not self.out.disk_full:
                await asyncio.to_thread(self.out.recover, out.min_free_bytes)
            await self._write_pending(self.runs.obs)
            file = self.out.file
            if file is not None and (
                    final or self.out.disk_full
                    or time.monotonic() - file.opened >= out.max_file_age_s
                    or file.size() >= out.max_file_bytes):
                await self._close()
                run = self.runs.obs
                if reopen and run is not None and self.running and not self.out.disk_full:
                    await self._in_thread(self._open, run)

    async def _write_pending(self, run: runs.Run | None) -> None:
        """Write the held rows into the open file (one named for ``run`` if none is open)."""
        full = self.out.disk_full
        batch = self.out.take(self.config.output)
        self._said_if_full(full)
        if batch is not None:
            rows, n = batch
            await self._in_thread(self._write, rows, run, in_flight=n)

    async def _close(self) -> None:
        """End the file's interval: the counters at the bound, then the ledger into the file."""
        ledger = await self.poll_ledger(bound=True)
        await self._in_thread(self.out.close, ledger, self._upstream())

    def _said_if_full(self, was_full: bool) -> None:
        """A disk that just filled is told in STATUS= at once, not at the next status tick."""
        if self.out.disk_full and not was_full:
            systemd.notify(f"STATUS={self.status_line()}")

    async def _in_thread(self, work: Any, *args: Any, in_flight: int = 0) -> None:
        self._writing_since = time.monotonic()
        try:
            await asyncio.to_thread(work, *args)
        except files.WriteFailed as e:
            self._fail(e, in_flight)
        finally:
            self._writing_since = None

    def _open(self, run: runs.Run | None) -> None:
        """Open the next file (in a worker thread), named for ``run``, with its provenance."""
        out = self.out
        out.open(stems(out.directory, out.prefix, run), self.config.output.compression_level,
                 run, stream=self.layout.stream, writer=self.service,
                 record=self.config.run.record, interval_start_ns=self.books.current.start_ns,
                 upstream=self._upstream(), writer_config=configlib.render(self.config))

    def _write(self, rows: Rows, run: runs.Run | None) -> None:
        if self.out.file is None:
            self._open(run)
        self.out.append(rows)

    # ------------------------------------------------------------------ runs and the ledger

    async def follow_run(self) -> dict[str, Any]:
        """Switch to the run the state file names, unless it is the one being recorded."""
        async with self._lock:  # read inside: a switch in progress ends before the next read
            change = self.runs.read()  # from here on, what arrives is the new run's
            if change is not None:
                await self._switch(*change)
        return self.run_fields()

    async def _switch(self, previous: runs.Run | None, run: runs.Run | None) -> None:
        """What arrived until now goes into ``previous``'s file, closed; ``run``'s opens."""
        await self._write_pending(previous)
        if self.out.file is not None:
            await self._close()
        else:  # the interval ends with no file to keep its ledger: nothing was written
            await self.poll_ledger(bound=True)
        if previous is not None:
            self.log.info("observation %d ended", previous.obs_id)
        if run is not None:
            full = self.out.disk_full
            room = self.out.space_for(0, self.config.output)
            self._said_if_full(full)
            if room:
                await self._in_thread(self._open, run)
            file = self.out.file
            self.log.info("observation %d started: recording into %s", run.obs_id,
                          file.part.name if file else "nothing (disk full)")

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
        file = self.out.file
        return self.runs.fields(self.config.run.record, file.part.name if file else None)

    def _fail(self, error: files.WriteFailed, in_flight: int) -> None:
        """HDF5 failed: its handles cannot be trusted, so exit now and let systemd restart."""
        lost = in_flight + self.out.held_rows
        self.log.critical("%s; exiting (%d rows held in memory are lost); the next start verifies "
                          "the file", error, lost)
        systemd.notify(f"STATUS=write failed, exiting: {error}")
        os._exit(EX_IOERR)

    # ------------------------------------------------------------------ status

    async def cmd_rotate(self) -> str:
        """Write what is pending and close the current file now (the next rows open a new one)."""
        await self.flush(final=True)
        return self.out.finished[-1] if self.out.finished else "no file written yet"

    def health_problem(self) -> str | None:
        stuck = max(10.0, 2 * (systemd.watchdog_interval_s() or 0.0))
        if self._writing_since is not None and time.monotonic() - self._writing_since > stuck:
            return f"HDF5 write stuck for {time.monotonic() - self._writing_since:.0f} s"
        return super().health_problem()

    def status_line(self) -> str:
        rate = self.counters.rates.get("received", 0.0)
        held, run, out = self.out.held_rows, self.runs.obs, self.out
        obs = f"obs {run.obs_id}: " if run is not None else ""
        if out.disk_full:
            state = (f"DISK FULL ({out.free // MiB} MB free): {obs}holding {held} rows, "
                     f"dropped {self.counters['disk_full']}")
        elif self.runs.discards(self.config.run.record):
            state = "no observation open: not recording"
        else:
            state = obs + (out.file.part.name if out.file else "no file open")
        return (f"{state}; {rate:.1f} msg/s, {self.counters['written']} rows in "
                f"{self.counters['files']} files; {self.lost_summary()}")

    def status_fields(self) -> dict[str, Any]:
        out, file = self.out, self.out.file
        return {
            "directory": str(out.directory),
            "file": file.part.name if file else None,
            "file_rows": file.rows if file else 0,
            "file_bytes": out.file_bytes if file else 0,
            "file_age_s": round(time.monotonic() - file.opened, 1) if file else None,
            "finished": list(out.finished),
            "pending_rows": out.held_rows,
            "pending_bytes": out.held_bytes,
            "disk_full": out.disk_full,
            "free_bytes": out.free,
            "reserve_bytes": self.config.output.min_free_bytes,
            "sequence": {"last": self.sequence.last, "missed": self.sequence.missed,
                         "gaps": self.sequence.gaps, "restarts": self.sequence.restarts},
            "inputs": [inp.stream for inp, _ in self.subscriptions.sockets],
            "run": self.run_fields(),
        }


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
