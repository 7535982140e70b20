"""`humwatch evaluate fleet` and `evaluate events`: the commands write the figures the issue
asks for, and refuse bad input with one line."""

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
        "sustained_tradeoff",
    ):
        assert key in figures, key
    assert figures["seed"] == 5 and figures["config"]["machines"] == 1
    assert "trade-off over open_ratio" in result.output
    assert "trade-off over slow_fraction" in result.output


def test_fleet_command_refuses_bad_parameters():
    result = runner.invoke(app, ["evaluate", "fleet", "--params", '{"m": 9}'])
    assert result.exit_code == 1
    assert "need 1 <= m <= n" in result.output


def test_events_command_on_real_clip_streams(tmp_path):
    """`humwatch evaluate events` on a small manifest: the figures, the table, the JSON."""
    import numpy as np
    import soundfile as sf

    rows = ["path,dataset,machine_type,section,split,label"]
    for i in range(12):
        label = "normal" if i < 8 else "anomaly"
        rng = np.random.default_rng(i)
        t = np.arange(7 * 16000) / 16000
        x = 0.3 * np.sin(2 * np.pi * 120 * t) + 0.05 * rng.standard_normal(t.size)
        if label == "anomaly":
            x += 0.2 * np.sin(2 * np.pi * 2500 * t)
        sf.write(tmp_path / f"c{i}.wav", x.astype(np.float32), 16000)
        rows.append(f"c{i}.wav,plant,fan,id_00,unsplit,{label}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "events.json"
    result = runner.invoke(
        app,
        [
            "evaluate", "events", str(manifest), "--folds", "2", "--repeats", "1",
            "--min-clips", "4", "--json", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    (group,) = figures["groups"]
    assert group["streams"] == 2 and group["anomalous_stretches_detected_fraction"] == 1.0
    assert figures["config"]["min_normals"] == 4 and "| **pooled** |" in result.output
    bad = runner.invoke(app, ["evaluate", "events", str(manifest), "--min-clips", "50"])
    assert bad.exit_code == 1 and "no group has enough clips" in bad.output
