"""The files one writer produces: named by UTC start time, never overwritten, never left corrupt.

A file is written as ``<stem>.hdf5.part`` (created exclusively) and becomes ``<stem>.hdf5`` only
after it was closed and fsync'ed; the final name is taken with ``link()``, which fails instead
of replacing an existing file. A ``*.hdf5`` file is therefore always complete, and beside it
``<stem>.hdf5.sha256`` (``sha256sum`` format, also never replaced) lets ``sha256sum -c`` check
it wherever it was copied. A ``.part`` file is one being written, or the leftover of a process
that was killed: ``ssdaq.io.recovery`` deals with those.

Stems: outside observations ``<prefix>_<YYYYmmdd_HHMMSS>`` (UTC start of the file), a name
collision (two files in one second, a clock step) getting a ``_1``, ``_2`` … suffix; in an
observation ``<prefix>_obs<id, 6 digits>_<UTC start of the run>_<chunk, 3 digits>``, every chunk
of a run sharing the run's start so that they sort together, the chunk number counting on from
the highest one in the directory (a writer restarted during the run continues it).

HDF5 must never see a full disk: after a failed write (ENOSPC) the library's handles are unusable
and closing them can crash the process. The writer keeps a reserve of free space and stops before
it (see ``ssdaq.tools.writer``); :class:`WriteFailed` covers the case where something else filled
the disk between the check and the write.
"""

import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ssdaq.io import hdf5, provenance
from ssdaq.io.layouts import FileLayout, Rows

EXT = ".hdf5"
PART = EXT + ".part"
DAMAGED = EXT + ".damaged"
CHECKSUM = ".sha256"
#: a run file's stem: prefix, obs id, UTC start of the run, chunk (then maybe _salvaged, ...)
RUN_STEM = re.compile(r"^(?P<prefix>.+)_obs(?P<obs_id>\d{6,})_(?P<start>\d{8}T\d{6}Z)"
                      r"_(?P<chunk>\d{3,})")


class WriteFailed(Exception):
    """HDF5 refused a write; the open file must not be touched again in this process."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_new_name(src: Path, stem: Path, ext: str) -> Path:
    """Hard-link ``src`` to ``stem + ext`` or the first free ``stem_N + ext``; returns the name."""
    for n in range(10_000):
        dest = Path(f"{stem}{'' if n == 0 else f'_{n}'}{ext}")
        try:
            os.link(src, dest)
        except FileExistsError:
            continue
        return dest
    raise FileExistsError(f"no free name for {stem}{ext}")


def publish(part: Path, ext: str = EXT) -> Path:
    """Give a closed ``.part`` file its final name (never replacing a file) and drop the .part;
    a complete file (``ext`` .hdf5) gets its checksum file."""
    stem = Path(str(part)[: -len(PART)])
    dest = _link_new_name(part, stem, ext)
    os.unlink(part)
    if ext == EXT:
        write_checksum(dest)
    _fsync_dir(part.parent)
    return dest


def write_checksum(path: Path) -> Path:
    """``path.sha256`` in ``sha256sum`` format (hash, two spaces, the file's name), written
    completely before it takes its name, which it never takes from an existing file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    dest = Path(f"{path}{CHECKSUM}")
    tmp = Path(f"{dest}.part")
    with open(tmp, "w") as f:
        f.write(f"{digest.hexdigest()}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, dest)
    finally:
        os.unlink(tmp)
    return dest


def continuous_stems(prefix: str, stamp: str | None = None) -> Iterator[str]:
    """Candidate stems of a file outside observations: ``<prefix>_<UTC now>``, then ``_1``, …"""
    stamp = stamp or time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    yield f"{prefix}_{stamp}"
    for n in range(1, 10_000):
        yield f"{prefix}_{stamp}_{n}"


def run_stems(prefix: str, obs_id: int, run_stamp: str, chunk: int) -> Iterator[str]:
    """Candidate stems of an observation's chunk ``chunk``, then of the chunks after it."""
    for n in range(chunk, chunk + 10_000):
        yield f"{prefix}_obs{obs_id:06d}_{run_stamp}_{n:03d}"


def next_chunk(directory: Path, prefix: str, obs_id: int, run_stamp: str) -> int:
    """One above the highest chunk of the run found in ``directory`` in any state (0: none)."""
    chunks = [int(m["chunk"]) for p in directory.glob(f"{prefix}_obs{obs_id:06d}_{run_stamp}_*")
              if (m := RUN_STEM.match(p.name)) and m["prefix"] == prefix]
    return max(chunks, default=-1) + 1


class OpenFile:
    """One ``.part`` file being written: its datasets, rows written and age."""

    def __init__(self, directory: Path, stems: str | Iterable[str], layout: FileLayout,
                 compression_level: int) -> None:
        """``stems``: the candidate names without extension, the first free one is taken; a
        plain string is a prefix named as outside observations (:func:`continuous_stems`)."""
        for name in continuous_stems(stems) if isinstance(stems, str) else stems:
            stem = directory / name
            if (final := Path(f"{stem}{EXT}")).exists():
                continue
            try:
                self.h5 = h5py.File(f"{stem}{PART}", "x")  # exclusive: fails if it exists
            except OSError as e:  # FileExistsError, or a plain OSError if this process has it open
                if Path(f"{stem}{PART}").exists():
                    continue
                raise WriteFailed(f"cannot create {stem}{PART}: {e}") from e
            break
        else:
            raise FileExistsError(f"no free file name in {directory} (the last tried: {name})")
        self.part, self.final = Path(f"{stem}{PART}"), final
        self.opened = time.monotonic()
        self.opened_ns = time.time_ns()
        self.rows = 0
        try:
            hdf5.init_file(self.h5, layout.title)
            groups = {name: hdf5.group(self.h5, name, title) for name, title in layout.groups.items()}
            self.datasets = {
                d.path: (hdf5.create_table(groups[d.group], d.name, d.dtype, d.title, d.attrs,
                                           compression_level)
                         if d.dtype is not None else
                         hdf5.create_vlarray(groups[d.group], d.name, d.title))
                for d in layout.datasets
            }
            self.h5.flush()
        except Exception as e:
            raise WriteFailed(f"cannot create {self.part}: {e}") from e
        self.main = layout.datasets[0].path
        self._time_ns = layout.time_ns
        #: UTC (ns) of the first and last row written, 0 before any
        self.first_ns = self.last_ns = 0

    def append(self, rows: Rows) -> None:
        """Append every dataset's rows and flush to disk (the file is consistent afterwards)."""
        try:
            for path, values in rows.items():
                hdf5.append(self.datasets[path], values)
            self.h5.flush()
        except Exception as e:
            raise WriteFailed(f"cannot write {self.part}: {e}") from e
        main = rows.get(self.main, ())
        if len(main):
            times = self._time_ns(main)
            self.first_ns = self.first_ns or int(times[0])
            self.last_ns = int(times[-1])
        self.rows += len(main)

    def annotate(self, attrs: Mapping[str, Any], ledger: np.ndarray | None = None,
                 gaps: np.ndarray | None = None) -> None:
        """Set ``/Provenance`` attributes, and at the close its ledger and gap tables."""
        try:
            provenance.write_attributes(self.h5, attrs)
            if ledger is not None and gaps is not None:
                provenance.write_tables(self.h5, ledger, gaps)
            self.h5.flush()
        except Exception as e:
            raise WriteFailed(f"cannot write the provenance of {self.part}: {e}") from e

    def size(self) -> int:
        return self.part.stat().st_size

    def close(self) -> Path:
        """Close, fsync and publish under the final name; returns that name."""
        try:
            self.h5.close()
        except Exception as e:
            raise WriteFailed(f"cannot close {self.part}: {e}") from e
        fd = os.open(self.part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return publish(self.part)


def free_bytes(directory: Path) -> int:
    """Bytes available to this (unprivileged) user in ``directory``'s filesystem."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def rows_nbytes(rows: Rows) -> int:
    """Uncompressed size of a batch of rows: an upper bound of what writing it adds to a file."""
    return sum(v.nbytes if isinstance(v, np.ndarray) else sum(len(x) for x in v)
               for v in rows.values())
