"""Reading what the writers wrote, with h5py (PyTables is not needed).

* :func:`data_files` lists the complete files of a stream in time order (``.part`` files, still
  being written, are skipped).
* :func:`read_table` reads one table whole, as a numpy structured array.
* :class:`SSDataReader` is the original SSDAQ slow-signal reader's API (``read()``,
  ``n_readouts``, ``load_all_data(tm)``, ``ssreadout``, indexing), without its two bugs: negative
  indices and ``ssreadout`` work.
* :func:`readouts` yields ``SSReadout`` objects from files, :func:`trigger_packets` decoded
  trigger packets from the byte-for-byte copies in ``/Trigger/raw``.
"""

import re
from collections import namedtuple
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ssdaq.data import trigger
from ssdaq.data.mapping import ssl2asic_ch, ssl2colrow
from ssdaq.data.readout import N_TM_PIX, SSReadout
from ssdaq.io.files import EXT, RUN_STEM
from ssdaq.io.layouts import READOUT_PATH, TRIGGER_RAW_PATH

MAPPINGS = {"ssl2asic_ch": ssl2asic_ch, "ssl2colrow": ssl2colrow, "raw": np.arange(N_TM_PIX)}
_NAME = re.compile(r"^(?P<stem>.*_(?P<day>\d{8})_(?P<time>\d{6}))(?:_(?P<n>\d+))?$")
SSData = namedtuple("SSData", "iro amps time cpu_t tm")


def data_files(directory: str | Path, prefix: str = "readout") -> list[Path]:
    """Complete files ``<prefix>_*.hdf5`` in ``directory``, oldest first (names sort by time)."""
    return sorted(Path(directory).glob(f"{prefix}_*{EXT}"), key=_start_key)


def _start_key(path: Path) -> tuple[str, int, str]:
    """"<prefix>_<date>_<time>[_<n>]" sorts by start time, then by collision number n; a run's
    "<prefix>_obs<id>_<date>T<time>Z_<chunk>" by the run's start, then by chunk."""
    name = path.name[: -len(EXT)]
    if run := RUN_STEM.match(name):
        return run["start"][:8] + run["start"][9:15], int(run["chunk"]), name
    if match := _NAME.match(name):
        return match["day"] + match["time"], int(match["n"] or 0), name
    return "", 0, name


def read_table(path: str | Path, dataset: str = READOUT_PATH) -> np.ndarray:
    """The whole table ``dataset`` of file ``path``."""
    with h5py.File(path, "r") as f:
        return f[dataset][...]


def attributes(path: str | Path, dataset: str = READOUT_PATH) -> dict[str, Any]:
    """A dataset's attributes with strings as str (h5py returns fixed-length ones as bytes)."""
    with h5py.File(path, "r") as f:
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in f[dataset].attrs.items()}


def readouts(paths: str | Path | Iterable[str | Path]) -> Iterator[SSReadout]:
    """Every readout stored in ``paths`` (one file or several, in the order given)."""
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for row in read_table(path):
            yield SSReadout(timestamp=int(row["time"]), readout_number=int(row["iro"]),
                            cpu_t_s=int(row["cpu_t_s"]), cpu_t_ns=int(row["cpu_t_ns"]),
                            data=row["data"].astype(np.float64))


def trigger_packets(path: str | Path) -> Iterator[trigger.TriggerPacket]:
    """The trigger packets of a trigger file, decoded again from their stored bytes."""
    with h5py.File(path, "r") as f:
        raw = f[TRIGGER_RAW_PATH]
        for start in range(0, raw.shape[0], 1024):
            for payload in raw[start:start + 1024]:
                yield trigger.unpack(payload.tobytes())


class SSDataReader:
    """The original SSDAQ slow-signal file reader's API over h5py.

    ``mapping`` orders each module's 64 pixels: "ssl2asic_ch" (TARGET ASIC channels, default),
    "ssl2colrow" (8 x 8 col/row) or "raw" (as stored). Iterating fills ``raw_data``, ``data``
    (mapped), ``iro``, ``time``, ``cpu_t``, ``cpu_t_s``, ``cpu_t_ns`` for the current row.
    """

    def __init__(self, filename: str | Path, mapping: str = "ssl2asic_ch") -> None:
        if mapping not in MAPPINGS:
            raise ValueError(f"no mapping {mapping!r}; known: {', '.join(MAPPINGS)}")
        self.filename = str(filename)
        self.file = h5py.File(self.filename, "r")
        self._table = self.file[READOUT_PATH]
        self.attrs = {k: v.decode() if isinstance(v, bytes) else v
                      for k, v in self._table.attrs.items()}
        if "ss_data_version" not in self.attrs:
            self.file.close()
            raise RuntimeError(f"{filename}: no ss_data_version (a pre v0.9.0 file?)")
        self.map = MAPPINGS[mapping]
        self.raw_data = np.zeros(self._table.dtype["data"].shape, np.float32)
        self.data = np.zeros_like(self.raw_data)
        self.iro = self.time = self.cpu_t_s = self.cpu_t_ns = 0
        self.cpu_t = 0.0

    @property
    def n_readouts(self) -> int:
        return int(self._table.shape[0])

    def __len__(self) -> int:
        return self.n_readouts

    def read(self, start: int | None = None, stop: int | None = None,
             step: int | None = None) -> Iterator[np.ndarray]:
        """Mapped data of rows ``start:stop:step`` (one row if only ``start`` is given)."""
        if stop is None and start is not None:
            stop = start + 1
        for i in range(*slice(start, stop, step).indices(self.n_readouts)):
            row = self._table[i]
            self.raw_data[:] = row["data"]
            self.data[:] = row["data"][:, self.map]
            self.iro, self.time = int(row["iro"]), int(row["time"])
            self.cpu_t, self.cpu_t_s, self.cpu_t_ns = (float(row["cpu_t"]), int(row["cpu_t_s"]),
                                                       int(row["cpu_t_ns"]))
            yield self.data

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.read()

    def __getitem__(self, index: int | slice | list[int]) -> np.ndarray:
        if isinstance(index, slice):
            return np.array([self[i] for i in range(*index.indices(self.n_readouts))])
        if isinstance(index, list):
            return np.array([self[i] for i in index])
        if index < 0:
            index += self.n_readouts
        if not 0 <= index < self.n_readouts:
            raise IndexError(f"readout {index} out of range ({self.n_readouts} readouts)")
        return np.copy(next(self.read(index)))

    @property
    def ssreadout(self) -> SSReadout:
        """The current row as an SSReadout (raw pixel order, float64 mV)."""
        return SSReadout(self.time, self.iro, self.cpu_t_s, self.cpu_t_ns,
                         self.raw_data.astype(np.float64))

    def load_all_data(self, tm: int, calib: Any = None, mapping: Any = None) -> SSData:
        """Every readout of module ``tm``: (iro, amps[n, 64], time, cpu_t, tm), amps x calib."""
        order = self.map if mapping is None else (
            MAPPINGS[mapping] if isinstance(mapping, str) else np.asarray(mapping))
        table = self._table[...]
        amps = table["data"][:, tm, :].astype(np.float64) * (1.0 if calib is None else calib)
        return SSData(table["iro"], amps[:, order], table["time"], table["cpu_t"], tm)

    def close_file(self) -> None:
        self.file.close()

    close = close_file

    def __enter__(self) -> "SSDataReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_file()

    def __repr__(self) -> str:
        return f"SSDataReader({self.filename!r}, n_readouts={self.n_readouts})"
