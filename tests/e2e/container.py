"""A booted systemd-nspawn container (tests/e2e/nspawn.sh) and the means to act inside it.

Commands run through ``nsenter`` into all of the container's namespaces with a clean
environment, so they see the container's systemd, files and loopback-only network. Files are
written through ``/proc/PID/root``, which is the container's root as seen from the host.
"""

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

NSPAWN_SH = Path(__file__).with_name("nspawn.sh")
BOOT_TIMEOUT_S = 90.0
CLEAN_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

T = TypeVar("T")


class BootFailed(Exception):
    """systemd-nspawn could not bring a container up on this machine."""


class Container:
    """PID 1 of a running container, addressed by its PID in the host's pid namespace.

    ``label`` names what runs in it (``debian13``), for the figures the tests report.
    """

    def __init__(self, pid: int, workdir: Path, label: str) -> None:
        self.pid, self.workdir, self.label = pid, workdir, label
        self.root = Path(f"/proc/{pid}/root")

    def argv(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """``argv`` wrapped to run inside the container (as ``user`` when given)."""
        wrapped = ["nsenter", "-t", str(self.pid), "-a", "env", "-i", CLEAN_PATH, "LANG=C.UTF-8"]
        if user:
            wrapped += ["runuser", "-u", user, "--"]
        return wrapped + list(argv)

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60.0,
        user: str | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside and wait for it; ``check`` fails with its output."""
        proc = subprocess.run(
            self.argv(argv, user),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in container: {shlex.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def run_host_tool(self, *argv: str) -> str:
        """A tool of this machine run in the container's network namespace only (``ss``: a
        minimal system has no iproute2); its output."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", *argv],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        """Start a command inside without waiting (stdout and stderr piped)."""
        return subprocess.Popen(
            self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        out = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name).get(name, "")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create ``path`` (absolute, inside the container) with its parent directories."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def exists(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).exists()

    def journal_cursor(self) -> str:
        """A position in the journal, for reading only what comes after it."""
        out = self.run("journalctl", "-n0", "--show-cursor", "-q").stdout
        return out.strip().removeprefix("-- cursor: ")

    def journal(self, cursor: str, unit: str | None = None) -> list[dict[str, str]]:
        """Journal entries after ``cursor``: all, or those by and about ``unit``.

        Filtered here: journalctl 252 with both ``-u`` and ``--after-cursor`` skips PID 1's
        "Starting …" entry for the unit.
        """
        out = self.run("journalctl", "--no-pager", "-o", "json", f"--after-cursor={cursor}").stdout
        entries = [json.loads(line) for line in out.splitlines()]
        return [
            e for e in entries if unit is None or unit in (e.get("_SYSTEMD_UNIT"), e.get("UNIT"))
        ]


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval)


@contextmanager
def booted(workdir: Path, root: Path, files: Sequence[Path], label: str) -> Iterator[Container]:
    """Boot ``root`` (overlaid) with ``files`` in its /root/; shut it down (cleanly) on exit.

    Raises BootFailed, with nspawn's reason, when the machine cannot run a container.
    """
    # The script holds the container up until its stdin closes: if this process dies, so does it.
    with open(workdir / "nspawn.stderr", "w") as stderr:
        script = subprocess.Popen(
            [str(NSPAWN_SH), str(workdir), str(root), *map(str, files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        pid = _wait_for_boot(script, workdir)
        yield Container(pid, workdir, label)
    finally:
        assert script.stdin is not None
        script.stdin.close()
        try:
            script.wait(30)
        except subprocess.TimeoutExpired:
            script.terminate()
            script.wait(10)


def _wait_for_boot(script: subprocess.Popen[bytes], workdir: Path) -> int:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if (workdir / "cpid").exists():
            return int((workdir / "cpid").read_text())
        if script.poll() is not None:
            failed = workdir / "boot-failed"
            reason = (
                failed.read_text().strip()
                if failed.exists()
                else (workdir / "nspawn.stderr").read_text().strip()[-500:]
            )
            raise BootFailed(reason or f"nspawn.sh exited {script.returncode}")
        time.sleep(0.05)
    raise BootFailed(f"the container did not finish booting within {BOOT_TIMEOUT_S} s")
