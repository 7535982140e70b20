"""The fleet evaluation: its scoring of events against the injected truth (hand-made streams)
and one small simulated run end to end."""

from __future__ import annotations

import numpy as np

from detectors.events import EventParams
from detectors.fleet import (
    FleetConfig,
    Interval,
    MachineStream,
    ScoredClip,
    evaluate_fleet,
    replay,
    summarize,
)

REQUIRED = {
    "false_anomaly_events_per_machine_week",
    "faults_injected",
    "faults_detected_fraction",
    "warning_delay_s_median",
    "warning_delay_s_p90",
    "alarm_delay_s_median",
    "sensor_events_reported_as_anomaly",
    "params",
    "seed",
}


def _stream(levels, faults=(), mic=(), silent_at=()):
    """One clip of 6 windows a minute; ``levels[i]`` is clip i's ratio."""
    clips = []
    for i, level in enumerate(levels):
        flag = np.full(6, i in silent_at)
        clips.append(
            ScoredClip(60.0 * i, np.full(6, float(level)), flag, ~flag & False, ~flag & False)
        )
    return MachineStream("m-00", "fan", 1480.0, 5.0, 1.0, clips, list(faults), list(mic))


def test_replay_scores_events_against_the_truth():
    levels = [0.5] * 100
    levels[10] = 1.5  # a false event: healthy time
    for i in range(40, 60):  # a fault from clip 40 to 60, strong from 45
        levels[i] = 1.5 if i < 45 else 3.0
    levels[80] = 9.0  # during a microphone fault but heard: reported as an anomaly
    fault = Interval(40 * 60.0 - 30, 60 * 60.0, "bearing", 0.5)
    mic = Interval(80 * 60.0 - 30, 85 * 60.0, "silence")
    result = replay(_stream(levels, [fault], [mic], silent_at={82, 83}), EventParams())
    assert result.false_events == 1 and result.sensor_as_anomaly == 1
    assert result.detected == [True]
    assert result.warning_delays == [30.0 + 2 + 5]  # third window of the first faulty clip
    assert result.alarm_delays == [5 * 60.0 + 30.0 + 2 + 5]  # third window above 2
    assert result.sensor_events == 1 and result.mic_faults_with_sensor_event == 1
    figures = summarize([_stream(levels, [fault], [mic])], EventParams(), FleetConfig())
    assert figures["faults_injected"] == 1 and figures["faults_detected_fraction"] == 1.0


def test_a_fault_inside_an_open_event_is_not_a_detection():
    levels = [1.5] * 60  # open from the start, never quiet
    fault = Interval(30 * 60.0, 50 * 60.0, "imbalance", 0.8)
    result = replay(_stream(levels, [fault]), EventParams())
    assert result.detected == [False] and result.already_open == [True]
    assert result.escalated_open == [False]  # the fault did not change the sound
    assert result.healthy_in_anomaly_s > 0


def test_a_fault_that_escalates_an_open_event_is_counted_apart():
    # A warning opened at clip 25 (healthy time), the fault from clip 28 above the alarm
    # ratio: it escalates before the warning's persistence would (alarm_after_s).
    levels = [0.5] * 25 + [1.5] * 3 + [3.0] * 20 + [0.5] * 12
    fault = Interval(28 * 60.0 - 30, 48 * 60.0, "imbalance", 0.8)
    result = replay(_stream(levels, [fault]), EventParams())
    assert result.detected == [False] and result.already_open == [True]
    assert result.escalated_open == [True]
    figures = summarize([_stream(levels, [fault])], EventParams(), FleetConfig())
    assert figures["faults_with_event_already_open_escalated_to_alarm"] == 1


def test_small_simulated_fleet_end_to_end():
    config = FleetConfig(
        machines=1,
        days=0.3,
        seed=3,
        pool_clips=1,
        clip_interval_s=300.0,
        run_hours=(3.0, 4.0),
        fault_hours=(0.5, 1.0),
        mic_fault_minutes=(20.0, 30.0),
    )
    out = evaluate_fleet(config)
    assert REQUIRED <= set(out)
    assert out["seed"] == 3 and out["params"] == EventParams().to_dict()
    assert out["faults_injected"] == 1 and out["sensor_faults_injected"] == 1
    # A microphone fault is a sensor event, never an anomaly.
    assert out["sensor_faults_with_sensor_event_fraction"] == 1.0
    assert out["sensor_events_reported_as_anomaly"] == 0
    assert [row["open_ratio"] for row in out["tradeoff"]][:3] == [0.8, 0.9, 1.0]
    curve = {row["slow_fraction"]: row for row in out["sustained_tradeoff"]}
    assert list(curve)[0] == 0.0 and EventParams().slow_fraction in curve
    # The default's own row is the headline figures (the same streams, the same rules).
    row = curve[EventParams().slow_fraction]
    for key in ("false_anomaly_events", "faults_detected_fraction"):
        assert row[key] == out[key]
    (machine,) = out["machines"]
    assert machine["kind"] == "fan" and machine["clips"] > 70
