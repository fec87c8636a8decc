"""The records a stopping assembler hands to its successor: a versioned file in the state directory.

At stop the assembler completes its open readouts from what is still arriving and sets aside the
records of readouts not yet begun (``EventBuilder.hold``); they are written here, and the next
process starts with them before it reads the socket, where the rest of those readouts waits.
A file, not systemd's file-descriptor store: systemd 252 empties the store on a plain stop, and a
plain stop must keep what a restart keeps (see docs/operations.md).

Format: a numpy ``.npz`` (no pickle), ``version`` = :data:`VERSION`, and per record ``tack``
(int64), ``slot`` (int16), ``cpu_ns`` (int64) and ``record`` (its 144 wire bytes, which no version
of this package may change). A file that cannot be read, or of another version, is renamed
``*.rejected`` (kept for inspection) and counted; it is never silently dropped.
"""

import logging
import os
from pathlib import Path

import numpy as np

from ssdaq.data.event_builder import Records
from ssdaq.data.slowsignal import RECORD_BYTES

VERSION = 1
REJECTED = ".rejected"


class HandoverError(Exception):
    """The file is not a hand-over this version can take (the message says why)."""


def save(path: Path, held: Records) -> None:
    """Write ``held`` atomically (a temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, version=np.array(VERSION), tack=held.tack.astype(np.int64),
                 slot=held.slot.astype(np.int16), cpu_ns=held.cpu_ns.astype(np.int64),
                 record=np.ascontiguousarray(held.record).view(np.uint8).reshape(-1, RECORD_BYTES))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> Records:
    """The records in ``path``; raises HandoverError if it cannot be taken."""
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            if version != VERSION:
                raise HandoverError(f"version {version}, this one reads {VERSION}")
            tack, slot, cpu_ns, record = (z[k] for k in ("tack", "slot", "cpu_ns", "record"))
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise HandoverError(f"not readable: {e}") from None
    n = len(tack)
    if not (len(slot) == len(cpu_ns) == n and record.shape == (n, RECORD_BYTES)
            and (n == 0 or 0 <= slot.min() <= slot.max() < 32)):
        raise HandoverError("inconsistent arrays")
    wire = np.ascontiguousarray(record, np.uint8).view(np.dtype((np.void, RECORD_BYTES))).reshape(n)
    return Records(tack.astype(np.int64), slot.astype(np.intp), wire, cpu_ns.astype(np.int64))


def take(path: Path, log: logging.Logger) -> tuple[Records | None, int]:
    """(the records of ``path`` or None, how many files were rejected: 0 or 1). A rejected file
    is renamed aside; a taken one stays until :func:`done`."""
    if not path.exists():
        return None, 0
    try:
        held = load(path)
    except HandoverError as e:
        aside = path.with_name(path.name + REJECTED)
        os.replace(path, aside)
        log.error("cannot take the records handed over in %s (%s): kept as %s", path, e, aside)
        return None, 1
    log.info("taking over %d records of readouts begun before the restart (%s)", len(held.tack),
             path)
    return held, 0


def done(path: Path) -> None:
    """The records were merged: the file goes."""
    path.unlink(missing_ok=True)
