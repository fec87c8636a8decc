"""Fixtures of the end-to-end run: the freshly built .deb installed in a booted minimal Debian.

Every test that takes ``machine`` runs once per release in ``RELEASES`` (Debian 12 and 13): pytest
runs all of them on one release's container, then on the next. The roots are minimal debootstraps
with only the package's dependencies (rootfs.sh, cached under build/e2e-roots/).

The run needs root, systemd-nspawn and debootstrap. Where one is missing, or the machine cannot
boot a release's container, its tests are skipped with the reason — unless SSDAQ_E2E_REQUIRED=1
(CI), where that is a failure: the run must not pass by not running.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import packages
from tests.e2e.container import BootFailed, Container, booted
from tests.e2e.daq import TIMINGS, record
from tests.e2e.packages import Built, unavailable

if TYPE_CHECKING:  # pytest 7.2 (Debian 12) does not export it
    from _pytest.terminal import TerminalReporter

PROBE = Path(__file__).with_name("probe.py")
ARTIFACTS = packages.ROOT / "build" / "e2e"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """scripts/build-deb on this tree and on the previous release's, side by side."""
    scratch = tmp_path_factory.mktemp("build")
    t0 = time.monotonic()
    current = packages.build(packages.ROOT, scratch / "current")
    previous, version, reason = None, "", ""
    try:
        version, commit = packages.previous_release()
        previous = packages.build(packages.export(commit, scratch / "previous-src"), scratch / "previous")
    except packages.Unavailable as e:
        reason = str(e)
    result = Built(packages.built(current, "this tree"), None, version, reason)
    if previous is not None:
        result.previous = packages.built(previous, f"release {version}")
    TIMINGS["build .deb (this tree and the previous release, in parallel)"] = (
        f"{time.monotonic() - t0:.1f} s"
    )
    return result


@pytest.fixture(scope="session")
def roots(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, "Root"]:
    """Every release's root, built (or found in the cache) in parallel."""
    if os.geteuid() != 0:
        unavailable("needs root: debootstrap and systemd-nspawn")
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap")):
        if not shutil.which(tool):
            unavailable(f"{tool} is not installed (Debian: apt-get install {package})")
    logs = tmp_path_factory.mktemp("rootfs")
    debs = [d for d in (built.current, built.previous) if d is not None]
    return {
        release: Root(release, packages.rootfs(release, debs, logs / f"{release}.log"), logs)
        for release in packages.RELEASES
    }


class Root:
    """A release's root being prepared by rootfs.sh; ``path()`` waits for it."""

    def __init__(self, release: str, proc: "subprocess.Popen[str]", logs: Path) -> None:
        self.release, self.proc, self.log = release, proc, logs / f"{release}.log"
        self._path: Path | None = None

    def path(self) -> Path:
        if self._path is None:
            out, _ = self.proc.communicate(timeout=1200)
            log = self.log.read_text()
            if self.proc.returncode != 0:
                unavailable(f"no {self.release} root (rootfs.sh exited {self.proc.returncode}):\n{log}")
            self._path = Path(out.strip().splitlines()[-1])
            # rootfs.sh logs its steps with their times, and nothing when the root was cached
            TIMINGS[f"{packages.RELEASES[self.release]}: root"] = (
                "; ".join(line.split(": ", 1)[1] for line in log.strip().splitlines()) or "cached"
            )
        return self._path


@pytest.fixture(scope="session", params=list(packages.RELEASES), ids=list(packages.RELEASES.values()))
def machine(
    request: pytest.FixtureRequest, built: Built, roots: dict[str, Root],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    """A booted container of one release with the package installed by apt (offline)."""
    release = request.param
    label = packages.RELEASES[release]
    root = roots[release].path()
    workdir = tmp_path_factory.mktemp(f"nspawn-{release}")
    files = [built.current, PROBE] + ([built.previous] if built.previous else [])
    t0 = time.monotonic()
    try:
        with booted(workdir, root, files, label) as container:
            record(container, "boot", f"{time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            container.run("apt-get", "install", "-y", "-q", f"/root/{built.current.name}", timeout=300)
            record(container, "install", f"{time.monotonic() - t0:.1f} s")
            yield container
    except BootFailed as e:
        unavailable(f"systemd-nspawn cannot boot the {release} ({label}) container here: {e}")
    finally:
        keep_artifacts(workdir, ARTIFACTS / label)


def keep_artifacts(workdir: Path, dest: Path) -> None:
    """The container's journal and console log, for CI (``journalctl -D build/e2e/…/journal``)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / "journal", ignore_errors=True)
    if (workdir / "journal").exists():
        shutil.copytree(workdir / "journal", dest / "journal")
    if (workdir / "nspawn.log").exists():
        shutil.copy(workdir / "nspawn.log", dest / "nspawn.log")


def pytest_terminal_summary(terminalreporter: "TerminalReporter") -> None:
    if TIMINGS:
        terminalreporter.section("ssdaq end-to-end measurements")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name:<48} {value}")
