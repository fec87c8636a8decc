"""The files one writer produces: named by UTC start time, never overwritten, never left corrupt.

A file is written as ``<prefix>_<YYYYmmdd_HHMMSS>.hdf5.part`` (created exclusively) and becomes
``<prefix>_<YYYYmmdd_HHMMSS>.hdf5`` only after it was closed and fsync'ed; the final name is
taken with ``link()``, which fails instead of replacing an existing file, so a name collision
(two files in one second, a clock step) gets a ``_1``, ``_2`` … suffix. A ``*.hdf5`` file is
therefore always complete. A ``.part`` file is one being written, or the leftover of a process
that was killed: ``ssdaq.io.recovery`` deals with those.

HDF5 must never see a full disk: after a failed write (ENOSPC) the library's handles are unusable
and closing them can crash the process. The writer keeps a reserve of free space and stops before
it (see ``ssdaq.tools.writer``); :class:`WriteFailed` covers the case where something else filled
the disk between the check and the write.
"""

import os
import time
from pathlib import Path

import h5py
import numpy as np

from ssdaq.io import hdf5
from ssdaq.io.layouts import FileLayout, Rows

EXT = ".hdf5"
PART = EXT + ".part"
DAMAGED = EXT + ".damaged"


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
    """Give a closed ``.part`` file its final name (never replacing a file) and drop the .part."""
    stem = Path(str(part)[: -len(PART)])
    dest = _link_new_name(part, stem, ext)
    os.unlink(part)
    _fsync_dir(part.parent)
    return dest


class OpenFile:
    """One ``.part`` file being written: its datasets, rows written and age."""

    def __init__(self, directory: Path, prefix: str, layout: FileLayout, compression_level: int,
                 stamp: str | None = None) -> None:
        stamp = stamp or time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        for n in range(10_000):
            stem = directory / f"{prefix}_{stamp}{'' if n == 0 else f'_{n}'}"
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
            raise FileExistsError(f"no free file name for {directory / prefix}_{stamp}")
        self.part, self.final = Path(f"{stem}{PART}"), final
        self.opened = time.monotonic()
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

    def append(self, rows: Rows) -> None:
        """Append every dataset's rows and flush to disk (the file is consistent afterwards)."""
        try:
            for path, values in rows.items():
                hdf5.append(self.datasets[path], values)
            self.h5.flush()
        except Exception as e:
            raise WriteFailed(f"cannot write {self.part}: {e}") from e
        self.rows += len(rows.get(self.main, ()))

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
