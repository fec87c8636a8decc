"""Closed readouts -> SSReadout rows: the event builder's output, one float64 row per readout.

A row is the 16 416 bytes of an SSReadout (:mod:`ssdaq.data.readout`) as 2052 float64: the
``<4Q`` header viewed as float64, then 32 x 64 mV. Building rows is the last step of event
building and the only one that touches amplitudes: records stay raw big-endian words until a
readout closes, and are converted here, a whole set of readouts at once.
"""

from dataclasses import dataclass

import numpy as np

from ssdaq.data.readout import HEADER, N_TM, N_TM_PIX, SSREADOUT_BYTES
from ssdaq.data.slowsignal import ADC_SIGN, CHANNEL_WORDS, MV_PER_COUNT

ROW_WORDS = SSREADOUT_BYTES // 8  # 2052 float64: the header's 4 u64 then 32 x 64 mV
HEADER_WORDS = HEADER.size // 8
_NS = 1_000_000_000
# The two runs of channel words in a record (channels 0-31, then 32-63 after the second stamp)
_LO = slice(int(CHANNEL_WORDS[0]), int(CHANNEL_WORDS[31]) + 1)
_HI = slice(int(CHANNEL_WORDS[32]), int(CHANNEL_WORDS[63]) + 1)


def records_to_mv(words: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Records as big-endian words (..., 72) to mV in ``out`` (..., 64), float64.

    The same values as ``slowsignal.adc_to_mv`` of the channel words, computed through a native
    uint16 copy, because a mixed-type ufunc over strided big-endian input is several times slower.
    """
    counts = np.empty(out.shape, np.uint16)
    counts[..., :32] = words[..., _LO]
    counts[..., 32:] = words[..., _HI]
    counts ^= ADC_SIGN
    np.multiply(counts, MV_PER_COUNT, out=out)
    return out


@dataclass(frozen=True, eq=False)
class Published:
    """Readouts in publish order; ``rows[i]`` is readout i's 16 416 bytes.

    Each row is float64 in SSReadout layout: the first 4 elements are the ``<4Q`` header viewed as
    float64 (readout number, TACK of the lowest slot present, CPU seconds, CPU ns), then 32 x 64
    mV with NaN rows for absent modules. The arrays belong to the caller.
    The CPU time is UTC: the arrival wall time of the datagram holding the readout's first record
    (the kernel's receive timestamp, in the receiver), minus the TACK distance from that record to
    the last record of its datagram, i.e. an estimate of when the readout was sampled (a datagram
    is sent after its last record is taken). ``arrived_ns``: UTC ns when the first datagram of the
    batch that last fed each readout arrived: no later than the readout's last record, so the
    caller can bound how long building took.
    """

    rows: np.ndarray
    complete: np.ndarray
    n_modules: np.ndarray
    arrived_ns: np.ndarray

    @classmethod
    def empty(cls) -> "Published":
        return cls(np.empty((0, ROW_WORDS)), np.empty(0, bool), np.empty(0, np.intp),
                   np.empty(0, np.int64))

    @classmethod
    def concat(cls, parts: list["Published"]) -> "Published":
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.complete for p in parts]),
            np.concatenate([p.n_modules for p in parts]),
            np.concatenate([p.arrived_ns for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def header(self) -> np.ndarray:
        """(k, 4) uint64 view of the headers."""
        return self.rows[:, :HEADER_WORDS].view(np.uint64)

    @property
    def data(self) -> np.ndarray:
        """(k, 32, 64) mV view."""
        return self.rows[:, HEADER_WORDS:].reshape(len(self), N_TM, N_TM_PIX)

    def number(self, first: int) -> int:
        """Write readout numbers ``first, first + 1, ...`` into the headers; return the next one."""
        if not len(self.rows):
            return first
        self.header[:, 0] = np.arange(first, first + len(self), dtype=np.uint64)
        return first + len(self)


def close(raw: np.ndarray, present: np.ndarray, unexpected: np.ndarray, cpu_ns: np.ndarray,
          arrived_ns: np.ndarray) -> Published:
    """Rows of ``k`` closed readouts, numbered 0 (see ``Published.number``).

    ``raw``: (k, 32, 72) big-endian words of each readout's records by slot, garbage where not
    ``present`` (k, 32); ``unexpected``: (32,) slots a readout does not need to be complete;
    ``cpu_ns``: each readout's CPU time estimate (UTC ns, clipped at 0 here); ``arrived_ns``: see
    ``Published``.
    """
    k = len(raw)
    complete = (present | unexpected).all(axis=1)
    published = Published(np.empty((k, ROW_WORDS)), complete, present.sum(axis=1), arrived_ns)
    data = published.data
    records_to_mv(raw, data)
    if np.count_nonzero(present) < present.size:
        data[~present] = np.nan
    lowest = raw[np.arange(k), present.argmax(axis=1), :4]  # its TACK, 4 words
    header = published.header
    header[:, 0] = 0
    header[:, 1] = np.ascontiguousarray(lowest).view(">u8")[:, 0]
    header[:, 2], header[:, 3] = np.divmod(np.maximum(cpu_ns, 0), _NS)
    return published
