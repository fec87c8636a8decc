"""Fixtures of the end-to-end run: the freshly built .deb installed in a booted container.

The run needs root and systemd-nspawn. Where either is missing, or the machine cannot boot a
container, the tests are skipped with the reason — unless SSDAQ_E2E_REQUIRED=1 (CI), where that
is a failure: the run must not pass by not running.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.container import BootFailed, Container, booted
from tests.e2e.daq import TIMINGS, record

if TYPE_CHECKING:  # pytest 7.2 (Debian 12) does not export it
    from _pytest.terminal import TerminalReporter

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe.py")
ARTIFACTS = ROOT / "build" / "e2e"


def unavailable(reason: str) -> None:
    if os.environ.get("SSDAQ_E2E_REQUIRED") == "1":
        pytest.fail(f"SSDAQ_E2E_REQUIRED=1 but the end-to-end run cannot run: {reason}")
    pytest.skip(reason)


def build_deb() -> Path:
    """scripts/build-deb's package, or SSDAQ_E2E_DEB's when set (a package already built)."""
    if prebuilt := os.environ.get("SSDAQ_E2E_DEB"):
        return Path(prebuilt).resolve()
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-deb")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/build-deb failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    last = proc.stdout.strip().splitlines()[-1]
    return Path(last.removeprefix("build-deb: "))


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container with the package installed by apt (its Depends from Debian, offline)."""
    if os.geteuid() != 0:
        unavailable("needs root: systemd-nspawn boots a container")
    if not shutil.which("systemd-nspawn"):
        unavailable("systemd-nspawn is not installed (Debian: apt-get install systemd-container)")
    t0 = time.monotonic()
    deb = build_deb()
    record("build .deb", f"{time.monotonic() - t0:.1f} s")
    workdir = tmp_path_factory.mktemp("nspawn")
    t0 = time.monotonic()
    try:
        with booted(workdir, [deb, PROBE]) as container:
            record("boot", f"{time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            container.run("apt-get", "install", "-y", "-q", f"/root/{deb.name}", timeout=300)
            record("install", f"{time.monotonic() - t0:.1f} s")
            yield container
    except BootFailed as e:
        unavailable(f"systemd-nspawn cannot boot a container here: {e}")
    finally:
        keep_artifacts(workdir)


def keep_artifacts(workdir: Path) -> None:
    """The container's journal and console log, for CI (``journalctl -D build/e2e/journal``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(ARTIFACTS / "journal", ignore_errors=True)
    if (workdir / "journal").exists():
        shutil.copytree(workdir / "journal", ARTIFACTS / "journal")
    if (workdir / "nspawn.log").exists():
        shutil.copy(workdir / "nspawn.log", ARTIFACTS / "nspawn.log")


def pytest_terminal_summary(terminalreporter: "TerminalReporter") -> None:
    if TIMINGS:
        terminalreporter.section("ssdaq end-to-end measurements")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name:<40} {value}")
