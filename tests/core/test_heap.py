"""The heap policy, in fresh processes (it is process-wide): freed blocks stay resident for the
next pass instead of being given back and faulted in again."""

import subprocess
import sys

# A pass's worth of arrays, allocated, touched and freed twice, as two passes of the pipeline
# do; prints the RSS before the first pass, after it, and the page faults of the second pass.
PASSES = """
import resource, sys
import numpy as np
from ssdaq.core import heap
if sys.argv[1] == "kept":
    assert heap.keep_freed_memory(), "mallopt refused the thresholds or is missing: not glibc?"
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
def one_pass():
    parts = [np.ones(1 << 20) for _ in range(4)]  # 4 x 8 MB, written
    del parts
before = rss_mb()
one_pass()
after = rss_mb()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_pass()
print(before, after, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


def _passes(mode: str) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", PASSES, mode], capture_output=True, text=True, check=True)
    before, after, faults = out.stdout.split()
    return float(before), float(after), int(faults)


def test_freed_memory_stays_resident_and_the_next_pass_faults_nothing_in() -> None:
    before, after, faults = _passes("kept")
    assert after - before > 30  # the 32 MB are still there
    assert faults < 100  # the second pass reused them (8192 pages if it had to fault them in)


def test_without_the_policy_glibc_gives_the_memory_back_and_faults_it_in_again() -> None:
    """What the policy is for (and that the test above can tell the two apart)."""
    before, after, faults = _passes("default")
    assert after - before < 10
    assert faults > 1000  # at least one 8 MB array faulted in again (2048 pages)

