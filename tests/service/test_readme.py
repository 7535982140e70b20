"""The README stays true: its curl walkthrough runs against a live service, and its settings
table lists every setting with its default."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from tests.service.conftest import ADMIN_TOKEN, API_KEY, free_port, fresh_database

README = Path(__file__).resolve().parents[2] / "README.md"


def block(name: str) -> str:
    text = README.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    assert begin in text and end in text, f"README lacks the {name} markers"
    return text[text.index(begin) + len(begin) : text.index(end)]


@pytest.fixture
def live_service(tmp_path):
    """``humwatch serve`` as a user starts it, with keys on, on a fresh database."""
    with fresh_database(tmp_path, create=False) as url:
        port = free_port()
        bin_dir = Path(sys.executable).parent
        env = {
            **os.environ,
            "HUMWATCH_DATABASE_URL": url,
            "HUMWATCH_API_KEYS": API_KEY,
            "HUMWATCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "HUMWATCH_WARM_UP_INDEX": "false",
        }
        if not url.startswith("sqlite"):
            subprocess.run([bin_dir / "humwatch", "db", "upgrade"], env=env, check=True)
        log = (tmp_path / "serve.log").open("w")
        proc = subprocess.Popen(
            [bin_dir / "humwatch", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_readme_walkthrough_runs_verbatim(live_service, tmp_path):
    fenced = re.search(r"```sh\n(.*?)```", block("walkthrough"), re.S)
    assert fenced, "the walkthrough block holds no sh code"
    script = "set -euo pipefail\n" + fenced.group(1)
    env = {
        **os.environ,
        "HUMWATCH": live_service,
        "HUMWATCH_API_KEY": API_KEY,
        "HUMWATCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    (tmp_path / "walkthrough").mkdir()
    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"walkthrough failed:\n{run.stdout}\n{run.stderr}"

    # What the walkthrough says happens did happen.
    key = {"Authorization": f"Bearer {API_KEY}"}
    machine = httpx.get(f"{live_service}/v1/machines/pump-07", headers=key).json()
    assert machine["state"] == "monitoring"
    baselines = httpx.get(f"{live_service}/v1/machines/pump-07/baselines", headers=key).json()
    versions = (
        {b["version"]: b for b in baselines["items"]}
        if isinstance(baselines, dict)
        else {b["version"]: b for b in baselines}
    )
    assert set(versions) == {1, 2, 3}
    assert versions[3]["active"] and not versions[1]["active"] and not versions[2]["active"]
    # The closed event's windows (labelled normal) joined version 3, with step 5's window.
    events = httpx.get(
        f"{live_service}/v1/events", params={"machine": "pump-07"}, headers=key
    ).json()
    (event,) = events["items"]
    assert event["state"] == "closed" and event["close"]["disposition"] == "false_alarm"
    assert event["acknowledgement"]["by"] == "ann"
    # 10 s of a bearing fault at 1.6-1.8x the threshold: a warning, short of the alarm's 2x.
    assert [s["severity"] for s in event["severity_history"]] == ["warning"]
    assert versions[3]["source_filter"]["labelled_normal"] >= event["n_windows"]
    assert machine["health"] == "ok" and machine["open_event"] is None
    faulty = [
        json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"recording"')
    ]
    assert faulty, "the faulty upload's response was not printed"
    ratios = [w["ratio"] for w in faulty[-1]["windows"]]
    print(f"faulty pump ratios: {[round(r, 2) for r in ratios]}")
    assert min(ratios) > 1
    assert (tmp_path / "walkthrough" / "flagged-window.wav").stat().st_size > 1000


def test_readme_lists_every_setting_with_its_default():
    rows = re.findall(r"^\| `HUMWATCH_(\w+)` \| ([^|]+) \|", block("settings"), re.M)
    documented = {name.lower(): default.strip() for name, default in rows}
    assert set(documented) == set(Settings.model_fields), "README settings table is out of date"
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None or field.default_factory is not None:
            continue
        shown = documented[name].strip("`")
        if isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(shown) == float(default), name
        else:
            assert shown == str(default), name
