"""Every tool's --help and usage errors, without the optional "tools" extra.

The package build runs each tool's --help for its man page where h5py, rich and matplotlib (only
Recommends) are absent, so nothing but running a tool may import them.
"""

import subprocess
import sys

import pytest

from tests.conftest import child_env

TOOLS = ("ctl", "dump", "writer", "dash", "view", "demo", "info")
WITHOUT_EXTRA = ("import runpy, sys; sys.modules.update(h5py=None, rich=None, matplotlib=None); "
                 "sys.argv = [sys.argv[1], *sys.argv[2:]]; "
                 "runpy.run_module(sys.argv[0], run_name='__main__')")


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, f"ssdaq.tools.{module}", *args],
                          env=child_env(), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_works_without_h5py_rich_matplotlib(tool: str) -> None:
    done = run(tool, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_a_bad_option_exits_64(tool: str) -> None:
    done = run(tool, "--no-such-option")
    assert done.returncode == 64 and "error:" in done.stderr


def test_running_the_writer_without_h5py_says_what_to_install() -> None:
    done = run("writer", "readout")
    assert done.returncode == 69 and "needs h5py" in done.stderr


def test_ssdaq_info_without_h5py_says_what_to_install() -> None:
    done = run("info", "some.hdf5")
    assert done.returncode == 69 and "needs h5py" in done.stderr
