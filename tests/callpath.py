"""Which of the package's files one call runs through, in order, traced with ``sys.setprofile``.

For the data-path tests: a datagram should go down through each file once and come back up
with the result, never calling back into a file that called it (A -> B -> A), and each file
should be entered from one caller file only, so that the files of one batch form a tree.
"""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import ssdaq

ROOT = os.path.dirname(ssdaq.__file__)


def _file(frame: FrameType) -> str | None:
    name = frame.f_code.co_filename
    return os.path.relpath(name, ROOT) if name.startswith(ROOT + os.sep) else None


@dataclass
class CallPath:
    """The package files a traced call ran, as calls from one file into another."""

    #: (caller file, callee file) of every call between two files, in call order
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: the files in the order execution moved between them, returns included
    visits: list[str] = field(default_factory=list)
    #: calls into a file that was still running further up the stack (A -> B -> A)
    callbacks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        """Each file once, in the order first entered."""
        return list(dict.fromkeys(self.visits))

    def callers(self) -> dict[str, set[str]]:
        """The files that called each file."""
        out: dict[str, set[str]] = {}
        for caller, callee in self.calls:
            out.setdefault(callee, set()).add(caller)
        return out

    def returns_into_visited(self) -> int:
        """How often execution came back into a file it had been in, before the final unwinding
        (the measure quoted for the old readout path)."""
        last = max(i for i, f in enumerate(self.visits) if self.visits.index(f) == i)
        return sum(1 for i, f in enumerate(self.visits[: last + 1]) if self.visits.index(f) < i)


def trace(fn: Callable[[], Any]) -> CallPath:
    """Run ``fn()`` and record the package files it runs through (frames outside the package,
    numpy's or the standard library's, are looked through to the package frame that called)."""
    path = CallPath()

    def stack(frame: FrameType | None) -> list[str]:
        files: list[str] = []
        while frame is not None:
            f = _file(frame)
            if f is not None and (not files or files[-1] != f):
                files.append(f)
            frame = frame.f_back
        return files

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        here = _file(frame)
        if here is None:
            return
        if event == "return":
            up = stack(frame.f_back)
            if up and (not path.visits or path.visits[-1] != up[0]):
                path.visits.append(up[0])
            return
        if not path.visits or path.visits[-1] != here:
            path.visits.append(here)
        up = stack(frame.f_back)
        if up and up[0] != here:
            path.calls.append((up[0], here))
            if here in up[1:]:
                path.callbacks.append((up[0], here))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return path
