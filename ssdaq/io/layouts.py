"""What each writer puts in its HDF5 files: tables, their columns, and how messages become rows.

``readout`` keeps the original SSDAQ slow-signal layout (reference §5.4) so existing PyTables
code (``SSDataReader``, ``tables.open_file(...).root.SlowSignal.readout``) reads it unchanged:
columns in PyTables' alphabetical order, ``data`` as float32 (32, 64) mV in raw ss-line order with
NaN for absent modules, and the attributes ``ss_data_version``, ``ssdaq_version``,
``ssl2asic_ch``; plus ``/SlowSignal/tel_table`` filled from the telescope-data stream.

``trigger`` and ``timestamp`` are new tables. Trigger packets keep their header fields, the
union and the phase row as packed bits (``np.unpackbits`` gives the 512 SPs back), and the whole
packet byte for byte in the VLArray ``/Trigger/raw`` (row i is packet i), so V2/V3 patterns can be
decoded again with ``ssdaq.data.trigger.unpack``. Timestamps keep every TriggerMessage field.

Converters take a batch of raw messages and their arrival time and return the rows per dataset
plus the messages rejected (as FormatError); they never raise on bad input.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssdaq import __version__
from ssdaq.core.errors import FormatError
from ssdaq.data import messages, trigger
from ssdaq.data.mapping import ssl2asic_ch
from ssdaq.data.readout import N_TM, N_TM_PIX, SSREADOUT_BYTES

Rows = dict[str, Any]  # dataset path -> structured rows (or a list of uint8 arrays for a VLArray)
Converter = Callable[[list[bytes], int], tuple[Rows, list[FormatError]]]


@dataclass(frozen=True)
class Dataset:
    """One table (``dtype`` set) or raw-payload VLArray (``dtype`` None) in ``/group``."""

    group: str
    name: str
    title: str
    dtype: np.dtype | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/{self.group}/{self.name}"


@dataclass(frozen=True)
class Input:
    """A stream the writer subscribes to, and how its messages become rows."""

    stream: str
    convert: Converter


@dataclass(frozen=True)
class FileLayout:
    """Everything one writer puts in its files."""

    stream: str
    title: str
    groups: dict[str, str]
    datasets: tuple[Dataset, ...]
    inputs: tuple[Input, ...]
    #: (dataset path, column) whose values must rise by one (checked for gaps), if any
    sequence: tuple[str, str] | None = None
    #: datasets whose row i belong together (always appended together)
    lockstep: tuple[str, ...] = ()
    #: the UTC time (ns) of each row of the first dataset: first_row_utc, last_row_utc
    time_ns: Callable[[np.ndarray], np.ndarray] = lambda rows: rows["arrival_ns"]


# ------------------------------------------------------------------------ slow signal

READOUT_DTYPE = np.dtype([
    ("cpu_t", "<f8"), ("cpu_t_ns", "<u8"), ("cpu_t_s", "<u8"),
    ("data", "<f4", (N_TM, N_TM_PIX)), ("iro", "<u8"), ("time", "<u8"),
])
TEL_DTYPE = np.dtype([
    ("db_t", "<f8"), ("db_t_ns", "<u8"), ("db_t_s", "<u8"), ("dec", "<f8"), ("ra", "<f8"),
])
_WIRE_DTYPE = np.dtype([  # SSReadout as published: <4Q header, then 2048 float64
    ("iro", "<u8"), ("time", "<u8"), ("cpu_t_s", "<u8"), ("cpu_t_ns", "<u8"),
    ("data", "<f8", (N_TM, N_TM_PIX)),
])
assert _WIRE_DTYPE.itemsize == SSREADOUT_BYTES
READOUT_PATH = "/SlowSignal/readout"
TEL_PATH = "/SlowSignal/tel_table"


def readout_rows(payloads: list[bytes], arrival_ns: int = 0) -> tuple[Rows, list[FormatError]]:
    """Published SSReadouts -> ``/SlowSignal/readout`` rows, vectorised over the batch."""
    good = [p for p in payloads if len(p) == SSREADOUT_BYTES]
    rejected = [FormatError("bad_size", f"SSReadout is {SSREADOUT_BYTES} bytes, got {len(p)}")
                for p in payloads if len(p) != SSREADOUT_BYTES]
    wire = np.frombuffer(b"".join(good), _WIRE_DTYPE)
    rows = np.empty(len(wire), READOUT_DTYPE)
    for name in ("iro", "time", "cpu_t_s", "cpu_t_ns", "data"):
        rows[name] = wire[name]
    rows["cpu_t"] = wire["cpu_t_s"] + wire["cpu_t_ns"] * 1e-9
    return {READOUT_PATH: rows}, rejected


def _each(payloads: list[bytes], row: Callable[[bytes], tuple], dtype: np.dtype
          ) -> tuple[np.ndarray, list[bytes], list[FormatError]]:
    """Rows of the payloads that ``row`` accepts, those payloads, and the rejections."""
    values, kept, rejected = [], [], []
    for payload in payloads:
        try:
            values.append(row(payload))
        except FormatError as e:
            rejected.append(e)
        else:
            kept.append(payload)
    return np.array(values, dtype) if values else np.empty(0, dtype), kept, rejected


def _tel_row(payload: bytes) -> tuple:
    tel = messages.parse(messages.TelData, payload)
    return (tel.time.sec + tel.time.nsec * 1e-9, tel.time.nsec, tel.time.sec, tel.dec, tel.ra)


def tel_rows(payloads: list[bytes], arrival_ns: int = 0) -> tuple[Rows, list[FormatError]]:
    """chec.TelData -> ``/SlowSignal/tel_table`` rows (the original writer's columns)."""
    rows, _, rejected = _each(payloads, _tel_row, TEL_DTYPE)
    return {TEL_PATH: rows}, rejected


SLOW_SIGNAL = FileLayout(
    stream="readout",
    title="CHEC-S Slow signal monitor data",
    groups={"SlowSignal": "Slow signal data"},
    datasets=(
        Dataset("SlowSignal", "readout", "Slow signal readout", READOUT_DTYPE, {
            "ss_data_version": 0, "ssdaq_version": __version__,
            "ssl2asic_ch": np.asarray(ssl2asic_ch, np.int64)}),
        Dataset("SlowSignal", "tel_table", "Telescope data", TEL_DTYPE),
    ),
    inputs=(Input("readout", readout_rows), Input("teldata", tel_rows)),
    sequence=(READOUT_PATH, "iro"),
    time_ns=lambda rows: rows["cpu_t_s"] * np.uint64(10**9) + rows["cpu_t_ns"],
)

# ------------------------------------------------------------------------ trigger packets

TRIGGER_DTYPE = np.dtype([
    ("arrival_ns", "<u8"), ("tack_time", "<u8"), ("mtype", "u1"), ("message_type", "u1"),
    ("error_flags", "u1"), ("busy", "u1"), ("phase", "u1"), ("source", "<u2"),
    ("ro_count", "<u4"), ("pps_count", "<u4"), ("clock_count", "<u4"),
    ("readout_length", "<u2"), ("n_triggered", "<u2"),
    ("union", "u1", (trigger.N_SP // 8,)), ("trigg", "u1", (trigger.N_SP // 8,)),
])
TRIGGER_PATH, TRIGGER_RAW_PATH = "/Trigger/packet", "/Trigger/raw"


def trigger_rows(payloads: list[bytes], arrival_ns: int = 0) -> tuple[Rows, list[FormatError]]:
    """Trigger packets -> ``/Trigger/packet`` rows and ``/Trigger/raw`` payloads."""

    def row(payload: bytes) -> tuple:
        p = trigger.unpack(payload)
        return (arrival_ns, p.tack_time, p.mtype, getattr(p, "message_type", 0),
                getattr(p, "error_flags", 0), p.busy, p.phase, p.source, p.ro_count, p.pps_count,
                p.clock_count, p.readout_length, int(p.union.sum()),
                np.packbits(p.union), np.packbits(p.trigg))

    rows, kept, rejected = _each(payloads, row, TRIGGER_DTYPE)
    raw = [np.frombuffer(p, np.uint8) for p in kept]
    return {TRIGGER_PATH: rows, TRIGGER_RAW_PATH: raw}, rejected


TRIGGERS = FileLayout(
    stream="trigger",
    title="CHEC-S trigger packets",
    groups={"Trigger": "Trigger packets"},
    datasets=(
        Dataset("Trigger", "packet", "Trigger packet header, union and phase row", TRIGGER_DTYPE,
                {"ssdaq_version": __version__}),
        Dataset("Trigger", "raw", "Trigger packets as received, byte for byte"),
    ),
    inputs=(Input("trigger", trigger_rows),),
    lockstep=(TRIGGER_PATH, TRIGGER_RAW_PATH),
)

# ------------------------------------------------------------------------ CDTS timestamps

TIMESTAMP_DTYPE = np.dtype([
    ("arrival_ns", "<u8"), ("telescope", "<u4"), ("event_counter", "<u8"),
    ("pps_counter", "<u8"), ("clock_counter", "<u8"), ("type", "u1"), ("status", "u1"),
    ("pattern", "<u8"), ("time_s", "<u8"), ("time_ps", "<u8"), ("time_index", "<u4"),
    ("tai_hi", "<u4"), ("tai_lo", "<u4"), ("cyc", "<u4"), ("tdc_hi", "<u4"), ("tdc_lo", "<u4"),
])
TIMESTAMP_PATH = "/Timestamp/trigger"


def timestamp_rows(payloads: list[bytes], arrival_ns: int = 0) -> tuple[Rows, list[FormatError]]:
    """CDTS TriggerMessages -> ``/Timestamp/trigger`` rows (every field of the message)."""

    def row(payload: bytes) -> tuple:
        m = messages.parse(messages.TriggerMessage, payload)
        t = m.time
        return (arrival_ns, m.telescope, m.event_counter, m.pps_counter, m.clock_counter, m.type,
                m.status, m.pattern, t.seconds, t.pico_seconds, t.index, t.tai_hi, t.tai_lo,
                t.cyc, t.tdc_hi, t.tdc_lo)

    rows, _, rejected = _each(payloads, row, TIMESTAMP_DTYPE)
    return {TIMESTAMP_PATH: rows}, rejected


TIMESTAMPS = FileLayout(
    stream="timestamp",
    title="CHEC-S CDTS trigger timestamps",
    groups={"Timestamp": "CDTS timing-board trigger messages"},
    datasets=(Dataset("Timestamp", "trigger", "CDTS TriggerMessage", TIMESTAMP_DTYPE,
                      {"ssdaq_version": __version__}),),
    inputs=(Input("timestamp", timestamp_rows),),
    sequence=(TIMESTAMP_PATH, "event_counter"),  # the board counts every trigger it stamps
)

#: writer stream name -> layout
LAYOUTS = {layout.stream: layout for layout in (SLOW_SIGNAL, TRIGGERS, TIMESTAMPS)}
