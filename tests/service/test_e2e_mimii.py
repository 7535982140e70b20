"""End to end on real recordings: MIMII fan id_00 (8 microphones, 16 kHz, 10 s clips).

Enroll a machine with the service's default detection settings on the first 10 normal clips
(by file name), then send the other 10 normal and all 20 abnormal clips. A clip's score is
the mean window ratio (score / threshold), the default preset's clip aggregation.

AUC floor: docs/evaluation.md reports clip AUC 0.72 for this group with the default preset
(5-fold, pooled). This fixed split is deterministic and currently scores 0.87; with 10
normals and 20 anomalies the AUC of one split moves by about 0.09 (Hanley-McNeil standard
error) and by more between splits, so the floor of 0.70 sits at the evaluated level minus a
small margin: a preset change that keeps the evaluated quality passes, a broken pipeline
(AUC near 0.5) fails.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.service.conftest import SUMMARY_LINES, T0, backend, upload

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "machine-audio"
FAN = DATA / "mimii" / "fan" / "id_00" / "unsplit"
AUC_FLOOR = 0.70
ENROLL = 10

pytestmark = pytest.mark.skipif(not FAN.is_dir(), reason=f"{FAN} is not available")


def _clips(label: str) -> list[Path]:
    return sorted((FAN / label).glob("*.wav"))


@pytest.fixture(scope="module")
def plant(module_make_client):
    """The client after enrollment and scoring: (client, normal bodies, abnormal bodies)."""
    # Each MIMII clip is a recording of its own (another day, another run): an hour apart.
    client = module_make_client(
        min_enrollment_seconds=ENROLL * 10.0, min_enrollment_runs=4, learning_days=0.0
    )
    assert client.post("/v1/machines", json={"id": "fan-00", "site": "mimii"}).status_code == 201
    normals, abnormals = _clips("normal"), _clips("abnormal")
    assert len(normals) == 20 and len(abnormals) == 20
    t = T0

    def send(path: Path) -> dict:
        nonlocal t
        resp = upload(client, "fan-00", path.read_bytes(), started_at=t.isoformat())
        assert resp.status_code == 201, resp.text
        t += timedelta(hours=1)
        return resp.json()

    enrolled = [send(p) for p in normals[:ENROLL]]
    assert enrolled[-2]["machine_state"] == "enrolling"
    assert enrolled[-1]["machine_state"] == "monitoring"
    held_back = [send(p) for p in normals[ENROLL:]]
    abnormal = [send(p) for p in abnormals]
    return client, held_back, abnormal


def _clip_ratio(body: dict) -> float:
    return float(np.mean([w["ratio"] for w in body["windows"]]))


def test_abnormal_clips_score_higher(plant, record_property):
    _, held_back, abnormal = plant
    ratios = [_clip_ratio(b) for b in held_back + abnormal]
    labels = [0] * len(held_back) + [1] * len(abnormal)
    auc = roc_auc_score(labels, ratios)
    normal_outliers = np.mean([w["is_outlier"] for b in held_back for w in b["windows"]])
    abnormal_outliers = np.mean([w["is_outlier"] for b in abnormal for w in b["windows"]])
    line = (
        f"MIMII fan id_00 through the service ({backend()}): clip AUC {auc:.3f} "
        f"(floor {AUC_FLOOR}); outlier windows: normal {normal_outliers:.1%}, "
        f"abnormal {abnormal_outliers:.1%}; mean clip ratio normal "
        f"{np.mean(ratios[: len(held_back)]):.3f}, abnormal {np.mean(ratios[len(held_back) :]):.3f}"
    )
    print(line)
    SUMMARY_LINES.append(line)
    record_property("mimii_fan_id_00_clip_auc", round(auc, 4))
    assert auc >= AUC_FLOOR
    # The 1% false-alarm target holds roughly on held-back normal windows.
    assert normal_outliers <= 0.1


def test_feedback_rebuild_and_rollback(plant):
    client, held_back, abnormal = plant
    (v1,) = client.get("/v1/machines/fan-00/baselines").json()
    assert v1["active"] and v1["n_recordings"] == ENROLL

    # An engineer confirms the most suspicious held-back normal window is fine, and marks the
    # worst abnormal window as an anomaly.
    windows = [w for b in held_back for w in b["windows"]]
    confirmed = max(windows, key=lambda w: w["ratio"])
    resp = client.post(f"/v1/windows/{confirmed['id']}/feedback", json={"label": "normal"})
    assert resp.status_code == 200
    worst = max((w for b in abnormal for w in b["windows"]), key=lambda w: w["ratio"])
    client.post(f"/v1/windows/{worst['id']}/feedback", json={"label": "anomaly", "note": "fault"})

    # Rebuild from the normal period only (enrollment + held-back normals).
    end_of_normals = held_back[-1]["recording"]["ended_at"]
    resp = client.post(
        "/v1/admin/machines/fan-00/baselines", json={"to": end_of_normals, "note": "week 1"}
    )
    assert resp.status_code == 201, resp.text
    v2 = resp.json()
    assert v2["version"] == 2 and v2["active"]
    assert v2["n_recordings"] == 20 and v2["source_filter"]["labelled_normal"] == 1
    assert v2["n_vectors"] == v1["n_vectors"] + sum(not w["is_outlier"] for w in windows) + (
        1 if confirmed["is_outlier"] else 0
    )
    assert v2["threshold"] != v1["threshold"]
    assert client.get("/v1/machines/fan-00").json()["active_baseline_version"] == 2

    probe = _clips("abnormal")[0].read_bytes()
    on_v2 = upload(client, "fan-00", probe, started_at=(T0 - timedelta(days=1)).isoformat())
    assert on_v2.json()["baseline_version"] == 2

    # Roll back: v1's threshold is in force again, and scores match the first pass exactly.
    resp = client.post("/v1/admin/machines/fan-00/baselines/1/activate")
    assert resp.status_code == 200 and resp.json()["threshold"] == v1["threshold"]
    listing = client.get("/v1/machines/fan-00/baselines").json()
    assert [(b["version"], b["active"]) for b in listing] == [(1, True), (2, False)]
    on_v1 = upload(client, "fan-00", probe, started_at=(T0 - timedelta(days=2)).isoformat())
    assert on_v1.json()["baseline_version"] == 1
    assert [w["ratio"] for w in on_v1.json()["windows"]] == pytest.approx(
        [w["ratio"] for w in abnormal[0]["windows"]], rel=1e-5
    )
