"""Counters: exact counts, rates, and warnings rate-limited with the number suppressed."""

import logging
import time

import pytest

from ssdaq.core import counters
from ssdaq.core.counters import CATALOGUE, Counters


def test_reports_are_counted_exactly_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    c = Counters(logging.getLogger("ssdaq.test"), interval_s=0.2)
    c.declare(["bad_size"])
    with caplog.at_level(logging.WARNING, logger="ssdaq.test"):
        for i in range(1000):
            c.report("bad_size", detail=f"{i} bytes", peer="127.0.0.150")
        assert c["bad_size"] == 1000
        assert len(caplog.records) == 1
        assert caplog.records[0].getMessage() == \
            "bad_size: 1 since last report (total 1); last: 0 bytes from 127.0.0.150"
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


def test_an_undeclared_counter_fails_when_strict_and_is_still_counted_otherwise(
        caplog: pytest.LogCaptureFixture) -> None:
    strict = Counters(logging.getLogger("ssdaq.test"), strict=True)
    strict.declare(["late"])
    strict.add("late")
    with pytest.raises(KeyError, match="'lat' was not declared"):
        strict.report("lat")
    lenient = Counters(logging.getLogger("ssdaq.test"), strict=False)
    with caplog.at_level(logging.ERROR, logger="ssdaq.test"):
        lenient.add("lat", 2)
        lenient.add("lat")
    assert lenient["lat"] == 3 and len(caplog.records) == 1


def test_only_catalogued_counters_can_be_declared() -> None:
    with pytest.raises(KeyError, match="not in the catalogue"):
        Counters(logging.getLogger("ssdaq.test")).declare(["no_such_counter"])


def test_the_test_suite_runs_strict() -> None:
    assert Counters(logging.getLogger("ssdaq.test")).strict


def test_every_catalogue_entry_has_a_kind_and_one_line_of_help() -> None:
    for name, spec in CATALOGUE.items():
        assert spec.name == name and spec.kind in ("loss", "info")
        assert spec.help and "\n" not in spec.help and spec.help[0].isupper(), name
        assert name.isidentifier() and name == name.lower(), name


def test_a_site_counter_is_defined_once() -> None:
    spec = counters.define("site_widgets", "info", "Widgets a site receiver made")
    assert counters.define("site_widgets", "info", "Widgets a site receiver made") == spec
    with pytest.raises(ValueError, match="already declared"):
        counters.define("site_widgets", "loss", "Something else")
    del CATALOGUE["site_widgets"]
