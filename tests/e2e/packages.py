"""What the end-to-end run installs: this tree's .deb, the previous release's, and the roots.

The previous release comes from git history alone (a fresh clone is enough, no tags needed): the
newest commit whose ``debian/changelog`` names an older version than this tree's. Its tree is
exported with ``git archive`` and built by this tree's ``scripts/build-deb``, the same way as the
current one, so both are built from a source tree without ``.git``.
"""

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_DEB = ROOT / "scripts" / "build-deb"
ROOTFS_SH = Path(__file__).with_name("rootfs.sh")
#: Debian releases the package is tested on: codename -> what the test ids and reports call it
RELEASES = {"bookworm": "debian12", "trixie": "debian13"}


class Unavailable(Exception):
    """Something this run needs cannot be had here (the reason is the message)."""


def unavailable(reason: str) -> None:
    """Skip, saying why; under SSDAQ_E2E_REQUIRED=1 (CI) fail instead: no passing by not running."""
    if os.environ.get("SSDAQ_E2E_REQUIRED") == "1":
        pytest.fail(f"SSDAQ_E2E_REQUIRED=1 but the end-to-end run cannot run: {reason}")
    pytest.skip(reason)


@dataclass
class Built:
    """The packages under test: this tree's, and the previous release's (or why there is none)."""

    current: Path
    previous: Path | None
    previous_version: str
    no_previous: str


def changelog_version(changelog: str) -> str:
    """The version of the newest entry: ``ssdaq (1.1.0) bookworm; …`` -> ``1.1.0``."""
    return changelog.split("(", 1)[1].split(")", 1)[0]


def git(*argv: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise Unavailable(f"git {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def previous_release() -> tuple[str, str]:
    """(version, commit) of the last release before this tree's version, from git history."""
    current = changelog_version((ROOT / "debian" / "changelog").read_text())
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        raise Unavailable("a shallow clone: the previous release is not in its history")
    # Walk the commits that touched the changelog, newest first: the first naming another version
    # is where that release's changelog was written, and the release itself is the last commit
    # before the next changelog change (or HEAD, if the new version is not committed yet).
    newer = "HEAD"
    for commit in git("log", "--format=%H", "HEAD", "--", "debian/changelog").split():
        version = changelog_version(git("show", f"{commit}:debian/changelog"))
        if version != current:
            release = git("rev-parse", newer if newer == "HEAD" else f"{newer}^").strip()
            return version, release
        newer = commit
    raise Unavailable(f"no commit names a version older than {current} in debian/changelog")


def build(src: Path, out: Path) -> subprocess.Popen[str]:
    """Start scripts/build-deb on the tree ``src`` (the .deb, .dsc and .tar.xz go to ``out``)."""
    return subprocess.Popen(
        [str(BUILD_DEB), str(src), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def export(commit: str, dest: Path) -> Path:
    """The tree of ``commit``, without .git, in ``dest``."""
    dest.mkdir(parents=True)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(ROOT), "archive", commit], stdout=archive, check=True)
        archive.seek(0)
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive, check=True)
    return dest


def built(proc: subprocess.Popen[str], what: str) -> Path:
    """Wait for a ``build()``; its .deb, or an AssertionError with the end of its output."""
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/build-deb ({what}) exited {proc.returncode}:\n{out[-4000:]}")
    return Path(out.strip().splitlines()[-1].removeprefix("build-deb: "))


def rootfs(release: str, debs: list[Path], log: Path) -> subprocess.Popen[str]:
    """Start rootfs.sh: the cached minimal root of ``release`` with the ``debs``' dependencies."""
    with open(log, "w") as f:
        return subprocess.Popen(
            [str(ROOTFS_SH), release, *map(str, debs)], stdout=subprocess.PIPE, stderr=f, text=True
        )
