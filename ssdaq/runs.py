"""The run state: which observation is open, since when, with what comment, and the next obs id.

One small JSON file is the single owner of the run state, ``/var/lib/ssdaq/run/state.json`` (or
``$SSDAQ_RUN_STATE``). ``ssdaqctl run start|stop`` changes it under an exclusive ``flock`` of the
``lock`` file beside it and replaces it atomically (write a temporary file, fsync, rename), so
two operators starting runs at once get two distinct ids and nobody ever reads half a file. The
writers only read it: at start (a writer restarted during a run joins it), when ``ssdaqctl`` says
``run_sync``, and whenever the file changes (checked a few times a second), so a writer that
missed the command still follows. The directory is the group ``ssdaq``'s (mode 2770, from the
package's tmpfiles.d entry): its members may start and stop runs, the writers may read.

A file rather than a daemon (say, the readout writer) owns the state because every party must
agree on it even when that daemon is stopped, restarting or not installed on this host: the
trigger writer alone must still be able to record a run, and a run must outlive any writer.

Obs ids are never reused: the file keeps ``next_obs_id``; a caller's id must be at least that
(the array control software assigns rising ids), and after each run ``next_obs_id`` is one
above the highest id used.

This module reads and writes the file only; it imports nothing from the receivers or h5py.
"""

import fcntl
import json
import os
import pwd
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE = "/var/lib/ssdaq/run/state.json"
STATE_ENV = "SSDAQ_RUN_STATE"
#: obs ids are written with six digits in file names
MAX_OBS_ID = 999_999
FILE_MODE = 0o660  # the group ssdaq may update what another member wrote
FORMAT = 1


class RunError(Exception):
    """A run command that cannot be done as asked (no run open, an obs id already used)."""


def state_path() -> Path:
    """Where the run state lives; every writer and ``ssdaqctl`` on a host read the same rule."""
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE)


def stamp(start_ns: int) -> str:
    """The UTC start in file names: ``20261204T210000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_ns // 10**9))


def iso(ns: int) -> str:
    """UTC as ISO 8601 with microseconds: ``2026-12-04T21:00:00.123456Z``."""
    s, rest = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{rest // 1000:06d}Z"


@dataclass(frozen=True)
class Run:
    """One observation: its id, when it started (ns since the epoch, UTC), the operator's comment."""

    obs_id: int
    start_ns: int
    comment: str = ""
    #: user@host that started it
    started_by: str = ""
    #: set once it ended
    stop_ns: int | None = None

    @property
    def stamp(self) -> str:
        return stamp(self.start_ns)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["start_utc"] = iso(self.start_ns)
        out["stop_utc"] = None if self.stop_ns is None else iso(self.stop_ns)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Run":
        return cls(int(data["obs_id"]), int(data["start_ns"]), str(data.get("comment", "")),
                   str(data.get("started_by", "")),
                   None if data.get("stop_ns") is None else int(data["stop_ns"]))


@dataclass(frozen=True)
class State:
    """What the state file holds."""

    next_obs_id: int = 1
    #: the open run, if any
    run: Run | None = None
    #: the run that ended last, if any
    last: Run | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "next_obs_id": self.next_obs_id,
                "run": self.run.to_json() if self.run else None,
                "last": self.last.to_json() if self.last else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "State":
        return cls(int(data.get("next_obs_id", 1)),
                   Run.from_json(data["run"]) if data.get("run") else None,
                   Run.from_json(data["last"]) if data.get("last") else None)


def read(path: Path | None = None) -> State:
    """The current state (no file yet: no run, next id 1). A damaged file raises RunError."""
    path = path or state_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State()
    try:
        return State.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} is not a valid run state ({e}); fix or remove it") from None


def signature(path: Path | None = None) -> tuple[int, int, int] | None:
    """Changes whenever the file is replaced: (inode, size, mtime); None when there is none."""
    try:
        st = os.stat(path or state_path())
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / "lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        _share(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _share(fd: int) -> None:
    """Group read-write whatever the caller's umask (best effort: only the owner may chmod)."""
    try:
        os.fchmod(fd, FILE_MODE)
    except PermissionError:
        pass


def _write(path: Path, state: State) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.")
    try:
        _share(fd)
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _who() -> str:
    try:
        user = os.getlogin()
    except OSError:  # no controlling terminal (a script, a service)
        user = pwd.getpwuid(os.getuid()).pw_name
    return f"{user}@{socket.gethostname()}"


def _ended(run: Run, now_ns: int) -> Run:
    return Run(run.obs_id, run.start_ns, run.comment, run.started_by, now_ns)


def start(obs_id: int | None = None, comment: str = "", path: Path | None = None,
          now_ns: int | None = None) -> tuple[Run, Run | None]:
    """Open a run (ending the open one first); returns (the new run, the one it ended or None)."""
    path = path or state_path()
    with _locked(path):
        state = read(path)
        now = time.time_ns() if now_ns is None else now_ns
        if obs_id is None:
            obs_id = state.next_obs_id
        elif obs_id < state.next_obs_id:
            raise RunError(f"obs id {obs_id} cannot be used: ids below {state.next_obs_id} "
                           "were used already (ids are never reused)")
        if obs_id > MAX_OBS_ID:
            raise RunError(f"obs id {obs_id} is beyond {MAX_OBS_ID} (six digits)")
        ended = _ended(state.run, now) if state.run else None
        run = Run(obs_id, now, comment, _who())
        _write(path, State(obs_id + 1, run, ended or state.last))
        return run, ended


def stop(path: Path | None = None, now_ns: int | None = None) -> Run:
    """End the open run; returns it (RunError when no run is open)."""
    path = path or state_path()
    with _locked(path):
        state = read(path)
        if state.run is None:
            raise RunError("no run is open")
        ended = _ended(state.run, time.time_ns() if now_ns is None else now_ns)
        _write(path, State(state.next_obs_id, None, ended))
        return ended
