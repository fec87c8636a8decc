"""What to do with a ``.part`` file left by a writer that did not stop cleanly.

A writer killed between two flushes leaves a ``.part`` file that is consistent as of its last
flush: :func:`recover` verifies it (every row read back, checksums included) and publishes it
under its final name. A write that failed half-way (the disk filled, a file size limit) leaves the
file inconsistent, typically with a superblock that claims more bytes than were written; then
:func:`salvage` copies every row that still reads back into ``<name>_salvaged.hdf5`` and the
original is kept as ``<name>.hdf5.damaged``, so only the rows of the failed write are lost (and
the flushed rows of the chunk it was rewriting: HDF5 recompresses a partly filled chunk).

Either way the file keeps the ``/Provenance`` attributes of its opening (the observation, the
configuration) and says how it was closed: ``recovery`` ("recovered" or "salvaged"),
``recovered_utc``, its ``rows`` and their times. It has no ledger: what was lost between its
opening and the crash is not known.

Both read files of unknown state, which can crash the HDF5 library, so :func:`recover` runs them
in a child process: ``python -m ssdaq.io.recovery verify|salvage STREAM FILE``.
"""

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from ssdaq import runs
from ssdaq.io import provenance
from ssdaq.io.files import DAMAGED, PART, OpenFile, continuous_stems, publish
from ssdaq.io.layouts import LAYOUTS, FileLayout, Rows

CHILD_TIMEOUT_S = 300.0
BLOCK_ROWS = 4096
# appended (sparse: no disk space used) so that HDF5 opens a file whose end was never written
SALVAGE_EXTENSION_BYTES = 1 << 30
SALVAGED = "salvaged"
#: attributes of a PyTables group, not ours to copy
_PYTABLES_ATTRS = ("CLASS", "TITLE", "VERSION")


def verify(path: str | Path, layout: FileLayout) -> int:
    """Read every dataset of ``layout`` in ``path`` whole; the row count of the first.

    Raises on any damage (truncation, checksum, decompression).
    """
    with h5py.File(path, "r") as f:
        for d in layout.datasets:
            ds = f[d.path]
            for start in range(0, ds.shape[0], BLOCK_ROWS):
                ds[start:start + BLOCK_ROWS]
        return int(f[layout.datasets[0].path].shape[0])


def _readable(ds: h5py.Dataset) -> np.ndarray:
    """The rows of ``ds`` up to the first that cannot be read, without never-written tail rows."""
    blocks = []
    chunk = ds.chunks[0] if ds.chunks else BLOCK_ROWS
    for start in range(0, ds.shape[0], chunk):
        try:
            blocks.append(ds[start:start + chunk])
        except Exception:  # checksum, decompression or a missing chunk: the damage starts here
            break
    rows = np.concatenate(blocks) if blocks else ds[0:0]
    if len(rows) == 0:
        return rows
    if ds.dtype.kind == "O":
        written = np.flatnonzero([len(r) for r in rows])
    else:  # a row never written reads as the fill value: all zero bytes
        written = np.flatnonzero(rows.view(np.uint8).reshape(len(rows), -1).any(axis=1))
    return rows[: written[-1] + 1 if len(written) else 0]


def salvage(part: Path, layout: FileLayout) -> tuple[Path, int]:
    """Copy what still reads back from a damaged ``part`` into a new complete file.

    Returns the new file and its row count (of the first dataset).
    """
    size = part.stat().st_size
    os.truncate(part, size + SALVAGE_EXTENSION_BYTES)
    try:
        with h5py.File(part, "r") as src:
            rows: Rows = {d.path: _readable(src[d.path]) for d in layout.datasets if d.path in src}
            opened = _opening_attributes(src)
    finally:
        os.truncate(part, size)
    if layout.lockstep:  # row i of each belongs together: keep the rows all of them have
        n = min(len(rows[path]) for path in layout.lockstep)
        rows |= {path: rows[path][:n] for path in layout.lockstep}
    stem = part.name[: -len(PART)]
    out = OpenFile(part.parent, continuous_stems(stem, SALVAGED), layout, compression_level=4)
    out.append({path: list(v) if v.dtype.kind == "O" else v for path, v in rows.items()})
    out.annotate(opened)
    mark(out.h5, layout, SALVAGED)
    return out.close(), out.rows


def _opening_attributes(src: h5py.File) -> dict[str, object]:
    """The ``/Provenance`` attributes ``src`` got when it opened, if they still read back."""
    try:
        group = src.get(provenance.GROUP)
        return {} if group is None else {k: v for k, v in group.attrs.items()
                                         if k not in _PYTABLES_ATTRS}
    except Exception:  # damaged where the attributes are: the rows are what counts
        return {}


def mark(f: h5py.File, layout: FileLayout, how: str) -> None:
    """Say in ``/Provenance`` that the file was closed by a later start (``how``: recovered or
    salvaged), with its rows and their times (a crash left no closing attributes)."""
    main = f[layout.datasets[0].path]
    n = int(main.shape[0])
    first = last = ""
    if n:
        ends = layout.time_ns(np.concatenate([main[0:1], main[n - 1:n]]))
        first, last = runs.iso(int(ends[0])), runs.iso(int(ends[1]))
    provenance.write_attributes(f, {
        "recovery": how, "recovered_utc": runs.iso(time.time_ns()), "rows": np.int64(n),
        "first_row_utc": first, "last_row_utc": last,
    })
    f.flush()


def recover(directory: Path, prefix: str, layout: FileLayout, log: logging.Logger) -> list[Path]:
    """Publish or salvage every ``.part`` leftover of ``prefix`` in ``directory``.

    Returns the complete files made; damaged originals are kept as ``.hdf5.damaged``.
    """
    made = []
    for part in sorted(directory.glob(f"{prefix}_*{PART}")):
        answer = _in_child("verify", part, layout.stream)
        if answer is not None:
            with h5py.File(part, "r+") as f:  # verified: safe to open here
                mark(f, layout, "recovered")
            made.append(publish(part))
            log.warning("recovered %s with %s rows left by a process that did not stop cleanly",
                        made[-1].name, answer)
            continue
        answer = _in_child("salvage", part, layout.stream)
        damaged = publish(part, DAMAGED)
        if answer is None:
            log.error("%s is damaged and nothing could be read back: kept as %s", part.name,
                      damaged.name)
            continue
        name, rows = answer.rsplit(" ", 1)
        made.append(directory / name)
        log.error("%s is damaged (a write failed half-way): %s rows saved in %s, the original "
                  "kept as %s", part.name, rows, name, damaged.name)
    return made


def _in_child(action: str, path: Path, stream: str) -> str | None:
    """Run ``action`` in a child process; its one-line answer, or None when it failed."""
    try:
        done = subprocess.run([sys.executable, "-m", "ssdaq.io.recovery", action, stream, str(path)],
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def main(argv: list[str] | None = None) -> int:
    """verify: print the row count (exit 1: damaged); salvage: print "<new file> <rows>"."""
    p = argparse.ArgumentParser(prog="python -m ssdaq.io.recovery", description=main.__doc__)
    p.add_argument("action", choices=("verify", "salvage"))
    p.add_argument("stream", choices=sorted(LAYOUTS))
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    layout = LAYOUTS[args.stream]
    try:
        if args.action == "verify":
            print(verify(args.file, layout))
        else:
            path, rows = salvage(args.file, layout)
            print(path.name, rows)
    except Exception as e:  # any failure means "damaged"; the parent decides what follows
        print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
