"""Helpers for the observability tests: the PromQL of the dashboards and rules, the metric
names it uses, Grafana variable substitution, accelerated rule copies, Prometheus binaries."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
GRAFANA_DASHBOARDS = DASHBOARDS / "grafana" / "dashboards"
RULES_DIR = DASHBOARDS / "prometheus" / "rules"
RULE_FILES = (RULES_DIR / "recording.yml", RULES_DIR / "alerts.yml")
RULE_TESTS = DASHBOARDS / "prometheus" / "tests" / "alerts_test.yml"
RUNBOOK = DASHBOARDS / "runbook.md"

# Series Prometheus makes itself rather than scraping them from the service.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from."""

    source: str  # "plant-overview.json: Machines monitoring", "alert HumwatchMachineAnomaly"
    expr: str
    kind: str  # "panel", "annotation", "variable", "record", "alert"
    name: str = ""  # the record or alert name


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA_DASHBOARDS.glob("*.json"))}


def load_rule_groups(paths=RULE_FILES) -> list[dict[str, Any]]:
    groups = []
    for path in paths:
        groups.extend(yaml.safe_load(Path(path).read_text())["groups"])
    return groups


def dashboard_expressions() -> list[Expression]:
    """Every panel query, annotation query and query-variable of the dashboards."""
    out = []
    for name, board in load_dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append(Expression(f"{name}: {panel['title']}", target["expr"], "panel"))
        for annotation in board["annotations"]["list"]:
            if annotation.get("expr"):
                source = f"{name}: annotation {annotation['name']}"
                out.append(Expression(source, annotation["expr"], "annotation"))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                query = query["query"] if isinstance(query, dict) else query
                out.append(Expression(f"{name}: ${variable['name']}", query, "variable"))
    return out


def rule_expressions() -> list[Expression]:
    out = []
    for group in load_rule_groups():
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            name = rule[kind]
            out.append(Expression(f"{kind} {name}", rule["expr"], kind, name))
    return out


def recorded_names() -> set[str]:
    return {e.name for e in rule_expressions() if e.kind == "record"}


def _mask(expr: str) -> str:
    """The expression without string literals, label matchers and range selectors."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    return re.sub(r"\[[^\]]*\]", "", expr)


def metric_names(expr: str) -> set[str]:
    """Metric (and recorded series) names a PromQL expression or Grafana variable reads."""
    variable = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,.*\)\s*", expr)
    if variable:
        return {variable.group(1)}
    masked = _mask(expr)
    masked = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", masked)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", masked):
        word = match.group(1)
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def substitute_grafana(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$name``, ``${name}``, ``[[name]]``) with ``values``."""

    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"no value for Grafana variable {name!r} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(text: str) -> float:
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))


def _format(seconds: float) -> str:
    return f"{max(int(round(seconds)), 1)}s"


def accelerate_rules(groups: list[dict[str, Any]], factor: float, min_range: float) -> list:
    """A copy of rule groups with every ``for`` and range divided by ``factor`` (ranges no
    shorter than ``min_range`` seconds), for a live test that cannot wait minutes."""

    def scale_range(match: re.Match) -> str:
        return "[" + _format(max(_seconds(match.group(1)) / factor, min_range)) + "]"

    out = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = dict(rule)
            rule["expr"] = re.sub(r"\[([0-9smhdwy]+)\]", scale_range, rule["expr"])
            if "for" in rule:
                rule["for"] = _format(_seconds(rule["for"]) / factor)
            rules.append(rule)
        out.append({**group, "rules": rules})
    return out


def boolify(expr: str) -> str:
    """The expression with every comparison turned into a ``bool`` comparison, so that it
    returns a sample (0 or 1) for each series it compares instead of filtering them out."""
    masked = _mask_keep_length(expr)
    out, last = [], 0
    for match in re.finditer(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)", masked):
        out.append(expr[last : match.end()] + " bool")
        last = match.end()
    out.append(expr[last:])
    return "".join(out)


def _mask_keep_length(expr: str) -> str:
    """Like ``_mask`` but blanks instead of removing, so positions stay valid."""

    def blank(match: re.Match) -> str:
        return " " * len(match.group(0))

    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', blank, expr)
    expr = re.sub(r"\{[^}]*\}", blank, expr)
    return re.sub(r"\[[^\]]*\]", blank, expr)


def binary(name: str) -> str:
    """Path of a Prometheus binary; the test fails (never skips) when it is missing."""
    override = os.environ.get(f"{name.upper()}_BIN")
    path = override or shutil.which(name)
    if path is None or not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found: install it with `apt-get install -y prometheus` (the package "
            f"has prometheus and promtool) or set {name.upper()}_BIN to the binary; .ci/run "
            "installs it",
            pytrace=False,
        )
    return path
