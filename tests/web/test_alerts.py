"""prometheus/: the alert rules pass promtool's checks and unit tests; each says what to do."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.web.expressions import PROMETHEUS, RULES, rules, without_thresholds

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool is not installed (Debian: prometheus)")
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=ROOT / "tests" / "web")


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_every_rule_pass() -> None:
    done = promtool("test", "rules", "ssdaq-alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "tests/web/ssdaq-alerts.test.yml").read_text()))
    assert {r["alert"] for r in rules()} <= tested


def test_every_alert_points_to_its_section_of_the_operations_guide() -> None:
    headings = {re.sub(r"[^\w-]", "", h.strip().lower().replace(" ", "-"))
                for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)}
    for rule in rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url == "file:///usr/share/doc/ssdaq/operations.md" and anchor in headings, rule["alert"]


def test_thresholds_are_only_compared_with_numbers() -> None:
    """What the real-Prometheus test relies on to query each expression without its threshold."""
    for rule in rules():
        assert not re.search(r"(==|!=|>=|<=|>|<)", without_thresholds(rule["expr"])), rule["alert"]


def test_the_example_scrape_configuration_is_valid(tmp_path: Path) -> None:
    text = (PROMETHEUS / "scrape-example.yml").read_text()
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/usr/share/ssdaq/prometheus/ssdaq-alerts.yml", str(RULES)))
    done = promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
