"""Which observation a writer records, and what its files are named.

A writer follows the run state (:mod:`ssdaq.runs`): it reads it at start, on the ``run_sync``
command and whenever the state file changes. This module only answers "which run is it now,
and did it change?" and names the next file; the service (:mod:`ssdaq.receivers.writer`) does
the file work a change calls for, so nothing here touches a file and nothing here calls back.
Outside runs, ``[run] record = "runs"`` records nothing; inside a run, files are the run's
numbered chunks.
"""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssdaq import runs
from ssdaq.io import files

Change = tuple[runs.Run | None, runs.Run | None]


class RunFollower:
    """The observation being recorded (:attr:`obs`, None outside runs) and the state file's
    signature when it was last read."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.obs: runs.Run | None = None
        self._seen: tuple[int, int, int] | None = None

    def stale(self) -> bool:
        """Whether the state file changed since it was last read."""
        return runs.signature() != self._seen

    def read(self) -> Change | None:
        """Read the state file: (the previous run, the new one) when the run changed, the new
        one being :attr:`obs` from now on; None when it did not, or when the file cannot be
        read (said once per change of the file: recording goes on as before)."""
        seen = runs.signature()
        try:
            run = runs.read().run
        except runs.RunError as e:
            if seen != self._seen:
                self.log.error("%s: recording goes on as before", e)
            self._seen = seen
            return None
        self._seen = seen
        if run == self.obs:
            return None
        previous, self.obs = self.obs, run
        return previous, run

    def discards(self, record: str) -> bool:
        """Whether what arrives now is not recorded (outside runs with ``record = "runs"``)."""
        return self.obs is None and record == "runs"

    def fields(self, record: str, file: str | None) -> dict[str, Any]:
        """The run and the file, as ``status`` and ``run_sync`` show them."""
        run = self.obs
        return {"obs_id": run.obs_id if run else None, "comment": run.comment if run else None,
                "start_utc": runs.iso(run.start_ns) if run else None,
                "recording": not self.discards(record), "file": file}


def stems(directory: Path, prefix: str, run: runs.Run | None) -> Iterator[str]:
    """The names of the next file: by its start time outside runs, else the run's next chunk."""
    if run is None:
        return files.continuous_stems(prefix)
    chunk = files.next_chunk(directory, prefix, run.obs_id, run.stamp)
    return files.run_stems(prefix, run.obs_id, run.stamp, chunk)
