"""Counters: exact counts, rates, and warnings rate-limited with the number suppressed."""

import logging
import time

import pytest

from ssdaq.core.counters import Counters


def test_reports_are_counted_exactly_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    c = Counters(logging.getLogger("ssdaq.test"), interval_s=0.2)
    with caplog.at_level(logging.WARNING, logger="ssdaq.test"):
        for i in range(1000):
            c.report("bad_size", detail=f"{i} bytes", peer="127.0.0.150")
        assert c["bad_size"] == 1000
        assert len(caplog.records) == 1
        assert caplog.records[0].getMessage() == "bad_size: 1 since last report (total 1); last: 0 bytes from 127.0.0.150"
        c.flush_reports()
        assert len(caplog.records) == 1, "still inside the interval"
        time.sleep(0.25)
        c.flush_reports()
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("bad_size: 999 since last report (total 1000)")
    assert caplog.records[1].SSDAQ_COUNTER == "bad_size"


def test_rates_follow_the_counts() -> None:
    c = Counters(logging.getLogger("ssdaq.test"))
    c.declare(["received"])
    c.tick()
    c.add("received", 50)
    time.sleep(0.1)
    c.tick()
    assert 250 < c.rates["received"] <= 500
