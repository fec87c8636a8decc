"""The next readout number, kept in a file so that numbering continues across restarts.

Numbers are reserved ahead in blocks: the file always holds a number not yet handed out. After
a clean stop it holds exactly the next number, so numbering continues without a gap; after a
crash the successor starts at the reserved mark, leaving a gap (which subscribers see) but never
repeating a number.
"""

import logging
import os
from pathlib import Path

BLOCK = 100_000


class ReadoutNumber:
    """``next`` is the number the next published readout gets; the owner advances it."""

    def __init__(self, path: Path | None, log: logging.Logger) -> None:
        self.path, self.log = path, log
        self.next = 1
        self._reserved = 0
        if path is None:
            log.info("no state directory: readout numbers start at 1 and are not kept")
            return
        try:
            self.next = max(1, int(path.read_text().strip()))
            log.info("readout numbers continue at %d (from %s)", self.next, path)
        except FileNotFoundError:
            log.info("readout numbers start at 1 (%s does not exist yet)", path)
        except (OSError, ValueError) as e:
            log.warning("cannot read %s (%s): readout numbers start at 1", path, e)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Reserve the next block when fewer than half a block remain (called about once a second)."""
        if self.path is not None and self.next + BLOCK // 2 > self._reserved:
            self._reserved = self.next + BLOCK
            self._write(self._reserved)

    def save(self) -> None:
        """Record exactly the next number (at a clean stop)."""
        if self.path is not None:
            self._write(self.next)
            self._reserved = self.next

    def reset(self) -> None:
        self.next = 1
        self._reserved = 0
        self.checkpoint()

    def _write(self, value: int) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            self.log.error("cannot keep the readout number in %s: %s", self.path, e)
