"""The packages the end-to-end run installs: built from trees without git, lintian-clean.

scripts/build-deb (`make deb`) makes the source package from the tree and builds the .deb from its
``dpkg-source -x`` (a tree without .git); the previous release is built from a ``git archive``
export (the upgrade test installs it). Both are the session fixture ``built``; these checks need
no container.
"""

import subprocess
from pathlib import Path

import pytest

from tests.e2e.packages import ROOT, Built, git, unavailable

pytestmark = pytest.mark.e2e


def test_lintian_reports_no_error_or_warning_on_the_source_and_binary_packages(
    built: Built,
) -> None:
    dsc = next(built.current.parent.glob("ssdaq_*.dsc"))
    proc = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(dsc), str(built.current)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    tags = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert (proc.returncode, tags) == (0, []), proc.stdout + proc.stderr


def test_the_source_package_holds_the_tracked_files_and_nothing_else(built: Built) -> None:
    """debian/source/options keeps a development tree's debris (.venv, build/, ...) out."""
    if not (ROOT / ".git").exists():
        unavailable("not a git checkout: nothing to compare the source package with")
    tarball = next(built.current.parent.glob("ssdaq_*.tar.xz"))
    listed = subprocess.run(["tar", "-tJf", str(tarball)], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    packaged = {name.split("/", 1)[1] for name in listed if not name.endswith("/")}
    # tracked and new files (what the next commit would hold); dpkg-source leaves out .gitignore
    tree = set(git("ls-files", "--cached", "--others", "--exclude-standard").split())
    assert packaged == {p for p in tree if (ROOT / p).exists() and Path(p).name != ".gitignore"}

