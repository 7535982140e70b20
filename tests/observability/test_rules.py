"""Prometheus rules: promtool accepts them and their unit tests pass; naming, labels,
annotations and runbook links follow the conventions; every alert is unit-tested both ways."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.observability.promql import (
    DASHBOARDS,
    RULE_FILES,
    RULE_TESTS,
    RUNBOOK,
    binary,
    load_rule_groups,
)

RUNBOOK_PREFIX = "https://github.com/humwatch/humwatch/blob/main/dashboards/runbook.md#"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict]:
    return [r for g in load_rule_groups() for r in g["rules"] if "alert" in r]


def records() -> list[dict]:
    return [r for g in load_rule_groups() for r in g["rules"] if "record" in r]


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_checks_the_example_config():
    result = promtool("check", "config", str(DASHBOARDS / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_recording_rule_names_are_level_metric_operations():
    names = [r["record"] for r in records()]
    assert len(names) == len(set(names))
    for name in names:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level), name
        assert metric.startswith("humwatch_"), name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name


def test_alerts_have_severity_summary_description_and_runbook():
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower().replace(" ", "-"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Humwatch[A-Z][A-Za-z]+", name)
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), url
        anchor = url.removeprefix(RUNBOOK_PREFIX)
        assert anchor == name.lower(), url
        assert anchor in anchors, f"{url}: no '## {name}' section in {RUNBOOK}"


def test_every_alert_is_unit_tested_firing_and_quiet():
    """Each alert has a promtool case where it fires and one where it stays quiet."""
    fired, quiet = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_machine_alerts_route_by_site():
    for alert in alerts():
        if "machine" in alert["expr"]:
            assert "group_left (site, area)" in alert["expr"], alert["alert"]


def test_the_issue_alerts_exist():
    names = {a["alert"] for a in alerts()}
    assert {
        "HumwatchMachineAnomaly",  # sustained anomaly, warning
        "HumwatchMachineAnomalyAlarm",  # persists or high outlier fraction
        "HumwatchSensorFault",  # the service's sensor events
        "HumwatchMicrophoneSilent",
        "HumwatchMicrophoneClipping",
        "HumwatchAudioStale",
        "HumwatchMonitoringWithoutBaseline",
        "HumwatchServiceDown",
        "HumwatchIngestServerErrors",
        "HumwatchIngestRejections",
    } <= names
