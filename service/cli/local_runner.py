"""Commands of the ``humwatch`` command line that run locally, with no service:
``simulate`` (synthetic machine recordings) and ``bench`` (the scripts in ``benchmarks/``).

Failures are ``CommandError`` with a one-line message, as for the API commands.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from service.cli.api_client import CommandError, print_json, stderr_console

# -- simulate ----------------------------------------------------------------------------------

SIMULATE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}


def simulate_recording(
    out: Path,
    kind: str = "pump",
    rpm: float | None = None,
    seconds: float = 10.0,
    fault: str | None = None,
    severity: float = 0.5,
    snr_db: float | None = 12.0,
    seed: int = 0,
    sample_rate: int = 16000,
    count: int = 1,
) -> list[Path]:
    """Write ``count`` consecutive pieces of one simulated machine run; the paths written.

    One file is written to ``out``; more are ``<stem>-001<suffix>``, ``-002``, ... next to it,
    each ``seconds`` long and continuing where the previous one ended.
    """
    import soundfile as sf

    from detectors.simulate import Fault, MachineSimulator, MachineSpec, SimulationError

    fmt = SIMULATE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise CommandError(f"{out}: name the output .wav, .flac or .ogg")
    if not seconds > 0:
        raise CommandError(f"--seconds must be positive, got {seconds:g}")
    if count < 1:
        raise CommandError(f"--count must be at least 1, got {count}")
    try:
        spec = MachineSpec.preset(kind, rpm=rpm)
        sim = MachineSimulator(
            spec,
            sample_rate,
            snr_db=snr_db,
            seed=seed,
            fault=Fault(fault, severity) if fault else None,
        )
    except SimulationError as exc:
        raise CommandError(str(exc)) from exc
    if count == 1:
        paths = [out]
    else:
        paths = [out.with_name(f"{out.stem}-{i:03d}{out.suffix}") for i in range(1, count + 1)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path in paths:
            sf.write(str(path), sim.next_chunk(seconds), sample_rate, format=fmt[0], subtype=fmt[1])
    except (OSError, sf.LibsndfileError) as exc:
        raise CommandError(f"cannot write {out}: {exc}") from exc
    return paths


# -- bench -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """A script in ``benchmarks/`` and the arguments of its quick run (when it has no
    ``--quick`` option of its own)."""

    script: str
    quick_args: tuple[str, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {
    "end-to-end": Benchmark("end_to_end.py", ("--uploads", "10", "--repeats", "1")),
    "knn": Benchmark("knn.py", ("--sizes", "10000", "--queries", "500", "--no-startup")),
    "service-ingest": Benchmark("service_ingest.py", ("--clients", "1", "4", "--requests", "8")),
    "embedders-gpu": Benchmark("embedders_gpu.py", ("--quick",)),
    "stream-ingest": Benchmark("stream_ingest.py", ("--quick",)),
    "ingest-stages": Benchmark("ingest_stages.py", ("--clips", "12")),
    "search": Benchmark("search.py", ("--quick",)),
    "learning-batch": Benchmark("learning_batch.py", ("--clips", "8", "--rounds", "1")),
    "worker-cost": Benchmark("worker_cost.py", ("--rounds", "2", "--chunks", "16")),
    "group-commit": Benchmark(
        "group_commit.py", ("--clients", "1,4", "--rounds", "2", "--per-client", "2")
    ),
}
DEFAULT_BENCHMARKS = ("end-to-end", "knn")  # the README's benchmark table (`make bench`)
BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def quick_args(benchmark: Benchmark, script: Path) -> list[str]:
    """``--quick`` when the script has it, else the registry's quick arguments."""
    try:
        source = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        source = ""
    if '"--quick"' in source or "'--quick'" in source:
        return ["--quick"]
    return list(benchmark.quick_args)


def resolve_benchmarks(which: list[str] | None) -> list[tuple[str, Path]]:
    """Names (``all``: every script present) -> ``(name, script)`` to run, in order."""
    if not BENCHMARKS_DIR.is_dir():
        raise CommandError(
            f"no benchmarks folder at {BENCHMARKS_DIR}: `humwatch bench` runs from a source "
            "checkout of humwatch"
        )
    present = {n: BENCHMARKS_DIR / b.script for n, b in BENCHMARKS.items()}
    present = {n: p for n, p in present.items() if p.is_file()}
    names = list(which or DEFAULT_BENCHMARKS)
    if "all" in names:
        names = list(present)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise CommandError(
            f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)} or all"
        )
    missing = [n for n in names if n not in present]
    if missing and which:
        raise CommandError(
            f"benchmark {', '.join(missing)} has no script in {BENCHMARKS_DIR} "
            f"({', '.join(BENCHMARKS[n].script for n in missing)})"
        )
    runnable = [(n, present[n]) for n in dict.fromkeys(names) if n in present]
    if not runnable:
        raise CommandError(
            f"none of the benchmarks {', '.join(names)} has a script in {BENCHMARKS_DIR}"
        )
    return runnable


def _parse_json_output(name: str, stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        pass
    start = stdout.find("\n{")  # text before the document
    if start >= 0:
        try:
            return json.loads(stdout[start + 1 :])
        except ValueError:
            pass
    raise CommandError(f"benchmark {name} did not print a JSON document")


def run_script(name: str, script: Path, args: list[str], progress: Progress, label: str) -> Any:
    """Run one benchmark script; its JSON. Its stderr lines feed the progress display."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(BENCHMARKS_DIR.parent / ".numba-cache"))
    task = progress.add_task(label, total=None)
    tail: collections.deque[str] = collections.deque(maxlen=20)

    try:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=BENCHMARKS_DIR.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        raise CommandError(f"cannot start benchmark {name}: {exc}") from exc

    def follow_stderr() -> None:
        for line in proc.stderr:
            line = line.strip()
            if line:
                tail.append(line)
                short = line if len(line) <= 60 else line[:57] + "..."
                progress.update(task, description=f"{label}: {short}")

    reader = threading.Thread(target=follow_stderr, daemon=True)
    reader.start()
    try:
        stdout = proc.stdout.read()
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    reader.join(timeout=5)
    progress.update(task, total=1, completed=1)
    if code != 0:
        last = tail[-1] if tail else "no output"
        command = " ".join([script.relative_to(BENCHMARKS_DIR.parent).as_posix(), *args])
        raise CommandError(
            f"benchmark {name} failed (exit {code}): {last[:200]}; run `python {command}` "
            "to see its whole output"
        )
    return _parse_json_output(name, stdout)


def run_benchmarks(
    which: list[str] | None,
    quick: bool = False,
    extra_args: list[str] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the chosen benchmarks one after the other; print their JSON (one document for one
    benchmark, else an object by name) and optionally write ``<out_dir>/<name>.json``."""
    runs = resolve_benchmarks(which)
    if extra_args and len(runs) > 1:
        raise CommandError("extra benchmark arguments (after --) need exactly one --which")
    results: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    ) as progress:
        for i, (name, script) in enumerate(runs, 1):
            args = quick_args(BENCHMARKS[name], script) if quick else []
            args += list(extra_args or [])
            label = f"[{i}/{len(runs)}] {name}"
            results[name] = run_script(name, script, args, progress, label)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / f"{name}.json").write_text(json.dumps(results[name], indent=2) + "\n")
    print_json(results[runs[0][0]] if len(runs) == 1 else results)
    return results
