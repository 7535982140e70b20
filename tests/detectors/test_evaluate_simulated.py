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


def test_learning_sequence_spreads_a_developing_fault_mildest_first():
    from dataclasses import replace

    from detectors.simulate import Fault

    proto = replace(SMALL, learning_runs=8, learning_faults=("bearing", "imbalance"))
    sequence = proto.learning_sequence()
    assert sum(f is None for f in sequence) == 8 and len(sequence) == 12
    faults = [f for f in sequence if f is not None]
    assert faults == [
        Fault("bearing", 0.1),
        Fault("imbalance", 0.1),
        Fault("bearing", 0.3),
        Fault("imbalance", 0.3),
    ]
    assert sequence[0] is None and sequence[-1] is None  # between healthy runs
    assert replace(SMALL, learning_runs=3).learning_sequence() == [None] * 3


def test_learning_refuses_a_severe_developing_fault_and_reports_it():
    from dataclasses import replace

    proto = replace(
        SMALL,
        new_runs=1,
        faults=("bearing",),
        learning_runs=1,
        learning_faults=("bearing",),
        learning_fault_severities=(0.8,),
    )
    cache: dict = {}
    (pump,) = evaluate_simulated(DEFAULT_PRESET, proto, cache=cache).kinds
    offered = [None if f is None else f.type for f in proto.learning_sequence()]
    assert sorted(map(str, offered)) == ["None", "bearing"]
    assert [e["fault"] for e in pump.learning_log] == offered
    fault = next(e for e in pump.learning_log if e["fault"] == "bearing")
    # A bearing fault at severity 0.8 is far above the enrollment threshold (measured: every
    # window), so no rule with a margin of 1.25 admits it.
    assert not fault["admitted"] and fault["v1"]["share"] > 0.5
    assert pump.fault_admitted == {"0.8": 0} and pump.fault_offered == {"0.8": 1}
    doc = evaluate_simulated(
        DEFAULT_PRESET, replace(proto, learning_rule="median@1.25"), cache=cache
    )
    (again,) = doc.kinds
    assert again.fault_admitted == {"0.8": 0}
    # The cache gave the second evaluation the same runs: the same healthy ratios.
    healthy = [e["v1"] for e in pump.learning_log if e["fault"] is None]
    assert healthy == [e["v1"] for e in again.learning_log if e["fault"] is None]
    assert doc.to_dict()["kinds"][0]["fault_admitted"] == {"0.8": 0}
