"""The CLI's API commands (machines, enroll, score), its local ones (simulate, bench) and
their error paths, through typer's test runner against a real app on the test database."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select
from typer.testing import CliRunner

from service.cli import api_client, app, local_runner
from service.models import Recording
from tests.service.audio import hum, wav
from tests.service.conftest import API_KEY, ENROLL_CLIPS, WINDOWS_PER_CLIP, enroll, free_port

runner = CliRunner()
FAST = ["--window-seconds", "0.25", "--hop-seconds", "0.125"]
TIME_ROW = re.compile(r"^\s*\S*\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", re.MULTILINE)


def run(*args: str, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if ok:
        assert result.exit_code == 0, result.output
    return result


def error_line(*args: str) -> str:
    """Run a command that must fail; its one error line."""
    result = run(*args, ok=False)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def use_app(make_client, monkeypatch):
    """Point the API commands at an app on the test database: ``use_app(**settings)``."""

    def factory(**settings):
        client = make_client(**settings)
        monkeypatch.setattr(api_client, "HTTP_FACTORY", lambda url: client)
        return client

    return factory


@pytest.fixture
def client(use_app):
    return use_app()


def write_clips(folder: Path, n: int, seed: int = 100, **kwargs) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip-{i:02d}.wav"
        path.write_bytes(wav(1.0, seed=seed + i, **kwargs))
        paths.append(path)
    return paths


# -- machines ----------------------------------------------------------------------------------


def test_machines_add_list_show(client):
    out = run(
        "machines", "add", "press-01", "--name", "Press 1", "--site", "Plant A", "--area",
        "Hall 2", "--type", "press", "--label", "line=2", "--label", "vendor=Acme", *FAST,
    ).output  # fmt: skip
    assert "registered press-01 (Press 1): enrolling, 0.25 s windows every 0.125 s" in out
    assert "humwatch enroll --machine press-01" in out
    run("machines", "add", "fan-01", "--site", "Plant B", "--channel", "0", *FAST)

    listed = run("machines", "list").output
    assert "press-01" in listed and "fan-01" in listed and "enrolling" in listed
    only_a = json.loads(run("machines", "list", "--site", "Plant A", "--json").output)
    assert [m["id"] for m in only_a] == ["press-01"]
    assert only_a[0]["labels"] == {"line": "2", "vendor": "Acme"}
    assert "no machines match" in run("machines", "list", "--state", "monitoring").output

    shown = run("machines", "show", "press-01").output
    for text in ("Press 1", "Plant A", "Hall 2", "press", "line=2, vendor=Acme", "no baselines"):
        assert text in shown
    doc = json.loads(run("machines", "show", "fan-01", "--json").output)
    assert doc["channel"] == 0 and doc["baselines"] == []

    line = error_line("machines", "add", "press-01")
    assert "already taken" in line and "HTTP 409" in line
    assert "validation_error" in error_line("machines", "add", "Bad Id!")
    assert "not KEY=VALUE" in error_line("machines", "add", "x-1", "--label", "oops")
    assert "HTTP 422" in error_line("machines", "list", "--state", "sleeping")


# -- enroll and score --------------------------------------------------------------------------


def test_enroll_folder_until_monitoring(client, tmp_path):
    folder = tmp_path / "normal"
    write_clips(folder / "day1", 3)
    write_clips(folder / "day2", 3, seed=103)
    (folder / "notes.txt").write_text("not audio")
    (folder / "._clip-00.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    run("machines", "add", "fan-01", *FAST)

    out = run("enroll", "--machine", "fan-01", folder).output
    windows = ENROLL_CLIPS * WINDOWS_PER_CLIP
    assert f"stored {ENROLL_CLIPS} recordings ({windows} windows)" in out
    assert "fan-01 is monitoring with baseline v1" in out

    # The files were written within milliseconds: laid back to back, none overlapping,
    # the newest ending at its modification time.
    with client.app.state.runtime.db.session() as session:
        recs = session.scalars(select(Recording).order_by(Recording.started_at)).all()
        spans = [(r.started_at, r.ended_at) for r in recs]
    assert len(spans) == ENROLL_CLIPS
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))

    again = run("enroll", "-m", "fan-01", folder).output  # idempotent re-run
    assert "stored 0 recordings (0 windows); 6 already stored" in again

    shown = run("machines", "show", "fan-01").output
    assert "monitoring" in shown and re.search(r"v1\W+yes", shown)


def test_enroll_partial_and_other_start_modes(client, tmp_path):
    run("machines", "add", "fan-01", *FAST)
    good = write_clips(tmp_path, 2)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    result = run(
        "enroll", "-m", "fan-01", *good, bad, "--started-at", "2025-01-06T08:00:00Z", ok=False
    )
    assert result.exit_code == 1
    assert "stored 2 recordings" in result.output
    assert f"skipped {bad}" in result.output
    assert "fan-01 is still enrolling: 2.0 s of normal audio" in result.output
    assert f"error: 1 of 3 files were not stored (first: {bad}:" in result.output

    items = client.get("/v1/machines/fan-01/windows", params={"limit": 500}).json()["items"]
    starts = sorted(datetime.fromisoformat(w["start_at"]) for w in items)
    assert len(starts) == 2 * WINDOWS_PER_CLIP
    assert starts[0] == datetime(2025, 1, 6, 8, 0, tzinfo=UTC)  # the second file follows on
    assert starts[WINDOWS_PER_CLIP] == datetime(2025, 1, 6, 8, 0, 1, tzinfo=UTC)

    # 'now': the service dates each upload; every run stores anew.
    out = run("enroll", "-m", "fan-01", good[0], "--started-at", "now", "--condition", "rpm=1480")
    assert "stored 1 recording (7 windows)" in out.output
    with client.app.state.runtime.db.session() as session:
        conditions = [r.conditions for r in session.scalars(select(Recording))]
    assert {"rpm": 1480} in conditions


def test_enroll_in_batches_stores_what_one_file_at_a_time_stores(client, tmp_path):
    run("machines", "add", "fan-01", *FAST)
    run("machines", "add", "fan-02", *FAST)
    files = write_clips(tmp_path / "normal", ENROLL_CLIPS)
    bad = tmp_path / "normal" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    start = ["--started-at", "2025-01-06T08:00:00Z"]
    one = run("enroll", "-m", "fan-01", *files, bad, *start, ok=False).output
    many = run("enroll", "-m", "fan-02", *files, bad, *start, "--batch", "4", ok=False).output
    for out, machine in ((one, "fan-01"), (many, "fan-02")):
        assert f"stored {ENROLL_CLIPS} recordings" in out
        assert f"skipped {bad}" in out and "1 of 7 files were not stored" in out
        assert f"{machine} is monitoring with baseline v1" in out

    def windows(machine: str) -> list[tuple]:
        items = client.get(f"/v1/machines/{machine}/windows", params={"limit": 500}).json()
        return sorted((w["start_at"], w["end_at"], w["score"]) for w in items["items"])

    assert windows("fan-01") == windows("fan-02")
    again = run("enroll", "-m", "fan-02", *files, *start, "--batch", "4").output
    assert f"stored 0 recordings (0 windows); {ENROLL_CLIPS} already stored" in again
    assert "not 'now'" in error_line(
        "enroll", "-m", "fan-02", *files, "--batch", "4", "--started-at", "now"
    )
    assert "does not exist" in error_line("enroll", "-m", "nope", *files, "--batch", "2")


def test_score_prints_windows(client, tmp_path):
    enroll(client, "fan-01")
    faulty = tmp_path / "faulty.wav"
    faulty.write_bytes(wav(1.0, seed=51, fault=True))
    out = run("score", "--machine", "fan-01", faulty).output
    rows = TIME_ROW.findall(out)
    assert len(rows) == WINDOWS_PER_CLIP, out
    assert out.count("OUTLIER") == WINDOWS_PER_CLIP
    assert f"faulty.wav: {WINDOWS_PER_CLIP} windows, {WINDOWS_PER_CLIP} outliers" in out
    assert "(baseline v1)" in out

    again = run("score", "-m", "fan-01", faulty, "--json").output  # same file, same start
    doc = json.loads(again)
    assert doc["created"] is False and len(doc["windows"]) == WINDOWS_PER_CLIP
    assert all(w["ratio"] > 1 for w in doc["windows"])

    normal = tmp_path / "normal.flac"
    sf.write(normal, hum(1.0, seed=50), 16000, format="FLAC")  # FLAC: audio/flac
    out = run("score", "-m", "fan-01", normal, "--outliers-only").output
    assert len(TIME_ROW.findall(out)) == out.count("OUTLIER") < WINDOWS_PER_CLIP / 2
    assert "normal.flac: 7 windows" in out


def test_score_refuses_enrolling_machine_and_folders(client, tmp_path):
    run("machines", "add", "fan-01", *FAST)
    (clip,) = write_clips(tmp_path / "clips", 1)
    line = error_line("score", "-m", "fan-01", clip)
    assert "fan-01 is still enrolling (0.0 s" in line and "humwatch enroll" in line
    assert "score takes one file" in error_line("score", "-m", "fan-01", tmp_path / "clips")


def test_simulate_then_enroll_and_score(client, tmp_path):
    """The README walkthrough: simulated audio in, windows with scores out."""
    out = run("simulate", tmp_path / "normal" / "pump.wav", "--seconds", "1", "--count", "6")
    assert "6 x 1 s of a pump, healthy" in out.output
    files = sorted((tmp_path / "normal").glob("pump-*.wav"))
    assert [f.name for f in files] == [f"pump-{i:03d}.wav" for i in range(1, 7)]
    one = sf.read(files[0])[0]
    assert sf.info(files[0]).samplerate == 16000 and one.shape == (16000,)
    assert 0.01 < np.sqrt(np.mean(one**2)) < 0.2  # audible, not clipped
    # Consecutive pieces of one run, not six copies of the same second.
    assert not np.allclose(one, sf.read(files[1])[0])

    faulty = tmp_path / "bearing.wav"
    run(
        "simulate", faulty, "--seconds", "1", "--fault", "bearing", "--severity", "1", "--seed", "9"
    )
    same = tmp_path / "again.wav"
    run("simulate", same, "--seconds", "1", "--fault", "bearing", "--severity", "1", "--seed", "9")
    assert faulty.read_bytes() == same.read_bytes()  # deterministic by seed

    run("machines", "add", "pump-01", "--type", "pump", *FAST)
    assert "pump-01 is monitoring" in run("enroll", "-m", "pump-01", tmp_path / "normal").output
    doc = json.loads(run("score", "-m", "pump-01", faulty, "--json").output)
    assert len(doc["windows"]) == WINDOWS_PER_CLIP and all(w["score"] for w in doc["windows"])


def test_simulate_errors(tmp_path):
    assert "unknown machine kind 'boat'" in error_line(
        "simulate", tmp_path / "a.wav", "--kind", "boat"
    )
    assert "unknown fault type 'rust'" in error_line(
        "simulate", tmp_path / "a.wav", "--fault", "rust"
    )
    assert "severity must be in [0, 1]" in error_line(
        "simulate", tmp_path / "a.wav", "--fault", "bearing", "--severity", "2"
    )
    assert "name the output .wav, .flac or .ogg" in error_line("simulate", tmp_path / "a.mp3")
    assert "--seconds must be positive" in error_line(
        "simulate", tmp_path / "a.wav", "--seconds", "0"
    )
    assert not list(tmp_path.iterdir())


# -- error paths -------------------------------------------------------------------------------


def test_unreachable_service(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    line = error_line("machines", "list", "--url", url)
    assert line == (
        f"error: cannot reach humwatch at {url}: is `humwatch serve` running? "
        "(set --url or HUMWATCH_URL)"
    )
    monkeypatch.setenv("HUMWATCH_URL", url)
    (clip,) = write_clips(tmp_path, 1)
    assert f"cannot reach humwatch at {url}" in error_line("enroll", "-m", "fan-01", clip)
    line = error_line("machines", "list", "--url", "127.0.0.1:8000")
    assert "'127.0.0.1:8000' is not a valid URL (it needs http:// or https://)" in line


def test_unknown_machine(client, tmp_path):
    hint = "register it with `humwatch machines add nope` or see `humwatch machines list`"
    line = error_line("machines", "show", "nope")
    assert line == f"error: machine 'nope' does not exist (not_found, HTTP 404); {hint}"
    (clip,) = write_clips(tmp_path, 1)
    assert hint in error_line("enroll", "-m", "nope", clip)
    assert hint in error_line("score", "-m", "nope", clip)


def test_api_key_errors(use_app, monkeypatch, tmp_path):
    use_app(api_keys=[API_KEY])
    line = error_line("machines", "list")  # with keys configured, reads need one too
    assert "needs an API key" in line and "HTTP 401" in line and "set HUMWATCH_API_KEY" in line
    line = error_line("machines", "add", "fan-01")
    assert "needs an API key" in line and "HTTP 401" in line and "set HUMWATCH_API_KEY" in line

    monkeypatch.setenv("HUMWATCH_API_KEY", "wrong-key-0123456789")
    line = error_line("machines", "add", "fan-01")
    assert "the API key is not valid (forbidden, HTTP 403)" in line
    assert "HUMWATCH_API_KEY holds a key the service does not accept" in line

    monkeypatch.setenv("HUMWATCH_API_KEY", API_KEY)
    run("machines", "add", "fan-01", *FAST)
    (clip,) = write_clips(tmp_path, 1)
    monkeypatch.delenv("HUMWATCH_API_KEY")
    assert "HTTP 401" in error_line("enroll", "-m", "fan-01", clip)


def test_missing_and_bad_files(client, tmp_path):
    run("machines", "add", "fan-01", *FAST)
    missing = tmp_path / "nope.wav"
    assert error_line("enroll", "-m", "fan-01", missing) == (
        f"error: {missing}: no such file or folder"
    )
    assert "no such file" in error_line("score", "-m", "fan-01", missing)
    (tmp_path / "empty").mkdir()
    assert "no .wav, .flac or .ogg files" in error_line(
        "enroll", "-m", "fan-01", tmp_path / "empty"
    )
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a .wav, .flac or .ogg file" in error_line("enroll", "-m", "fan-01", text)
    (clip,) = write_clips(tmp_path / "ok", 1)
    assert "not 'auto', 'now' or an ISO time" in error_line(
        "enroll", "-m", "fan-01", clip, "--started-at", "yesterday"
    )
    assert "use --started-at" in error_line(
        "enroll", "-m", "fan-01", clip, "--condition", "started_at=x"
    )

    # Audio the service cannot use: its error, as one line.
    enroll(client, "pump-01")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(os.urandom(2000))
    line = error_line("score", "-m", "pump-01", garbage)
    assert "HTTP 422" in line, line
    short = tmp_path / "short.wav"
    short.write_bytes(wav(0.1, seed=1))
    line = error_line("score", "-m", "pump-01", short)
    assert "shorter than one window" in line and "(audio_too_short, HTTP 422)" in line


# -- bench -------------------------------------------------------------------------------------

TINY_BENCH = """
import json, sys
print("warming up", file=sys.stderr, flush=True)
{extra}
print(json.dumps({{"benchmark": "{name}", "argv": sys.argv[1:], "python": sys.executable}}))
"""


@pytest.fixture
def benchmarks(monkeypatch, tmp_path):
    """A benchmarks/ folder of tiny scripts: 'tiny' knows --quick, 'plain' does not, 'broken'
    fails."""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    scripts = {
        "tiny": "import argparse\nargparse.ArgumentParser().add_argument('--quick')",
        "plain": "",
        "broken": "print('cannot connect to Postgres', file=sys.stderr); sys.exit(3)",
    }
    for name, extra in scripts.items():
        code = TINY_BENCH.format(name=name, extra=extra)
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.setattr(local_runner, "BENCHMARKS_DIR", folder)
    monkeypatch.setattr(
        local_runner,
        "BENCHMARKS",
        {
            "tiny": local_runner.Benchmark("tiny.py", ("--should-not-be-used",)),
            "plain": local_runner.Benchmark("plain.py", ("--sizes", "10")),
            "broken": local_runner.Benchmark("broken.py"),
            "absent": local_runner.Benchmark("absent.py"),
        },
    )
    monkeypatch.setattr(local_runner, "DEFAULT_BENCHMARKS", ("tiny", "absent"))
    return folder


def test_bench_runs_scripts_and_prints_their_json(benchmarks, tmp_path):
    doc = json.loads(run("bench", "--which", "tiny", "--quick").stdout)
    assert doc == {"benchmark": "tiny", "argv": ["--quick"], "python": sys.executable}
    doc = json.loads(run("bench", "--which", "plain", "--quick").stdout)
    assert doc["argv"] == ["--sizes", "10"]  # no --quick of its own: the registry's
    doc = json.loads(run("bench", "--which", "plain", "--", "--sizes", "3").stdout)
    assert doc["argv"] == ["--sizes", "3"]

    # Default set (scripts that are missing are left out); several: one object by name.
    assert json.loads(run("bench").stdout)["benchmark"] == "tiny"
    out_dir = tmp_path / "out"
    both = json.loads(run("bench", "--which", "tiny", "--which", "plain", "--out", out_dir).stdout)
    assert set(both) == {"tiny", "plain"} and both["plain"]["argv"] == []
    assert json.loads((out_dir / "plain.json").read_text())["benchmark"] == "plain"


def test_bench_errors(benchmarks):
    line = error_line("bench", "--which", "broken")
    assert "benchmark broken failed (exit 3): cannot connect to Postgres" in line
    assert "python benchmarks/broken.py" in line
    assert "unknown benchmark nope" in error_line("bench", "--which", "nope")
    assert "has no script" in error_line("bench", "--which", "absent")
    assert "need exactly one --which" in error_line("bench", "--which", "all", "--", "-x")


def test_bench_registry_covers_the_benchmark_scripts():
    scripts = {
        p.name
        for p in local_runner.BENCHMARKS_DIR.glob("*.py")
        if not p.name.startswith("_") and '__name__ == "__main__"' in p.read_text()
    }
    known = {b.script for b in local_runner.BENCHMARKS.values()}
    assert scripts <= known, f"add {sorted(scripts - known)} to local_runner.BENCHMARKS"


def test_help_says_where_each_command_runs():
    where = ("Talks to the API", "Talk to the API", "Runs locally", "database directly")
    for command in (
        ["machines"], ["machines", "add"], ["machines", "list"], ["machines", "show"],
        ["enroll"], ["score"], ["simulate"], ["bench"], ["db", "upgrade"], ["evaluate", "clips"],
        ["evaluate", "events"],
    ):  # fmt: skip
        text = " ".join(run(*command, "--help").output.split())
        assert any(w in text for w in where), (command, text)


def test_bench_help_names_every_benchmark():
    text = " ".join(run("bench", "--help").output.split())
    missing = [name for name in local_runner.BENCHMARKS if name not in text]
    assert not missing, f"humwatch bench --help does not name {missing}"
