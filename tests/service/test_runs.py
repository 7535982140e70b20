"""Runs (gap rule and client ``run``), enrollment that needs several runs, coverage, and the
learning period that admits normal runs into new baseline versions."""

from __future__ import annotations

from datetime import timedelta

from service.models import Baseline, Recording
from service.services.runs import Span, assign_runs, coverage
from tests.service.audio import wav
from tests.service.conftest import T0, create_machine, upload


def span(i: int, start_s: float, seconds: float = 10.0, **conditions) -> Span:
    start = T0 + timedelta(seconds=start_s)
    return Span(i, start, start + timedelta(seconds=seconds), conditions)


def test_a_gap_longer_than_the_limit_starts_a_new_run():
    spans = [span(1, 0), span(2, 10), span(3, 80), span(4, 1000), span(5, 1010)]
    runs = assign_runs(spans, gap_seconds=60)
    assert runs[1] == runs[2] == runs[3]  # 0 s and 60 s gaps continue the run
    assert runs[4] == runs[5] != runs[1]


def test_out_of_order_recordings_fall_into_their_run():
    spans = [span(3, 1010), span(1, 0), span(4, 20), span(2, 1000), span(5, 10)]
    runs = assign_runs(spans, gap_seconds=60)
    assert runs[1] == runs[5] == runs[4]
    assert runs[2] == runs[3] != runs[1]


def test_the_client_run_condition_overrides_the_gap_rule():
    spans = [span(1, 0, run="a"), span(2, 10, run="b"), span(3, 20, run="a"), span(4, 30)]
    runs = assign_runs(spans, gap_seconds=60)
    assert runs[1] == runs[3] == "run:a" and runs[2] == "run:b"
    assert runs[4].startswith("gap:")


def test_coverage_counts_seconds_runs_and_conditions():
    spans = [span(1, 0, rpm=1480), span(2, 10, rpm=1480), span(3, 5000, rpm=1200, run="x")]
    cov = coverage(spans, gap_seconds=60)
    assert (cov.seconds, cov.recordings, cov.runs) == (30.0, 3, 2)
    assert cov.conditions == {"rpm": [1200, 1480]}
    assert cov.first_at == T0 and cov.last_at == T0 + timedelta(seconds=5010)


def send_run(client, machine_id: str, start, clips: int, seed: int, **params) -> list[dict]:
    """``clips`` consecutive 1 s clips from ``start`` (one run); returns the upload bodies."""
    bodies = []
    for i in range(clips):
        at = (start + timedelta(seconds=i)).isoformat()
        resp = upload(client, machine_id, wav(1.0, seed=seed + i), started_at=at, **params)
        assert resp.status_code == 201, resp.text
        bodies.append(resp.json())
    return bodies


def test_enrollment_waits_for_enough_runs_and_reports_coverage(make_client):
    client = make_client(min_enrollment_runs=3, run_gap_seconds=60.0)
    create_machine(client, "press-01")
    bodies = send_run(client, "press-01", T0, clips=8, seed=100)
    assert bodies[-1]["machine_state"] == "enrolling"  # 8 s of audio, but one run
    machine = client.get("/v1/machines/press-01").json()
    assert machine["enrollment_runs"] == 3
    assert machine["coverage"]["runs"] == 1 and machine["coverage"]["seconds"] == 8.0

    send_run(client, "press-01", T0 + timedelta(hours=2), clips=3, seed=200)
    last = send_run(client, "press-01", T0 + timedelta(hours=5), clips=3, seed=300)
    assert last[-1]["machine_state"] == "monitoring"
    machine = client.get("/v1/machines/press-01").json()
    # The third run's first clip completed enrollment: 8 + 3 + 1 recordings of material.
    assert machine["coverage"]["runs"] == 3 and machine["coverage"]["recordings"] == 12
    baseline = client.get("/v1/machines/press-01/baselines").json()[0]
    method = baseline["threshold_method"]
    assert method["runs"] == 3 and method["groups"] == 3 and method["groups_are"] == "runs"
    assert method["rule"] == "run_effects_t"  # 3 runs < 1 / 0.01


def test_client_runs_count_even_when_uploads_are_back_to_back(make_client):
    client = make_client(min_enrollment_runs=3)
    create_machine(client, "press-01")
    for run, start in (("mon", 0), ("tue", 3), ("wed", 6)):
        bodies = send_run(client, "press-01", T0 + timedelta(seconds=start), 3, 10 * start, run=run)
    assert bodies[-1]["machine_state"] == "monitoring"


def test_per_machine_enrollment_settings_override_the_service_defaults(make_client):
    client = make_client(min_enrollment_runs=5)
    create_machine(client, "press-01", enrollment_runs=2, enrollment_seconds=4.0)
    send_run(client, "press-01", T0, clips=3, seed=1)
    last = send_run(client, "press-01", T0 + timedelta(hours=1), clips=2, seed=9)
    assert last[-1]["machine_state"] == "monitoring"


def test_learning_admits_a_normal_run_as_a_new_version_and_refuses_a_faulty_one(make_client):
    client = make_client(min_enrollment_runs=3, run_gap_seconds=60.0, learning_days=1.0)
    create_machine(client, "press-01")
    for r in range(3):
        send_run(client, "press-01", T0 + timedelta(hours=r), clips=3, seed=100 * r)
    machine = client.get("/v1/machines/press-01").json()
    assert machine["active_baseline_version"] == 1
    assert machine["learning_until"] is not None

    # A healthy run, then the next run starts: the first is admitted (v2).
    send_run(client, "press-01", T0 + timedelta(hours=4), clips=3, seed=400)
    send_run(client, "press-01", T0 + timedelta(hours=6), clips=1, seed=500)
    versions = {b["version"]: b for b in client.get("/v1/machines/press-01/baselines").json()}
    assert sorted(versions) == [1, 2]
    assert versions[2]["source_filter"]["source"] == "learning" and versions[2]["active"]
    assert versions[2]["n_recordings"] == versions[1]["n_recordings"] + 3
    assert client.get("/v1/machines/press-01").json()["active_baseline_version"] == 2

    # A faulty run (above the threshold): when the next run starts it is not admitted.
    faulty = []
    for i in range(3):
        at = (T0 + timedelta(hours=8, seconds=i)).isoformat()
        resp = upload(client, "press-01", wav(1.0, seed=800 + i, fault=True), started_at=at)
        assert resp.status_code == 201
        faulty.append(resp.json())
    assert all(w["is_outlier"] for b in faulty for w in b["windows"])
    # (the faulty run's start ended the one-clip healthy run of hour 6: admitted as v3)
    assert client.get("/v1/machines/press-01").json()["active_baseline_version"] == 3
    send_run(client, "press-01", T0 + timedelta(hours=10), clips=1, seed=900)
    assert client.get("/v1/machines/press-01").json()["active_baseline_version"] == 3
    db = client.app.state.runtime.db
    with db.session() as session:
        learned_ids = {
            r.id for r in session.query(Recording).filter(Recording.learned.is_(True)).all()
        }
        faulty_ids = {b["recording"]["id"] for b in faulty}
        assert learned_ids and not (learned_ids & faulty_ids)
        assert session.query(Baseline).count() == 3


def test_no_learning_after_the_period_ends(make_client):
    client = make_client(min_enrollment_runs=2, run_gap_seconds=60.0, learning_days=0.01)
    create_machine(client, "press-01")
    for r in range(2):
        send_run(client, "press-01", T0 + timedelta(hours=r), clips=3, seed=100 * r)
    # The period (about 14 minutes of audio time after enrollment) is over: no new version.
    send_run(client, "press-01", T0 + timedelta(hours=3), clips=3, seed=300)
    send_run(client, "press-01", T0 + timedelta(hours=5), clips=1, seed=400)
    assert client.get("/v1/machines/press-01").json()["active_baseline_version"] == 1


def test_the_service_learns_by_the_rule_the_simulated_evaluation_measures():
    # detectors.learning mirrors this module for the simulated protocol and the fleet
    # simulation (docs/evaluation.md, "Learning: admission rules and developing faults").
    from detectors import learning as mirror
    from service.services import learning

    assert learning.MAX_OUTLIER_FRACTION == mirror.MAX_OUTLIER_FRACTION
    assert learning.ENROLLMENT_VERSION == mirror.ENROLLMENT_VERSION
    assert mirror.DEFAULT_RULE == mirror.AdmissionRule("share", 1.0)
