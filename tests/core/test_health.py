"""Health: STATUS= lines and watchdog pings on a real notify socket, withheld while unhealthy."""

import asyncio
import logging
import time

import pytest

from ssdaq.core import health
from ssdaq.core.counters import Counters
from ssdaq.core.health import Health
from tests.sdnotify import NotifyListener


def make(problem: list[str | None], refreshed: list[int]) -> Health:
    log = logging.getLogger("ssdaq.test")
    counters = Counters(log)
    counters.declare(("received",))
    return Health(log, counters, lambda: "3 in/s", lambda: problem[0],
                  lambda: refreshed.append(1), lambda: None)


async def run_for(seconds: float, *coros: object) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_status_lines_carry_the_note_and_the_watchdog_stops_while_a_problem_lasts(
        notify: NotifyListener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.setattr(health, "TICK_S", 0.1)
    problem: list[str | None] = [None]
    h = make(problem, [])
    h.note = "restart needed for: publishers"

    async def scenario() -> None:
        loops = (h.status_loop(), h.watchdog_loop())
        await run_for(0.55, *loops)
        problem[0] = "task ct_x failed"
        await run_for(0.55, h.status_loop(), h.watchdog_loop())

    t0 = time.monotonic()
    asyncio.run(scenario())
    pings = [t - t0 for t, _, f in notify.log if f.get("WATCHDOG") == "1"]
    statuses = [f["STATUS"] for _, _, f in notify.log if "STATUS" in f]
    assert len(pings) >= 3 and max(pings) < 0.6, "pings while healthy, none once a problem is there"
    assert statuses and all(s == "3 in/s; restart needed for: publishers" for s in statuses)
    assert caplog.text.count("withholding the watchdog ping: task ct_x failed") == 1


def test_report_refreshes_the_counters_and_notes_when_input_last_grew() -> None:
    problem: list[str | None] = [None]
    refreshed: list[int] = []
    h = make(problem, refreshed)
    assert h.report()["last_input_s_ago"] is None and refreshed
    h.counters.add("received", 5)
    h.tick()
    report = h.report()
    assert report["last_input_s_ago"] == 0.0 and report["counters"]["received"] == 5
    assert report["health"] == "ok" and report["status_line"] == "3 in/s"
    problem[0] = "socket stuck"
    assert h.report()["health"] == "socket stuck"
    assert h.received() == 5


def test_a_reader_counts_as_stuck_after_two_watchdog_pings_and_at_least_2_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert health.stall_limit_s() == 2.0
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    assert health.stall_limit_s() == 5.0
