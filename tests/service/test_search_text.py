"""Text search through CLAP's text tower, on a tiny random-weight CLAP saved locally."""

from __future__ import annotations

import numpy as np
import pytest

from tests.detectors.test_hf_embedder import _build_clap, offline  # noqa: F401
from tests.detectors.test_hf_text import save_tiny_tokenizer
from tests.service.audio import wav
from tests.service.conftest import enroll

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models directory (HUMWATCH_MODELS_DIR) holding a tiny CLAP with its tokenizer."""
    root = tmp_path_factory.mktemp("models")
    _build_clap(root / "tiny-clap")
    save_tiny_tokenizer(root / "tiny-clap")
    return root


def test_text_search_ranks_the_clap_machines_windows_by_cosine(make_client, models_dir):
    client = make_client(models_dir=str(models_dir))
    spec = {"name": "hf", "model": "tiny-clap", "device": "cpu"}
    enroll(client, "clap-01", embedder=spec, window_seconds=0.5, hop_seconds=0.25)
    enroll(client, "logmel-01")
    caps = client.get("/v1/search/capabilities").json()
    assert caps["text_search"] is True and caps["text_reason"] == ""
    assert {e["embedder"]["name"]: e["text_search"] for e in caps["embedders"]} == {
        "hf": True,
        "logmel": False,
    }
    resp = client.post("/v1/search", json={"text": "a squealing belt", "limit": 10})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["machines"] == ["clap-01"] and body["metric"] == "cosine"
    assert {h["machine_id"] for h in body["items"]} == {"clap-01"}
    # Brute force: cosine distance of the text vector to every stored window.
    runtime = client.app.state.runtime
    machine = client.get("/v1/machines/clap-01").json()
    embedder = runtime.embedders.get(machine["embedder"])
    text = embedder.embed_text(["a squealing belt"])[0]
    from sqlalchemy import select

    from service.models import Window

    with runtime.db.session() as session:
        rows = session.execute(
            select(Window.id, Window.embedding).where(Window.machine_id == "clap-01")
        ).all()
    vectors = np.stack([np.frombuffer(r.embedding, "<f4") for r in rows])
    cos = 1 - vectors @ text / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(text))
    expected = [rows[i].id for i in np.argsort(cos, kind="stable")[:10]]
    assert [h["window_id"] for h in body["items"]] == expected
    assert [h["distance"] for h in body["items"]] == pytest.approx(np.sort(cos)[:10], abs=1e-4)


def test_text_search_says_why_not_for_log_mel_machines(client):
    enroll(client, "logmel-01")
    resp = client.post("/v1/search", json={"text": "a squealing belt"})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "full CLAP model" in detail and "logmel" in detail
    caps = client.get("/v1/search/capabilities").json()
    assert caps["text_search"] is False and "no text counterpart" in caps["text_reason"]
    upload = client.post(
        "/v1/search", content=wav(1.0, seed=1), headers={"Content-Type": "audio/wav"}
    )
    assert upload.status_code == 200
