"""Where a writer's rows go: held in memory, then into the file open in its directory; the
files it finished; the disk.

Kept apart from the service (:mod:`ssdaq.receivers.writer`), which decides when to write,
rotate and switch runs, so that this holds the blocking file work alone (the service runs it in
a worker thread) and the whole full-disk policy: before each write the free space must exceed
``min_free_bytes`` plus the rows' uncompressed size plus some slack for HDF5's metadata, so a
full disk never reaches HDF5; while it is full, rows are held up to ``max_buffer_bytes``, the
oldest dropped beyond (counted as ``disk_full``). Nothing here calls back into the service: the
disk's state is :attr:`Output.disk_full`, and the service acts on a change.
"""

import itertools
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ssdaq import runs
from ssdaq.core.counters import Counters
from ssdaq.io import files, provenance, recovery
from ssdaq.io.layouts import FileLayout, Rows
from ssdaq.receivers.writer_config import DEFAULT_DATA_DIR, MiB, OutputSettings
from ssdaq.receivers.writer_ledger import Ledger

SLACK_BYTES = 1024 * 1024  # HDF5 metadata written besides the rows (headers, B-tree nodes)
_KEEP_NAMES = 10


def place(out: OutputSettings, stream: str) -> tuple[Path, str]:
    """The directory and the file-name prefix ``out`` names for ``stream``'s files."""
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_DATA_DIR
    return Path(out.directory) if out.directory else Path(base) / stream, out.prefix or stream


class Output:
    """The rows not yet written (:attr:`held`), the open file (:attr:`file`, None between
    files), the names of the latest finished ones, and the free space of :attr:`directory`
    when last looked at."""

    def __init__(self, directory: Path, prefix: str, layout: FileLayout, counters: Counters,
                 log: logging.Logger) -> None:
        self.directory, self.prefix, self.layout = directory, prefix, layout
        self.counters, self.log = counters, log
        self.held: list[Rows] = []
        self.held_bytes = 0  # uncompressed
        self.file: files.OpenFile | None = None
        self.file_bytes = 0  # size of the open file after its latest write
        self.finished: list[str] = []
        self.disk_full = False
        self.recovery_waits = False
        self.free = 0

    def recover(self, min_free: int) -> None:
        """Publish or salvage the ``.part`` files a killed writer left, once there is room for
        the copies a salvage makes (until then they wait; see ``ssdaq.io.recovery``)."""
        parts = list(self.directory.glob(f"{self.prefix}_*{files.PART}"))
        need = sum(p.stat().st_size for p in parts) + min_free
        if parts and files.free_bytes(self.directory) < need + SLACK_BYTES:
            if not self.recovery_waits:
                self.log.warning("%d unfinished files are left as they are until the disk has "
                                 "room to recover them", len(parts))
            self.recovery_waits = True
            return
        self.recovery_waits = False
        for path in recovery.recover(self.directory, self.prefix, self.layout, self.log):
            self._remember(path)

    def hold(self, rows: Rows, out: OutputSettings) -> None:
        """Keep ``rows`` until the next write (within ``max_buffer_bytes`` while the disk is full)."""
        self.held.append(rows)
        self.held_bytes += files.rows_nbytes(rows)
        if self.disk_full:
            self._bound(out.max_buffer_bytes)

    @property
    def held_rows(self) -> int:
        return self.rows(self.held)

    def rows(self, batches: list[Rows]) -> int:
        main = self.layout.datasets[0].path
        return sum(len(b.get(main, ())) for b in batches)

    def take(self, out: OutputSettings) -> tuple[Rows, int] | None:
        """The held rows merged into one write, and how many, if the disk has room for them
        (asked even with nothing held while the disk is full, to notice space coming back)."""
        room = (self.held or self.disk_full) and self.space_for(self.held_bytes, out)
        if not (self.held and room):
            return None
        batch, self.held, self.held_bytes = self.held, [], 0
        return _merge(batch), self.rows(batch)

    def _bound(self, limit: int) -> None:
        while self.held_bytes > limit and self.held:
            oldest = self.held.pop(0)
            self.held_bytes -= files.rows_nbytes(oldest)
            self.counters.report("disk_full", self.rows([oldest]),
                                 detail=f"memory buffer of {limit // MiB} MB is full")

    def space_for(self, nbytes: int, out: OutputSettings) -> bool:
        """Whether ``nbytes`` may be written now; says so when the disk fills (and bounds what
        is held) or space returns."""
        self.free = files.free_bytes(self.directory)
        need = nbytes + out.min_free_bytes + SLACK_BYTES
        if self.free >= need:
            if self.disk_full:
                self.disk_full = False
                self.log.warning("disk space is back (%d MB free): writing again",
                                 self.free // MiB)
            return True
        if not self.disk_full:
            self.disk_full = True
            self._bound(out.max_buffer_bytes)
            self.log.error("disk full: %d MB free in %s, %d MB needed; writing stopped, holding "
                           "data in memory (up to %d MB)", self.free // MiB, self.directory,
                           need // MiB, out.max_buffer_bytes // MiB)
        return False

    def open(self, stems: Iterable[str], compression: int, run: runs.Run | None,
             **about: Any) -> None:
        """Open the next file, with the provenance of its opening (``about``: see
        :func:`ssdaq.io.provenance.opening`)."""
        self.file = files.OpenFile(self.directory, stems, self.layout, compression)
        self.file.annotate(provenance.opening(self.file, run, **about))
        self.file_bytes = 0
        self.counters.add("files")
        self.log.info("new file %s", self.file.part.name)

    def append(self, rows: Rows) -> None:
        """Append ``rows`` to the open file and count them, and the bytes they took."""
        assert self.file is not None
        self.file.append(rows)
        self.counters.add("written", len(rows.get(self.layout.datasets[0].path, ())))
        size = self.file.size()
        self.counters.add("written_bytes", size - self.file_bytes)
        self.file_bytes = size

    def close(self, ledger: Ledger, upstream: list[str]) -> None:
        """Close the open file (if any) with its interval's ledger, and publish it."""
        file = self.file
        if file is not None:
            file.annotate(provenance.closing(file, ledger.configs, ledger.dropins, [
                s for s in upstream if not ledger.processes.get(s)]), *ledger.rows())
            path = file.close()
            # the provenance written at the close, and the checksum beside the file
            self.counters.add("written_bytes", path.stat().st_size - self.file_bytes
                              + Path(f"{path}{files.CHECKSUM}").stat().st_size)
            self.file = None  # only now: status shows no file once the file is complete
            self._remember(path)
            self.log.info("closed %s (%d rows)", path.name, file.rows)

    def _remember(self, path: Path) -> None:
        self.finished = (self.finished + [path.name])[-_KEEP_NAMES:]


def _merge(batches: list[Rows]) -> Rows:
    """One Rows per write: each dataset's rows concatenated in arrival order."""
    out: dict[str, list[Any]] = {}
    for rows in batches:
        for path, values in rows.items():
            out.setdefault(path, []).append(values)
    return {path: np.concatenate(parts) if isinstance(parts[0], np.ndarray)
            else list(itertools.chain.from_iterable(parts)) for path, parts in out.items()}
