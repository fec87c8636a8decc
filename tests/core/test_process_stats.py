"""process_stats against what the process did: CPU it burnt, memory it holds, when it started."""

import subprocess
import sys
import time

from ssdaq.core import process_stats
from tests.conftest import child_env


def test_cpu_seconds_grow_with_work() -> None:
    before = process_stats.cpu_s()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert 0.15 < process_stats.cpu_s() - before < 2.0


def test_rss_is_the_memory_held_now() -> None:
    before = process_stats.rss_bytes()
    block = bytearray(64 * 2**20)  # zero-filled: its pages are touched
    held = process_stats.rss_bytes() - before
    del block
    assert 60 * 2**20 < held < 80 * 2**20


def test_start_time_is_when_the_process_was_started() -> None:
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "from ssdaq.core import process_stats as p;"
                          "print(p.started_unix())"], env=child_env(), capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert before - 0.05 < float(out) < before + 1.0
    assert process_stats.started_unix() < before
