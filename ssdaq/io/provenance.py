"""What a file says about itself: ``/Provenance``, its attributes and its loss ledger.

Every file a writer completes carries, in the group ``/Provenance`` (a PyTables group, so
``tables.open_file(f).root.Provenance._v_attrs`` and ``h5py.File(f)["Provenance"].attrs`` both
read it):

* attributes: ``ssdaq_version``, ``host``, ``stream``, ``writer``, ``writer_pid``, ``record``;
  the observation (``obs_id``, -1 outside runs; ``comment``; ``run_start_utc``; ``started_by``;
  ``chunk``, -1 outside runs); ``opened_utc``, ``closed_utc``, ``interval_start_utc`` (where the
  ledger's interval begins: the previous file's close, the run's start or the writer's start);
  ``first_row_utc``, ``last_row_utc`` (the rows' own times), ``rows``; ``writer_config`` and
  ``config_<receiver>`` (the effective configurations as TOML, what ``--print-config`` shows) and
  ``dropins_<receiver>`` (the receiver's systemd drop-ins, each headed by its path; empty
  without systemd). Times are ISO 8601 UTC strings, empty when unknown.
* ``/Provenance/ledger``: one row per (process, counter) of every upstream receiver and of the
  writer itself: the counter at the interval's start (``at_open``; 0 for a process that started
  inside it) and at its end (``at_close``), ``delta`` = at_close - at_open (never negative: a
  receiver restarted inside the interval is a second process with rows of its own), ``kind``
  (loss or info, from the counter catalogue) and ``exact`` (0 when the process did not answer
  at one of the bounds, so part of its counting may be missing).
* ``/Provenance/gaps``: the sequence gaps the writer saw (readout numbers): last number before,
  first after, how many are missing; ``kind`` "restart" rows mark a number that did not rise.

A file whose ledger has no loss row with ``delta`` above zero and no gap lost nothing between
the camera and the disk, as far as the DAQ can see. Written once, when the file is closed; a
file recovered after a crash has the attributes of its opening and those of its recovery
(``ssdaq.io.recovery``), no ledger.
"""

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ssdaq import __version__, runs
from ssdaq.io import hdf5

if TYPE_CHECKING:  # files imports this module
    from ssdaq.io.files import OpenFile

GROUP = "Provenance"
LEDGER = f"/{GROUP}/ledger"
GAPS = f"/{GROUP}/gaps"
LEDGER_DTYPE = np.dtype([
    ("source", "S64"), ("pid", "<i8"), ("started_utc_s", "<f8"), ("counter", "S32"),
    ("kind", "S4"), ("at_open", "<i8"), ("at_close", "<i8"), ("delta", "<i8"), ("exact", "u1"),
])
GAP_DTYPE = np.dtype([
    ("column", "S32"), ("kind", "S8"), ("last_before", "<i8"), ("first_after", "<i8"),
    ("missing", "<i8"), ("arrival_ns", "<u8"),
])
NO_OBS = -1


def opening(file: "OpenFile", run: runs.Run | None, *, stream: str, writer: str, record: str,
            interval_start_ns: int, upstream: list[str], writer_config: str) -> dict[str, Any]:
    """The attributes a file gets when it opens (a file recovered after a crash has these)."""
    from ssdaq.io.files import RUN_STEM

    chunk = RUN_STEM.match(file.part.name)
    return {
        "ssdaq_version": __version__, "host": socket.gethostname(), "stream": stream,
        "writer": writer, "writer_pid": os.getpid(), "record": record,
        "obs_id": np.int64(run.obs_id if run else NO_OBS),
        "comment": run.comment if run else "",
        "run_start_utc": runs.iso(run.start_ns) if run else "",
        "started_by": run.started_by if run else "",
        "chunk": np.int64(int(chunk["chunk"]) if run and chunk else NO_OBS),
        "opened_utc": runs.iso(file.opened_ns),
        "interval_start_utc": runs.iso(interval_start_ns),
        "upstream": " ".join(upstream),
        "writer_config": writer_config,
    }


def closing(file: "OpenFile", configs: Mapping[str, str], dropins: Mapping[str, str],
            unanswered: list[str]) -> dict[str, Any]:
    """The attributes added when the file closes: times, rows, the upstream configurations."""
    attrs: dict[str, Any] = {
        "closed_utc": runs.iso(time.time_ns()), "rows": np.int64(file.rows),
        "first_row_utc": runs.iso(file.first_ns) if file.rows else "",
        "last_row_utc": runs.iso(file.last_ns) if file.rows else "",
        "upstream_unanswered": " ".join(unanswered),
    }
    attrs |= {f"config_{source}": text for source, text in configs.items()}
    attrs |= {f"dropins_{source}": text for source, text in dropins.items()}
    return attrs


def write_attributes(f: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Set (or overwrite) attributes of ``/Provenance``, creating the group if needed."""
    group = hdf5.group(f, GROUP, "Where this file comes from and what was lost")
    hdf5.set_attrs(group, attrs)


def write_tables(f: h5py.File, ledger: np.ndarray, gaps: np.ndarray) -> None:
    """Store the ledger and the gaps (once per file, at its close)."""
    group = hdf5.group(f, GROUP, "Where this file comes from and what was lost")
    for name, rows, title in (("ledger", ledger, "Counters of every process at the interval's "
                               "bounds"), ("gaps", gaps, "Sequence gaps the writer saw")):
        ds = hdf5.create_table(group, name, rows.dtype, title, chunk_rows=len(rows))
        hdf5.append(ds, rows)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rows(table: np.ndarray) -> list[dict[str, Any]]:
    return [{name: _text(row[name]) for name in table.dtype.names or ()} for row in table]


def read(path: str | Path) -> dict[str, Any]:
    """Everything ``/Provenance`` holds, as plain Python values (None: a file without it)."""
    with h5py.File(path, "r") as f:
        if GROUP not in f:
            return {"attributes": None, "ledger": [], "gaps": []}
        group = f[GROUP]
        attrs = {k: _text(v) for k, v in group.attrs.items()
                 if k not in ("CLASS", "TITLE", "VERSION")}
        ledger = _rows(group["ledger"][...]) if "ledger" in group else []
        gaps = _rows(group["gaps"][...]) if "gaps" in group else []
    return {"attributes": attrs, "ledger": ledger, "gaps": gaps}


def losses(ledger: list[dict[str, Any]]) -> dict[str, int]:
    """The ledger's loss counters that moved: "source counter" -> sum of deltas."""
    out: dict[str, int] = {}
    for row in ledger:
        if row["kind"] == "loss" and row["delta"]:
            key = f"{row['source']} {row['counter']}"
            out[key] = out.get(key, 0) + int(row["delta"])
    return out
