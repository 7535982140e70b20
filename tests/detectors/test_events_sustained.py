"""Sustained evidence: the second way an anomaly event opens (``EventParams.slow_*``), on
hand-made streams of one 10 s clip (6 windows of 5 s every 1 s) a minute, as the fleet
evaluation and a typical agent send them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from detectors.events import EventParams, EventTracker, WindowObs

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
DEFAULT = EventParams()


def clips(per_clip, first_minute=0, every_s=60.0):
    """One clip per ``every_s`` from ``first_minute``; ``per_clip[i]`` its 6 window ratios."""
    out = []
    for i, ratios in enumerate(per_clip):
        start = T0 + timedelta(seconds=60.0 * first_minute + every_s * i)
        out.append(
            [
                WindowObs(start + timedelta(seconds=j), start + timedelta(seconds=j + 5), r)
                for j, r in enumerate(ratios)
            ]
        )
    return out


def feed(tracker, stream):
    """Changes per clip (members left out)."""
    return [
        [(c.action, c.severity, c.at) for c in tracker.observe(clip) if c.action != "member"]
        for clip in stream
    ]


# Two windows of six just above the threshold, never three above open_ratio (1.2): the
# quick rule never opens on these, 33 % of the windows are evidence.
SUBTLE = [0.8, 1.1, 0.8, 0.8, 1.05, 0.8]


def test_a_fault_just_above_the_threshold_opens_once_ten_minutes_hold_evidence():
    assert DEFAULT.slow_fraction == 0.3 and DEFAULT.slow_min_minutes == 10
    tracker = EventTracker(DEFAULT)
    changes = feed(tracker, clips([SUBTLE] * 30))
    assert all(c == [] for c in changes[:9])  # nine minutes are not enough
    # The tenth minute: its first window above the threshold (second window) opens it.
    start = T0 + timedelta(minutes=9)
    assert changes[9] == [("open", "warning", start + timedelta(seconds=1 + 5))]
    assert tracker.health in ("warning", "alarm")
    # Still there 10 minutes later: persistence escalates, as for any event.
    escalations = [c for clip in changes for c in clip if c[0] == "escalate"]
    assert len(escalations) == 1 and escalations[0][1] == "alarm"
    assert escalations[0][2] - changes[9][0][2] >= timedelta(seconds=DEFAULT.alarm_after_s)
    assert sum(len(c) for c in changes) == 2  # one event: no resolve or reopen in between


def test_the_same_stream_opens_nothing_without_sustained_evidence():
    off = replace(DEFAULT, slow_fraction=0.0)
    assert all(c == [] for c in feed(EventTracker(off), clips([SUBTLE] * 120)))


def test_below_the_fraction_nothing_opens_in_hours():
    sparse = [0.8, 1.1, 0.8, 0.8, 0.8, 0.8]  # 17 % of the windows
    assert all(c == [] for c in feed(EventTracker(DEFAULT), clips([sparse] * 240)))


def test_too_few_minutes_heard_within_the_span_open_nothing():
    # Half the windows above 1 but one clip every 10 minutes: 6 minutes per hour.
    half = [0.8, 1.1, 0.8, 1.1, 0.8, 1.1]
    stream = clips([half] * 40, every_s=600.0)
    assert all(c == [] for c in feed(EventTracker(DEFAULT), stream))
    fewer = replace(DEFAULT, slow_min_minutes=5)
    assert any(c for c in feed(EventTracker(fewer), stream))


def test_an_event_of_sustained_evidence_waits_slow_quiet_s_before_resolving():
    tracker = EventTracker(DEFAULT)
    feed(tracker, clips([SUBTLE] * 12))
    assert tracker.health == "warning"
    # The fault ends: quiet windows only. quiet_s (5 min) is not its end; slow_quiet_s is.
    after = feed(tracker, clips([[0.5] * 6] * 40, first_minute=12))
    resolved = [c for clip in after for c in clip if c[0] == "resolve"]
    assert len(resolved) == 1
    last_evidence = T0 + timedelta(minutes=11, seconds=4 + 5)  # the 1.05 window's end
    waited = resolved[0][2] - last_evidence
    assert (
        timedelta(seconds=DEFAULT.slow_quiet_s)
        <= waited
        < timedelta(seconds=DEFAULT.slow_quiet_s + 60)
    )


def test_an_event_of_quick_evidence_keeps_its_short_quiet_period():
    tracker = EventTracker(DEFAULT)
    feed(tracker, clips([[1.5] * 6]))  # 3 of 6 above 1.2: the quick rule
    after = feed(tracker, clips([[0.5] * 6] * 10, first_minute=1))
    resolved = [c for clip in after for c in clip if c[0] == "resolve"]
    assert len(resolved) == 1
    assert resolved[0][2] - (T0 + timedelta(seconds=10)) < timedelta(seconds=DEFAULT.quiet_s + 60)


def test_sustained_state_survives_a_round_trip():
    half = [0.8, 1.1, 0.8, 1.1, 0.8, 1.05]
    stream = clips([[0.5] * 6] * 5 + [half] * 25 + [[0.5] * 6] * 40)
    whole = feed(EventTracker(DEFAULT), stream)
    first = EventTracker(DEFAULT)
    part = feed(first, stream[:14])
    state = json.loads(json.dumps(first.state))
    assert state["slow"], "the minute counts travel with the state"
    part += feed(EventTracker(DEFAULT, state=state), stream[14:])
    assert part == whole
    assert sum(len(c) for c in whole) == 3  # open, escalate, resolve


def test_sustained_parameters_are_validated():
    with pytest.raises(ValueError, match="slow_fraction"):
        EventParams(slow_fraction=1.5)
    # Below resolve_ratio is allowed (machines' stored overrides stay valid): its windows
    # keep a sustained event open.
    assert EventParams(resolve_ratio=1.2, open_ratio=1.3, slow_ratio=1.0).slow_ratio == 1.0
    with pytest.raises(ValueError, match="slow_min_minutes"):
        EventParams(slow_min_minutes=0)
    with pytest.raises(ValueError, match="slow_quiet_s"):
        EventParams(slow_quiet_s=-1)
    assert EventParams.from_dict({"slow_fraction": 0}).slow_fraction == 0
