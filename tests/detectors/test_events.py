"""The event state machine on hand-made window streams (no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from detectors.events import EventParams, EventTracker, WindowObs
from detectors.sensor import window_flags

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
# The rules at an open ratio of 1 (the default is 1.2, test_the_default_needs_a_margin).
P = EventParams(
    n=6, m=3, open_ratio=1.0, alarm_ratio=2.0, alarm_after_s=600, quiet_s=300, reopen_s=1800
)


def windows(ratios, start=0.0, hop=1.0, length=5.0, key0=0, **flags):
    """Consecutive windows from ``start`` seconds after T0 with the given ratios."""
    return [
        WindowObs(
            T0 + timedelta(seconds=start + i * hop),
            T0 + timedelta(seconds=start + i * hop + length),
            r,
            key=key0 + i,
            **flags,
        )
        for i, r in enumerate(ratios)
    ]


def actions(changes, kind="anomaly"):
    return [(c.action, c.severity) for c in changes if c.kind == kind and c.action != "member"]


def members(changes, kind="anomaly"):
    return [c.window.key for c in changes if c.kind == kind and c.action == "member"]


def test_isolated_outliers_open_nothing():
    tracker = EventTracker(P)
    ratios = [0.5, 1.4, 0.6, 0.7, 0.8, 1.2, 0.5, 0.4, 0.6, 1.1, 0.7]  # never 3 of 6
    assert tracker.observe(windows(ratios)) == []
    assert tracker.health == "ok"


def test_persistent_evidence_opens_one_warning_with_its_windows():
    tracker = EventTracker(P)
    changes = tracker.observe(windows([0.5, 0.6, 1.3, 0.9, 1.2, 1.5, 1.4, 1.3]))
    assert actions(changes) == [("open", "warning")]
    opened = next(c for c in changes if c.action == "open")
    assert opened.at == T0 + timedelta(seconds=5 + 5)  # the third evidence window's end
    # Members: from the first evidence window on (key 2), every heard window while open.
    assert members(changes) == [2, 3, 4, 5, 6, 7]
    assert tracker.health == "warning"


def test_escalation_on_magnitude_even_for_a_gross_change():
    tracker = EventTracker(P)
    changes = tracker.observe(windows([1.2, 1.3, 1.4, 2.5, 3.0, 4.0]))
    assert actions(changes) == [("open", "warning"), ("escalate", "alarm")]
    assert tracker.health == "alarm"
    direct = EventTracker(P).observe(windows([5.0, 6.0, 7.0, 7.0]))
    assert actions(direct) == [("open", "warning"), ("escalate", "alarm")]
    assert [c.at for c in direct if c.action != "member"] == [
        T0 + timedelta(seconds=2 + 5),
        T0 + timedelta(seconds=3 + 5),
    ]


def test_escalation_on_persistence():
    tracker = EventTracker(P)
    # A ratio of 1.3 for 15 minutes, one window a second: warning, alarm after 600 s.
    changes = tracker.observe(windows([1.3] * 900))
    assert actions(changes) == [("open", "warning"), ("escalate", "alarm")]
    opened, escalated = [c for c in changes if c.action in ("open", "escalate")]
    assert (escalated.at - opened.at).total_seconds() == pytest.approx(600, abs=1)


def test_quiet_period_resolves_and_flapping_stays_one_event():
    tracker = EventTracker(P)
    fault = [1.5] * 20
    quiet = [0.5] * 400
    changes = tracker.observe(windows(fault + quiet))
    assert actions(changes) == [("open", "warning"), ("resolve", None)]
    resolved = next(c for c in changes if c.action == "resolve")
    last_evidence_end = T0 + timedelta(seconds=19 + 5)
    assert resolved.at == last_evidence_end + timedelta(seconds=300)
    assert tracker.health == "ok"
    # The fault returns ten minutes later (within reopen_s): the same event reopens.
    again = tracker.observe(windows([1.5] * 5, start=420 + 600))
    assert actions(again) == [("reopen", "warning")]
    assert tracker.health == "warning"


def test_mid_level_fault_alternating_around_one_is_one_event():
    rng = np.random.default_rng(0)
    ratios = (1.05 + 0.25 * rng.standard_normal(3600)).tolist()  # an hour near the threshold
    changes = EventTracker(P).observe(windows(ratios))
    opens = [a for a in actions(changes) if a[0] == "open"]
    assert len(opens) == 1


def test_new_event_after_reopen_window_and_hold_off_after_a_close():
    tracker = EventTracker(P)
    tracker.observe(windows([1.5] * 10 + [0.5] * 310))
    # Evidence after reopen_s: a new event opens.
    changes = tracker.observe(windows([1.5] * 5, start=320 + 1801))
    assert actions(changes) == [("open", "warning")]
    closed_at = T0 + timedelta(seconds=2200)
    tracker.closed("anomaly", closed_at)
    assert tracker.health == "ok"
    # Within the hold-off: warnings are held, alarm magnitude still opens.
    held = tracker.observe(windows([1.5] * 10, start=2300))
    assert actions(held) == []
    loud = tracker.observe(windows([3.0] * 5, start=2400))
    assert actions(loud) == [("open", "warning"), ("escalate", "alarm")]
    tracker.closed("anomaly", closed_at + timedelta(seconds=300))
    # After the hold-off ends, a warning opens again.
    after = tracker.observe(windows([1.5] * 5, start=2500 + P.hold_off_s + 300))
    assert actions(after) == [("open", "warning")]


def test_sensor_windows_never_count_as_anomaly_and_open_a_sensor_event():
    tracker = EventTracker(P)
    # Silent windows (high ratio: silence is far from the baseline) are a sensor fault.
    changes = tracker.observe(windows([9.0] * 20, silent=True))
    assert actions(changes) == []
    assert actions(changes, "sensor") == [("open", "warning")]
    assert next(c for c in changes if c.action == "open").cause == "silence"
    assert tracker.health == "sensor_fault"
    # Heard again: the sensor event resolves after sensor_quiet_s; still no anomaly.
    changes = tracker.observe(windows([0.5] * 200, start=20))
    assert actions(changes, "sensor") == [("resolve", None)]
    assert actions(changes) == []
    assert tracker.health == "ok"


def test_clipping_and_dropout_causes_and_an_interrupted_fault():
    tracker = EventTracker(P)
    # Two anomalous windows, clipped ones in between, one more anomalous: 3 of 6 heard.
    ws = windows([1.5, 1.5], key0=0)
    ws += windows([5.0] * 4, start=2, clipped=True, key0=10)
    ws += windows([1.5], start=6, key0=20)
    changes = tracker.observe(ws)
    assert actions(changes, "sensor") == [("open", "warning")]
    assert next(c for c in changes if c.kind == "sensor" and c.action == "open").cause == "clipping"
    assert actions(changes) == [("open", "warning")]
    assert members(changes) == [0, 1, 20]  # the clipped windows are not anomaly members
    dropout = EventTracker(P).observe(windows([1.0] * 3, dropout=True))
    assert next(c for c in dropout if c.action == "open").cause == "dropout"


def test_stale_microphone_opens_on_advance_and_resolves_on_the_next_window():
    tracker = EventTracker(P)
    tracker.observe(windows([0.5] * 10))  # received at their end (no received_at given)
    last_end = T0 + timedelta(seconds=9 + 5)
    assert tracker.advance(last_end + timedelta(seconds=P.stale_after_s - 1)) == []
    changes = tracker.advance(last_end + timedelta(seconds=P.stale_after_s + 60))
    assert [(c.action, c.cause) for c in changes] == [("open", "stale")]
    assert changes[0].at == last_end + timedelta(seconds=P.stale_after_s)
    assert tracker.advance(last_end + timedelta(seconds=P.stale_after_s + 120)) == []
    assert tracker.health == "sensor_fault"
    changes = tracker.observe(windows([0.5], start=2000))
    assert actions(changes, "sensor") == [("resolve", None)]
    assert tracker.health == "ok"
    # Backfilled old audio received now is not stale an hour after its audio time.
    backfill = EventTracker(P)
    received = T0 + timedelta(days=30)
    backfill.observe(windows([0.5] * 10), received_at=received)
    assert backfill.advance(T0 + timedelta(hours=1)) == []
    assert backfill.advance(received + timedelta(seconds=P.stale_after_s + 1)) != []


def test_late_windows_join_an_open_event_and_are_otherwise_ignored():
    tracker = EventTracker(P)
    tracker.observe(windows([0.5] * 10))
    changes = tracker.observe(windows([1.5] * 5, start=100, key0=100))
    assert actions(changes) == [("open", "warning")]
    # A late window inside the event's span joins it; it never opens or resolves anything.
    late_inside = tracker.observe(windows([0.4], start=101.5, key0=500))
    assert members(late_inside) == [500] and actions(late_inside) == []
    # Late and before the event: ignored (counted), no change.
    late_before = tracker.observe(windows([9.0] * 5, start=20, key0=600))
    assert late_before == [] and tracker.late_ignored == 5
    # Out-of-order evidence cannot open a second event either.
    assert tracker.health == "warning"


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    ratios = np.concatenate([rng.uniform(0.2, 0.9, 300), rng.uniform(0.8, 2.6, 900)]).tolist()
    stream = windows(ratios)
    whole = EventTracker(P).observe(stream)
    first = EventTracker(P)
    part = first.observe(stream[:700])
    state = json.loads(json.dumps(first.state))
    part += EventTracker(P, state=state).observe(stream[700:])
    assert [(c.action, c.at, c.window.key if c.window else None) for c in part] == [
        (c.action, c.at, c.window.key if c.window else None) for c in whole
    ]


def test_windows_without_ratio_feed_only_the_sensor_logic():
    tracker = EventTracker(P)
    assert tracker.observe(windows([None] * 10)) == []
    changes = tracker.observe(windows([None] * 5, start=10, silent=True))
    assert actions(changes, "sensor") == [("open", "warning")]


def test_the_default_needs_a_margin_above_the_threshold():
    assert EventTracker().observe(windows([1.15] * 30)) == []
    opened = EventTracker().observe(windows([1.25] * 3))
    assert actions(opened) == [("open", "warning")]


def test_params_are_validated_and_overridable():
    assert EventParams.from_dict({"m": 2}).m == 2
    assert EventParams.from_dict(None) == EventParams()
    with pytest.raises(ValueError, match="unknown event parameter"):
        EventParams.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="m <= n"):
        EventParams(n=3, m=4)
    with pytest.raises(ValueError, match="hysteresis"):
        EventParams(open_ratio=1.0, resolve_ratio=1.2)


def test_window_flags_on_synthetic_audio():
    rate = 16000
    rng = np.random.default_rng(0)
    heard = 0.1 * rng.standard_normal(rate * 4)
    x = heard.copy()
    x[rate : rate + rate // 2] = 0.0  # a dropout in the second second
    x[3 * rate :] = np.clip(x[3 * rate :] * 30, -1, 1)  # the last second clips
    silent = np.zeros(rate * 4)
    starts = np.arange(4) * rate
    flags = window_flags(x, starts, rate, rate)
    assert flags.dropout.tolist() == [False, True, False, False]
    assert flags.clipped.tolist() == [False, False, False, True]
    assert not flags.silent.any()
    assert window_flags(silent, starts, rate, rate).silent.all()
    assert not window_flags(heard, starts, rate, rate).dropout.any()
