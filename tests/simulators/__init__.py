"""Tests of ``ssdaq-sim``; :func:`sim_argv` runs it with the test's interpreter."""

import sys


def sim_argv(*args: str) -> list[str]:
    """argv running ``ssdaq-sim ARGS`` with this interpreter (no installed entry point needed)."""
    return [sys.executable, "-m", "ssdaq.simulators.cli", *args]
