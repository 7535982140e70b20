"""`humwatch evaluate fleet`: the command writes the figures the issue asks for, and refuses
bad event parameters with one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def test_fleet_command_writes_the_figures(tmp_path):
    out = tmp_path / "fleet.json"
    result = runner.invoke(
        app,
        [
            "evaluate", "fleet", "--machines", "1", "--days", "0.2", "--seed", "5",
            "--pool-clips", "1", "--clip-interval", "600", "--json", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in (
        "false_anomaly_events_per_machine_week",
        "faults_injected",
        "faults_detected_fraction",
        "warning_delay_s_median",
        "warning_delay_s_p90",
        "alarm_delay_s_median",
        "sensor_events_reported_as_anomaly",
        "params",
        "seed",
        "tradeoff",
    ):
        assert key in figures, key
    assert figures["seed"] == 5 and figures["config"]["machines"] == 1
    assert "trade-off over open_ratio" in result.output


def test_fleet_command_refuses_bad_parameters():
    result = runner.invoke(app, ["evaluate", "fleet", "--params", '{"m": 9}'])
    assert result.exit_code == 1
    assert "need 1 <= m <= n" in result.output
