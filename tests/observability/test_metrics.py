"""``service/metrics.py`` through the app: what ingest, the registry and HTTP traffic feed into
``GET /metrics``, the restart seeding, and the pure helpers.

The metrics live in the process-global registry, so each test uses its own machine ids and
compares service-wide counters before and after.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from service import __version__, metrics
from tests.observability.metrics_helpers import scrape, series, total, value
from tests.service.audio import hum, to_bytes, wav
from tests.service.conftest import ENROLL_CLIPS, T0, at, create_machine, enroll, upload

INGEST = "/v1/machines/{machine_id}/recordings"


def test_metrics_endpoint(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = scrape(client)
    assert value(samples, "humwatch_build_info", version=__version__) == 1
    assert value(samples, "humwatch_database_up") == 1
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_docstring_lists_every_metric(client):
    from prometheus_client.parser import text_string_to_metric_families

    exposed = set()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name.startswith("humwatch_"):
            exposed.add(family.name + ("_total" if family.type == "counter" else ""))
    documented = set(re.findall(r"\bhumwatch_[a-z_]+[a-z]", metrics.__doc__))
    assert documented == exposed


def test_ingest_feeds_the_machine_metrics(client):
    m = "obs-ingest"
    before = scrape(client)
    started = time.time()
    enroll(client, m)
    after_enroll = scrape(client)
    assert value(after_enroll, "humwatch_recordings_ingested_total", machine=m) == ENROLL_CLIPS
    assert value(after_enroll, "humwatch_audio_ingested_seconds_total", machine=m) == ENROLL_CLIPS
    assert value(after_enroll, "humwatch_windows_ingested_total", machine=m) == 7 * ENROLL_CLIPS
    assert value(after_enroll, "humwatch_windows_scored_total", machine=m) == 0
    assert value(after_enroll, "humwatch_machine_score_ratio", machine=m) is None
    last_end = T0 + timedelta(seconds=ENROLL_CLIPS)
    assert value(
        after_enroll, "humwatch_machine_last_window_timestamp_seconds", machine=m
    ) == pytest.approx(last_end.timestamp())
    # Enrollment completed: the registry facts follow at once.
    baseline = client.get(f"/v1/machines/{m}/baselines").json()[0]
    assert value(after_enroll, "humwatch_machine_state", machine=m, state="monitoring") == 1
    assert value(after_enroll, "humwatch_machine_state", machine=m, state="enrolling") == 0
    assert value(after_enroll, "humwatch_machine_baseline_version", machine=m) == 1
    assert value(after_enroll, "humwatch_machine_baseline_vectors", machine=m) == 42
    assert value(after_enroll, "humwatch_machine_baseline_threshold", machine=m) == pytest.approx(
        baseline["threshold"]
    )
    created = value(after_enroll, "humwatch_machine_baseline_created_timestamp_seconds", machine=m)
    assert started - 1 <= created <= time.time() + 1

    normal = upload(client, m, wav(1.0, seed=50), started_at=at(10)).json()["windows"]
    faulty = upload(client, m, wav(1.0, seed=51, fault=True), started_at=at(11)).json()["windows"]
    after = scrape(client)
    scored = normal + faulty
    ratios = [w["ratio"] for w in scored]
    assert value(after, "humwatch_windows_scored_total", machine=m) == len(scored)
    assert value(after, "humwatch_outlier_windows_total", machine=m) == sum(
        w["is_outlier"] for w in scored
    )
    assert value(after, "humwatch_outlier_windows_total", machine=m) >= len(faulty)
    assert value(after, "humwatch_window_score_ratio_count", machine=m) == len(scored)
    assert value(after, "humwatch_window_score_ratio_sum", machine=m) == pytest.approx(sum(ratios))
    assert value(after, "humwatch_window_score_ratio_bucket", machine=m, le="1.0") == sum(
        r <= 1 for r in ratios
    )
    assert value(after, "humwatch_machine_score_ratio", machine=m) == pytest.approx(
        faulty[-1]["ratio"]
    )
    assert value(after, "humwatch_machine_score", machine=m) == pytest.approx(faulty[-1]["score"])
    assert value(
        after, "humwatch_machine_last_window_timestamp_seconds", machine=m
    ) == pytest.approx(datetime.fromisoformat(faulty[-1]["end_at"]).timestamp())
    # Service-wide: one embedding per upload, one scoring per scored upload, a lag each.
    uploads = ENROLL_CLIPS + 2
    for name, expected in [
        ("humwatch_embedding_duration_seconds_count", uploads),
        ("humwatch_scoring_duration_seconds_count", 2),
        ("humwatch_ingest_lag_seconds_count", uploads),
        # The two monitoring uploads, each alone in its write transaction (the enrollment
        # uploads keep transactions of their own: the last one builds the baseline).
        ("humwatch_ingest_group_uploads_count", 2),
        ("humwatch_ingest_group_uploads_sum", 2),
    ]:
        assert total(after, name) - total(before, name) == expected, name
    assert series(after, "humwatch_embedding_duration_seconds_count") == [{"embedder": "logmel"}]
    ok = dict(method="POST", route=INGEST, status="201")
    assert (
        total(after, "humwatch_http_request_duration_seconds_count", **ok)
        - total(before, "humwatch_http_request_duration_seconds_count", **ok)
        == uploads
    )


def test_machine_facts_follow_the_database(client):
    m = "obs-facts"
    create_machine(client, m, site="north", area="hall-1", machine_type="fan")
    samples = scrape(client)
    info = series(samples, "humwatch_machine_info", machine=m)
    assert info == [{"machine": m, "site": "north", "area": "hall-1", "machine_type": "fan"}]
    assert value(samples, "humwatch_machine_state", machine=m, state="enrolling") == 1
    assert value(samples, "humwatch_machine_baseline_version", machine=m) == 0
    assert value(samples, "humwatch_machine_baseline_vectors", machine=m) is None

    # A new site replaces the old label set; it never lingers.
    assert client.patch(f"/v1/machines/{m}", json={"site": "south"}).status_code == 200
    info = series(scrape(client), "humwatch_machine_info", machine=m)
    assert [i["site"] for i in info] == ["south"]

    for i in range(ENROLL_CLIPS):
        upload(client, m, wav(1.0, seed=200 + i), started_at=at(i))
    assert client.patch(f"/v1/machines/{m}", json={"state": "paused"}).status_code == 200
    samples = scrape(client)
    assert value(samples, "humwatch_machine_state", machine=m, state="paused") == 1
    assert value(samples, "humwatch_machine_state", machine=m, state="monitoring") == 0
    assert value(samples, "humwatch_machine_baseline_version", machine=m) == 1

    # Archived machines leave the facts (and so every dashboard and alert that joins them).
    assert client.delete(f"/v1/machines/{m}").status_code == 200
    samples = scrape(client)
    assert series(samples, "humwatch_machine_info", machine=m) == []
    assert series(samples, "humwatch_machine_state", machine=m) == []


def test_microphone_health(client):
    m = "obs-mic"
    create_machine(client, m)
    sr = 16000
    silent = np.zeros(sr, dtype=np.float32)
    t = np.arange(sr) / sr
    clipped = np.sign(np.sin(2 * np.pi * 100 * t)).astype(np.float32)  # square at full scale
    assert upload(client, m, to_bytes(hum(1.0, seed=1)), started_at=at(0)).status_code == 201
    samples = scrape(client)
    assert value(samples, "humwatch_silent_windows_total", machine=m) == 0
    assert value(samples, "humwatch_clipped_windows_total", machine=m) == 0
    level = value(samples, "humwatch_machine_audio_rms_ratio", machine=m)
    assert level == pytest.approx(float(np.sqrt(np.mean(hum(1.0, seed=1) ** 2))), rel=0.01)

    assert upload(client, m, to_bytes(silent), started_at=at(1)).status_code == 201
    samples = scrape(client)
    assert value(samples, "humwatch_silent_windows_total", machine=m) == 7
    assert value(samples, "humwatch_machine_audio_rms_ratio", machine=m) == 0
    assert value(samples, "humwatch_machine_audio_peak_ratio", machine=m) == 0

    assert upload(client, m, to_bytes(clipped), started_at=at(2)).status_code == 201
    samples = scrape(client)
    assert value(samples, "humwatch_silent_windows_total", machine=m) == 7
    assert value(samples, "humwatch_clipped_windows_total", machine=m) == 7
    assert value(samples, "humwatch_machine_audio_peak_ratio", machine=m) > 0.99
    assert value(samples, "humwatch_windows_ingested_total", machine=m) == 21


def test_ingest_rejections_by_reason(client):
    m = "obs-reject"
    create_machine(client, m)
    before = scrape(client)
    assert upload(client, m, b"RIFF not really audio").status_code == 422
    assert upload(client, m, wav(1.0), content_type="text/plain").status_code == 415
    assert upload(client, "obs-nobody", wav(1.0)).status_code == 404
    assert client.get("/v1/machines/obs-nobody").status_code == 404  # not an upload
    after = scrape(client)

    def delta(reason: str) -> float:
        name = "humwatch_ingest_rejections_total"
        return total(after, name, reason=reason) - total(before, name, reason=reason)

    assert delta("unsupported_format") == 1
    assert delta("unsupported_media_type") == 1
    assert delta("not_found") == 1
    assert (
        total(after, "humwatch_ingest_rejections_total")
        - total(before, "humwatch_ingest_rejections_total")
        == 3
    )


def test_http_durations_are_labelled_by_route_template(client):
    client.get("/v1/machines/obs-unknown-4242")
    client.get("/no/such/path/obs-unknown-4242")
    client.request("BREW", "/healthz")
    samples = scrape(client)
    name = "humwatch_http_request_duration_seconds_count"
    assert total(samples, name, method="GET", route="/v1/machines/{machine_id}", status="404")
    assert total(samples, name, method="GET", route="unmatched", status="404")
    assert total(samples, name, method="other", route="/healthz", status="405")
    # Never a concrete id in a label.
    assert not any("obs-unknown-4242" in v for (_, labels) in samples for _, v in labels)


def test_restart_seeds_the_gauges_from_the_database(make_client):
    m = "obs-restart"
    first = make_client()
    enroll(first, m)
    faulty = upload(first, m, wav(1.0, seed=9, fault=True), started_at=at(30)).json()["windows"]
    expected = {
        name: value(scrape(first), name, machine=m)
        for name in (
            "humwatch_machine_score",
            "humwatch_machine_score_ratio",
            "humwatch_machine_last_window_timestamp_seconds",
        )
    }
    assert expected["humwatch_machine_score_ratio"] == pytest.approx(faulty[-1]["ratio"])
    # A new process starts with none of this machine's series...
    for metric in (*metrics._MACHINE_METRICS, metrics.MACHINE_SCORE, metrics.MACHINE_SCORE_RATIO):
        metric.remove(m)
    metrics.LAST_WINDOW_TIMESTAMP.remove(m)
    metrics._last_window.pop(m)
    assert series(scrape(first), "humwatch_machine_score_ratio", machine=m) == []

    # ...and its start seeds them from the database: nothing blanks on a dashboard.
    second = make_client()
    samples = scrape(second)
    for name, v in expected.items():
        assert value(samples, name, machine=m) == pytest.approx(v), name
    for name in (
        "humwatch_windows_scored_total",
        "humwatch_outlier_windows_total",
        "humwatch_windows_ingested_total",
        "humwatch_silent_windows_total",
        "humwatch_clipped_windows_total",
        "humwatch_audio_ingested_seconds_total",
        "humwatch_recordings_ingested_total",
        "humwatch_window_score_ratio_count",
    ):
        assert value(samples, name, machine=m) == 0, name  # present from the start, at 0
    assert value(samples, "humwatch_machine_baseline_vectors", machine=m) == 42


def test_seeding_survives_an_unreadable_database(tmp_path):
    from service.db import Database

    db = Database(f"sqlite:///{tmp_path / 'no-tables.db'}")
    try:
        assert metrics.initialise_from_database(db) == 0  # logged, not raised
        text = metrics.render(db).decode()
        assert "humwatch_database_up 0.0" in text
    finally:
        db.dispose()


def test_window_health():
    sr = 1000
    quiet = np.zeros(sr)
    tone = 0.1 * np.sin(2 * np.pi * 50 * np.arange(sr) / sr)
    clipped = np.clip(4 * np.sin(2 * np.pi * 50 * np.arange(sr) / sr), -1, 1)
    x = np.concatenate([quiet, tone, clipped]).astype(np.float32)
    starts = np.arange(0, 2 * sr + 1, sr // 2)  # 0, 0.5, 1, 1.5, 2 s
    silent, clipped_windows = metrics.window_health(x, starts, sr)
    assert silent == 1  # only the first window is all silence
    assert clipped_windows == 2  # the windows starting at 1.5 s and 2 s
    assert metrics.window_health(x, [], sr) == (0, 0)
    # A quiet but live microphone (-50 dBFS) is not silent.
    assert (
        metrics.window_health(10 ** (-50 / 20) * np.sqrt(2) * np.sin(np.arange(sr)), [0], sr)[0]
        == 0
    )


def test_route_template():
    nested = SimpleNamespace(path_format="/machines/{machine_id}/recordings")
    scope = {
        "route": nested,
        "path": "/v1/machines/fan-7/recordings",
        "path_params": {"machine_id": "fan-7"},
    }
    assert metrics.route_template(scope) == "/v1/machines/{machine_id}/recordings"
    flat = SimpleNamespace(path_format="/v1/windows/{window_id}")
    scope = {"route": flat, "path": "/v1/windows/12", "path_params": {"window_id": 12}}
    assert metrics.route_template(scope) == "/v1/windows/{window_id}"
    assert metrics.route_template({"path": "/nope"}) == "unmatched"


def test_ratio_buckets_are_dense_around_one():
    buckets = metrics.RATIO_BUCKETS
    assert 1.0 in buckets  # the alert's median > 1 is exact at this boundary
    near = [b for b in buckets if 0.75 <= b <= 1.5]
    assert len(near) >= 6


def test_accounting_never_fails_a_stored_upload(caplog):
    broken = [object()]  # no score, no end_at
    metrics.observe_recording(
        "obs-broken",
        broken,
        audio_seconds=1,
        waveform=np.zeros(10),
        start_samples=[0],
        window_samples=10,
    )
    assert "could not account the recording of obs-broken" in caplog.text


def test_recordings_accounted_together_count_as_one_at_a_time():
    """``observe_recordings`` (the batched ingest's) leaves every series of the machine where
    ``observe_recording`` once per recording leaves it (the lag histogram aside: wall clock)."""
    from prometheus_client import REGISTRY

    rng = np.random.default_rng(7)
    recordings = []
    for r in range(3):
        end = T0 + timedelta(seconds=10 * (r + 1))
        windows = [
            SimpleNamespace(
                score=None if r == 0 else float(s),
                ratio=None if r == 0 else float(s) / 2,
                is_outlier=bool(s > 2),
                end_at=end - timedelta(seconds=5 - i),
            )
            for i, s in enumerate(rng.uniform(0, 4, 6))
        ]
        waveform = (0.1 * (r + 1) * rng.standard_normal(16000)).astype(np.float32)
        flags = SimpleNamespace(silent=np.array([r == 1] * 6), clipped=np.zeros(6, bool))
        recordings.append((windows, 10.0, waveform, list(range(0, 12000, 2000)), 4000, end, flags))
    for windows, seconds, waveform, starts, size, end, flags in recordings:
        metrics.observe_recording(
            "obs-one",
            windows,
            audio_seconds=seconds,
            waveform=waveform,
            start_samples=starts,
            window_samples=size,
            ended_at=end,
            flags=flags,
        )
    metrics.observe_recordings("obs-all", recordings)

    def samples(machine: str) -> dict:
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "machine"))): s.value
            for family in REGISTRY.collect()
            for s in family.samples
            if s.labels.get("machine") == machine
        }

    one, together = samples("obs-one"), samples("obs-all")
    assert one and together == one


def test_audio_levels_are_the_gauges_of_the_waveform():
    """``audio_levels`` (computed at ingest, so the waveform need not be held until the
    commit) gives the RMS and peak the gauges had from the waveform, bit for bit."""
    rng = np.random.default_rng(3)
    cases = [
        (0.3 * rng.standard_normal(16000)).astype(np.float32),
        -np.abs(rng.standard_normal(500)).astype(np.float32),  # all negative: peak from min
        np.abs(rng.standard_normal(500)),  # float64, all positive
        np.array([-0.0, 0.0, -0.0], np.float32),
        np.array([0.5, np.nan, -0.9], np.float32),
    ]
    for x in cases:
        rms, peak = metrics.audio_levels(x)
        want_rms = float(np.linalg.norm(x)) / math.sqrt(x.size)
        want_peak = float(np.max(np.abs(x)))
        assert (rms, peak) == (want_rms, want_peak) or (math.isnan(rms) and math.isnan(peak))
        assert str(peak) == str(want_peak)  # 0.0, not -0.0
    assert metrics.audio_levels(np.zeros(0, np.float32)) is None


def test_levels_stand_for_the_waveform():
    from prometheus_client import REGISTRY

    x = (0.2 * np.random.default_rng(5).standard_normal(8000)).astype(np.float32)
    flags = SimpleNamespace(silent=np.zeros(2, bool), clipped=np.zeros(2, bool))
    common = {"audio_seconds": 0.5, "start_samples": [0, 4000], "window_samples": 4000}
    metrics.observe_recording("obs-wave", [], waveform=x, flags=flags, **common)
    metrics.observe_recording(
        "obs-levels", [], waveform=None, flags=flags, levels=metrics.audio_levels(x), **common
    )

    def gauges(machine: str) -> dict:
        return {
            s.name: s.value
            for family in REGISTRY.collect()
            for s in family.samples
            if s.labels.get("machine") == machine and s.name.startswith("humwatch_machine_audio_")
        }

    assert len(gauges("obs-wave")) == 2 and gauges("obs-wave") == gauges("obs-levels")
