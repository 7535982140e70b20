"""The new-run protocol on simulated machines: a small protocol, run for real."""

from __future__ import annotations

import json

from detectors.evaluate_simulated import SimulatedProtocol, evaluate_simulated, simulated_table
from detectors.presets import DEFAULT_PRESET

SMALL = SimulatedProtocol(
    kinds=("pump",),
    enrollment_runs=4,
    run_seconds=10.0,
    new_runs=3,
    new_run_seconds=10.0,
    faults=("bearing", "belt_squeal"),
    severities=(0.1, 0.8),
    fault_seconds=10.0,
    learning_runs=2,
)


def test_healthy_new_runs_rarely_alarm_and_severe_faults_do():
    result = evaluate_simulated(DEFAULT_PRESET, SMALL)
    (pump,) = result.kinds
    assert len(pump.far_per_run) == 3 and 0 <= pump.admitted <= 2
    # A severe bearing fault or belt squeal is flagged in most windows (measured 1.0); a
    # healthy new run in few (measured 0.0).
    assert pump.det["bearing"]["0.8"] >= 0.8 and pump.det["belt_squeal"]["0.8"] >= 0.8
    assert pump.far <= 0.2
    assert pump.det_at(0.8) >= pump.det_at(0.1)
    doc = result.to_dict()
    json.dumps(doc)
    assert doc["protocol"]["learning_runs"] == 2 and doc["kinds"][0]["kind"] == "pump"
    table = simulated_table([result])
    assert "| default | pump |" in table and "det @0.8" in table


def test_seeds_differ_per_kind_and_role():
    seeds = {
        SMALL.enrollment_seed("pump", 0),
        SMALL.enrollment_seed("fan", 0),
        SMALL.new_run_seed("pump", 0),
        SMALL.learning_seed("pump", 0),
    }
    assert len(seeds) == 4


def test_seeds_table_reports_every_seed_and_their_mean():
    from dataclasses import replace

    from detectors.evaluate_simulated import seeds_table

    tiny = replace(SMALL, new_runs=2, learning_runs=0, faults=("belt_squeal",))
    by_seed = [[evaluate_simulated(DEFAULT_PRESET, replace(tiny, seed=s))] for s in (0, 1)]
    assert by_seed[0][0].kinds[0].far_per_run != by_seed[1][0].kinds[0].far_per_run or (
        by_seed[0][0].kinds[0].threshold != by_seed[1][0].kinds[0].threshold
    )
    table = seeds_table(by_seed)
    rows = [line for line in table.splitlines() if line.startswith("| default |")]
    assert [row.split("|")[2].strip() for row in rows] == ["0", "1"]
    mean_row = next(line for line in table.splitlines() if "mean of 2" in line)
    far = (by_seed[0][0].far + by_seed[1][0].far) / 2
    assert f"**{far:.4f}**" in mean_row
