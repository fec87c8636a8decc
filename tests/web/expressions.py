"""The PromQL of the alert rules and the Grafana dashboard, read out of the shipped files."""

import json
import re
from pathlib import Path

import yaml

from tests.conftest import ROOT

PROMETHEUS = ROOT / "prometheus"
RULES = PROMETHEUS / "ssdaq-alerts.yml"
DASHBOARD = PROMETHEUS / "grafana-ssdaq.json"
#: a comparison with a number: the rules' thresholds (every rule compares with a number only)
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?\d+(\.\d+)?(e[+-]?\d+)?")
#: Grafana's variables, as a query over every instance and a short range would use them
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "15s"}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """Every query of the dashboard: panel targets, variables (label_values(M, L) -> M), annotations."""
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        exprs.append(re.fullmatch(r"label_values\((.+), \w+\)", var["definition"]).group(1))
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    out = []
    for expr in exprs:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        out.append(expr)
    return out


def without_thresholds(expr: str) -> str:
    """``expr`` with its comparisons with numbers removed: what must return data."""
    return THRESHOLD.sub("", expr)


def all_expressions() -> dict[str, str]:
    """label -> expression without its thresholds, for every rule and dashboard query."""
    out = {r["alert"]: without_thresholds(r["expr"]) for r in rules()}
    for i, expr in enumerate(dashboard_expressions()):
        out[f"dashboard[{i}]"] = without_thresholds(expr)
    return out
