"""glibc's heap policy for a receiver process: keep freed memory for the next pass.

A pass of the readout pipeline allocates its arrays afresh, several MB under load (at 1024
datagrams a pass: the records, their gathered words, the mV rows). glibc by default serves
blocks that large with ``mmap`` until one is freed, then from the heap, and gives the top of
the heap back to the kernel whenever more than twice that is free. Each give-back is faulted
in again on the next pass. ``make bench`` (readout) prints the page faults a second; given back,
they were 1 580 at 30 000 readouts/s and 3 460 under overload, where the RSS sawed by 6.6 MB
(the bench holds the spread to 5 MB, to tell a saw from growth); kept, 190 and 36, and 3.2 MB.
The heap settles within seconds at the largest pass's size and stays there.
"""

import ctypes

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20  # free memory at the heap's top given back only beyond this
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts; setting it also stops its adjusting


def keep_freed_memory() -> bool:
    """Apply the policy to this process; False where the C library has no ``mallopt`` (not
    glibc), which then keeps its own."""
    try:  # the C library the interpreter is linked with (no ldconfig run to find it)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # tried even if the first was refused
    return bool(trim and mmap)
