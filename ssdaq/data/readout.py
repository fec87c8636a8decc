"""SSReadout: one slow-signal camera readout as published on the readout stream (16 416 bytes).

Layout (little-endian): ``<4Q`` header (readout number, TACK ns, CPU seconds, CPU nanoseconds)
followed by 32 x 64 float64 amplitudes in mV, C order (module-major, raw ss-line pixel order),
NaN for modules absent from the readout. Byte-compatible with the original SSDAQ ``SSReadout``, so
existing subscribers and analysis code read what the new assembler publishes.
"""

import struct
from collections.abc import Iterable

import numpy as np

from ssdaq.data.errors import FormatError
from ssdaq.data.mapping import ssl2asic_ch, ssl2colrow

N_TM = 32
N_TM_PIX = 64
N_CAM_PIX = N_TM * N_TM_PIX
HEADER = struct.Struct("<4Q")
SSREADOUT_BYTES = HEADER.size + N_CAM_PIX * 8  # 16 416

_DATA_DTYPE = np.dtype("<f8")
_IRO_TACK = struct.Struct("<2Q")


def _check_size(buf: bytes | bytearray | memoryview) -> None:
    if len(buf) != SSREADOUT_BYTES:
        raise FormatError("bad_size", f"SSReadout is {SSREADOUT_BYTES} bytes, got {len(buf)}")


class SSReadout:
    """One camera readout: readout number, TACK, CPU time and 32 x 64 amplitudes (mV).

    The constructor keeps the original argument order (``timestamp`` first) so scripts written
    against the old class still build the same object.
    """

    def __init__(
        self,
        timestamp: int = 0,
        readout_number: int = 0,
        cpu_t_s: int = 0,
        cpu_t_ns: int = 0,
        data: np.ndarray | None = None,
    ) -> None:
        self.iro = readout_number
        self.time = timestamp
        self.cpu_t_s = cpu_t_s
        self.cpu_t_ns = cpu_t_ns
        self.data = np.full((N_TM, N_TM_PIX), np.nan, _DATA_DTYPE) if data is None else data

    @classmethod
    def from_bytes(cls, buf: bytes | bytearray | memoryview) -> "SSReadout":
        """Decode a published readout; raises ``FormatError("bad_size")`` on a wrong length."""
        readout = cls()
        readout.unpack(buf)
        return readout

    deserialize = from_bytes

    def unpack(self, buf: bytes | bytearray | memoryview) -> None:
        """Fill this readout from its wire bytes. ``data`` becomes a view on ``buf`` (no copy)."""
        _check_size(buf)
        self.iro, self.time, self.cpu_t_s, self.cpu_t_ns = HEADER.unpack_from(buf)
        self.data = np.frombuffer(buf, _DATA_DTYPE, N_CAM_PIX, HEADER.size).reshape(N_TM, N_TM_PIX)

    def pack(self) -> bytes:
        """The 16 416 wire bytes; raises ValueError if ``data`` is not 32 x 64."""
        data = np.ascontiguousarray(self.data, _DATA_DTYPE)
        if data.shape != (N_TM, N_TM_PIX):
            raise ValueError(f"SSReadout.data must be {N_TM}x{N_TM_PIX}, got {data.shape}")
        return HEADER.pack(self.iro, self.time, self.cpu_t_s, self.cpu_t_ns) + data.tobytes()

    serialize = pack

    @property
    def cpu_t(self) -> float:
        """CPU time stamp in seconds since the Unix epoch (UTC)."""
        return float(self.cpu_t_s) + self.cpu_t_ns * 1e-9

    @property
    def asic_mapped_data(self) -> np.ndarray:
        """Amplitudes in TARGET ASIC-channel order: ``mapped[:, j] = data[:, ssl2asic_ch[j]]``."""
        return self.data[:, ssl2asic_ch]

    @property
    def colrow_mapped_data(self) -> np.ndarray:
        """Amplitudes in module col/row order: ``mapped[:, j] = data[:, ssl2colrow[j]]``."""
        return self.data[:, ssl2colrow]

    @property
    def modules_present(self) -> np.ndarray:
        """Slots (0..31) whose row holds data; an absent module's row is all NaN."""
        return np.flatnonzero(~np.isnan(self.data).all(axis=1))

    def __repr__(self) -> str:
        return (
            f"SSReadout(iro={self.iro}, time={self.time}, cpu_t={self.cpu_t:.9f}, "
            f"modules={len(self.modules_present)}/{N_TM})"
        )


def peek(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(iro, tack)`` of one published readout without touching its amplitudes.

    For subscribers that only track readout numbers (gap detection) or TACKs.
    """
    _check_size(buf)
    return _IRO_TACK.unpack_from(buf)


def iro_tack(messages: Iterable[bytes | bytearray | memoryview]) -> tuple[np.ndarray, np.ndarray]:
    """Readout numbers and TACKs of a batch of readouts as two uint64 arrays.

    Only the 16 header bytes of each message are copied, so a subscriber that drained a batch can
    check gaps and ordering with numpy instead of decoding every readout.
    """
    heads = bytearray()
    for msg in messages:
        _check_size(msg)
        heads += msg[: _IRO_TACK.size]
    pairs = np.frombuffer(heads, "<u8").reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]
