"""Which modules a readout waits for: the expected ones heard from lately.

Kept apart from the event builder (:mod:`ssdaq.data.event_builder`), which groups records by
TACK, because presence is a matter of time alone: a module silent for ``module_timeout_s`` is
absent, and readouts stop waiting for it until it sends again. Expected modules count as heard
at start, and again when data resumes after every expected module was silent that long: a
camera coming back must not publish its first module's records alone, as if the rest were
absent. Pure: ``now`` (monotonic seconds) is passed in.
"""

import math

import numpy as np

from ssdaq.data.readout import N_TM

ALL_SLOTS = tuple(range(N_TM))


def describe_slots(slots: list[int]) -> str:
    """``[5]`` as ``"module 5"``, ``[0, 1, 2, 5, 7, 8]`` as ``"modules 0-2, 5, 7-8"``: a camera
    switched off is one short journal line, not 32."""
    runs: list[list[int]] = []
    for slot in sorted(slots):
        if runs and slot == runs[-1][1] + 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"module {text}" if len(slots) == 1 else f"modules {text}"


class ModulePresence:
    """Per slot ``packets``, ``records`` and ``last_seen`` (monotonic s, NaN = never), for
    ``status``; ``expected`` and ``unexpected`` slots as masks."""

    def __init__(self, expected_slots: tuple[int, ...], timeout_s: float, now: float) -> None:
        if not expected_slots or not set(expected_slots) <= set(ALL_SLOTS):
            raise ValueError(f"expected_slots must be slots in 0..{N_TM - 1}")
        self.timeout_s = timeout_s
        self.packets = np.zeros(N_TM, np.int64)
        self.records = np.zeros(N_TM, np.int64)
        self.last_seen = np.full(N_TM, np.nan)
        self._start = now
        self._heard = -np.inf  # when an expected module last sent
        self.expected = np.zeros(N_TM, bool)
        self.expected[list(expected_slots)] = True
        self.unexpected = ~self.expected
        # when a slot last counts as heard at the latest: expected slots at ``_start``
        self._floor = np.where(self.expected, now, -np.inf)
        # the slots waived at the last ``newly_waived`` and not heard from since
        self._waived_before = self.unexpected.copy()
        self._absent: list[int] | None = None  # what ``absent_expected`` found, while it holds
        self._absent_span = (math.inf, -math.inf)  # the times it holds for

    def heard(self, datagram_slot: np.ndarray, slot: np.ndarray, now: float) -> None:
        """Datagrams from ``datagram_slot`` (one per datagram) holding records of ``slot``
        (one per record) arrived ``now``."""
        if not len(datagram_slot):
            return
        if np.count_nonzero(self.expected[datagram_slot]):
            if now - max(self._heard, self._start) >= self.timeout_s:
                self._start = now  # the whole camera was silent: its return is a new start
                self._floor[self.expected] = now
                self._waived_before[self.expected] = False
            self._heard = now
        self._waived_before[datagram_slot] = False
        self.packets += np.bincount(datagram_slot, minlength=N_TM)
        self.records += np.bincount(slot, minlength=N_TM)
        self.last_seen[datagram_slot] = now
        if self._absent:  # one of them may be back (hearing a live slot only keeps it alive longer)
            self._absent = None

    def alive(self, now: float) -> np.ndarray:
        """Slots heard within ``module_timeout_s`` (see the module docstring)."""
        heard: np.ndarray = np.fmax(self.last_seen, self._floor)
        return now - heard < self.timeout_s

    def absent_expected(self, now: float) -> list[int]:
        """The expected slots not ``alive``, worked out again only when that can have changed: a
        live slot's timeout came, or a slot was heard while some were absent. ``status`` and the
        once-a-second module check ask for it at any data rate, and each numpy call made once a
        second costs tens of µs, out of the CPU's caches."""
        if self._absent is None or not self._absent_span[0] <= now < self._absent_span[1]:
            alive = self.alive(now)
            self._absent = np.flatnonzero(self.expected & ~alive).tolist()
            dies = self.absent_at()[self.expected & alive]
            # a µs early, so that the float sum cannot call a slot alive a last ulp too long
            self._absent_span = (now, float(dies.min()) - 1e-6 if len(dies) else math.inf)
        return list(self._absent)  # the caller's to keep

    def waived(self, now: float) -> np.ndarray:
        """Slots a readout does not wait for: not expected, or not ``alive``."""
        return ~self.alive(now) | self.unexpected

    def newly_waived(self, now: float) -> bool:
        """Whether a slot became waived since the last call. Only then can an open readout that
        no record reached meanwhile stop waiting for anything: a slot stops being waived only
        when heard, and time alone only waives more."""
        waived = self.waived(now)
        grew = bool(np.count_nonzero(waived & ~self._waived_before))
        self._waived_before = waived
        return grew

    def absent_at(self) -> np.ndarray:
        """When each slot becomes absent unless it sends (monotonic s)."""
        dies: np.ndarray = np.fmax(self.last_seen, self._floor) + self.timeout_s
        return dies
