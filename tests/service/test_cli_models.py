"""`humwatch models fetch/list`, offline: a locally built wheel stands in for PyPI's."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from detectors.embedders.aisfx import AisfxEmbedder
from service import model_store
from service.cli import app
from service.config import get_settings
from tests.detectors.aisfx_weights import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory):
    """A wheel laid out as aisfx 0.1.2's, holding random weights: (path, wheel sha, member sha)."""
    root = tmp_path_factory.mktemp("wheel")
    checkpoint = save_checkpoint(root / "checkpoint.pth")
    wheel = root / model_store.SOURCES["aisfx"].wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(checkpoint, "aisfx/models/checkpoint.pth")
        archive.writestr("aisfx/__init__.py", "")
        archive.writestr("aisfx-0.1.2.dist-info/licenses/LICENSE", "Attribution 4.0 International")
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    return wheel, sha(wheel), sha(checkpoint)


@pytest.fixture
def settings_dir(monkeypatch, tmp_path):
    """HUMWATCH_MODELS_DIR pointing at an empty folder."""
    monkeypatch.setenv("HUMWATCH_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    yield tmp_path / "models"
    get_settings.cache_clear()


def test_a_wheel_with_another_checksum_is_refused(fake_wheel, settings_dir):
    wheel, _, _ = fake_wheel
    result = runner.invoke(app, ["models", "fetch", "aisfx", "--wheel", str(wheel)])
    assert result.exit_code == 1
    assert (
        "refusing" in result.output and model_store.SOURCES["aisfx"].wheel_sha256 in result.output
    )
    assert not (settings_dir / "aisfx").exists()


def test_fetch_extracts_the_checkpoint_and_the_embedder_loads_it(
    fake_wheel, settings_dir, monkeypatch
):
    wheel, wheel_sha, member_sha = fake_wheel
    pinned = replace(model_store.SOURCES["aisfx"], wheel_sha256=wheel_sha, member_sha256=member_sha)
    monkeypatch.setitem(model_store.SOURCES, "aisfx", pinned)

    result = runner.invoke(app, ["models", "fetch", "aisfx", "--wheel", str(wheel)])
    assert result.exit_code == 0, result.output
    assert "aisfx: fetched" in result.output and "CC-BY-4.0" in result.output
    target = settings_dir / "aisfx"
    assert sorted(p.name for p in target.iterdir()) == [
        "LICENSE",
        "checkpoint.pth",
        "manifest.json",
    ]
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source"] == "pypi:aisfx==0.1.2"
    assert manifest["sha256"] == member_sha and manifest["wheel_sha256"] == wheel_sha
    assert manifest["license"].startswith("CC-BY-4.0")

    emb = AisfxEmbedder(model_dir=str(target), device="cpu")
    assert emb.spec["checkpoint_sha256"] == member_sha
    assert emb.embed(np.zeros((1, 44100), dtype=np.float32)).shape == (1, 512)

    # Present with the pinned checksum: nothing is downloaded (there is no --wheel here).
    again = runner.invoke(app, ["models", "fetch", "aisfx"])
    assert again.exit_code == 0 and "already present" in again.output
    listing = runner.invoke(app, ["models", "list"])
    assert listing.exit_code == 0 and "present (" in listing.output


def test_a_member_with_another_checksum_is_refused(fake_wheel, tmp_path, monkeypatch):
    wheel, wheel_sha, _ = fake_wheel
    pinned = replace(model_store.SOURCES["aisfx"], wheel_sha256=wheel_sha)  # real member sha
    monkeypatch.setitem(model_store.SOURCES, "aisfx", pinned)
    result = runner.invoke(
        app, ["models", "fetch", "aisfx", "--wheel", str(wheel), "--dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and "not the pinned one" in result.output
    assert not (tmp_path / "aisfx").exists()


def test_unknown_model_and_missing_wheel(tmp_path):
    result = runner.invoke(app, ["models", "fetch", "bert", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown model 'bert'" in result.output
    result = runner.invoke(
        app,
        ["models", "fetch", "aisfx", "--dir", str(tmp_path), "--wheel", str(tmp_path / "no.whl")],
    )
    assert result.exit_code == 1 and "does not exist" in result.output


def test_list_says_how_to_fetch(settings_dir):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert str(settings_dir) in result.output
    assert "not fetched (humwatch models fetch aisfx)" in result.output
