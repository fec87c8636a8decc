"""SSReadout: one slow-signal camera readout as published on the readout stream (16 416 bytes).

Layout (little-endian): ``<4Q`` header (readout number, TACK ns, CPU seconds, CPU nanoseconds)
followed by 32 x 64 float64 amplitudes in mV, C order (module-major, raw ss-line pixel order),
NaN for modules absent from the readout.
"""

import struct

N_TM = 32
N_TM_PIX = 64
N_CAM_PIX = N_TM * N_TM_PIX
HEADER = struct.Struct("<4Q")
SSREADOUT_BYTES = HEADER.size + N_CAM_PIX * 8  # 16 416
