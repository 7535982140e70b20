"""The ``humwatch`` command line.

Commands that talk to the database or run locally say so in their help; others call the API.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="humwatch",
    help="humwatch: listens to machines and flags the moments they sound wrong.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """humwatch: listens to machines and flags the moments they sound wrong."""


def fail(message: str, code: int = 1) -> None:
    """Print one readable error line and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@app.command()
def evaluate(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="manifest CSV (path,dataset,machine_type,section,split,label,...) "
            "or a DCASE-style directory"
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option(
            help="folder the manifest paths are relative to (default: the manifest's folder)"
        ),
    ] = None,
    preset: Annotated[
        list[str] | None,
        typer.Option(help="preset(s) to evaluate: default, reference (repeat to compare)"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results as JSON here")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="folder for ROC / score-histogram PNGs per group")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="write the table as Markdown here (docs/evaluation.md)")
    ] = None,
    folds: Annotated[int, typer.Option(help="k-fold splits over each group's normals")] = 5,
) -> None:
    """Evaluate detection quality (AUC, pAUC) on labelled clips. Runs locally, no service needed."""
    from service.evaluate_command import run_evaluation

    try:
        run_evaluation(manifest, root, preset or ["default"], json_out, plots, markdown, folds)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


# -- service and database (run locally) ---------------------------------------------------

db_app = typer.Typer(help="Database schema commands. Talk to the database directly.")
app.add_typer(db_app, name="db")


def _settings():
    from pydantic import ValidationError

    from service.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HUMWATCH_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"bad settings: {problems}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="target Alembic revision")] = "head",
) -> None:
    """Apply pending migrations to HUMWATCH_DATABASE_URL. Talks to the database directly."""
    from sqlalchemy.exc import SQLAlchemyError

    from service import migrate

    settings = _settings()
    try:
        migrate.upgrade(settings.database_url, revision)
    except SQLAlchemyError as exc:
        fail(f"cannot migrate {_safe_url(settings.database_url)}: {exc.__class__.__name__}: {exc}")
    typer.echo(f"database {_safe_url(settings.database_url)} is at revision {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _prepare_to_serve(settings, host: str) -> None:
    """Refuse unsafe binds, point numba at a persistent cache, migrate SQLite (Postgres must
    already be at the latest schema)."""
    import os

    from sqlalchemy.exc import SQLAlchemyError

    from service import migrate
    from service.config import UnsafeSettingsError
    from service.db import make_engine

    try:
        warning = settings.check_bind(host)
    except UnsafeSettingsError as exc:
        fail(str(exc))
    if warning:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "humwatch" / "numba"))
    url = settings.database_url
    try:
        if settings.is_sqlite:
            migrate.upgrade(url)
        else:
            engine = make_engine(url)
            try:
                behind = migrate.pending(engine)
            finally:
                engine.dispose()
            if behind:
                fail(
                    f"database {_safe_url(url)} is not at the latest schema; "
                    "run `humwatch db upgrade` first"
                )
    except SQLAlchemyError as exc:
        fail(f"cannot reach the database {_safe_url(url)}: {exc.__class__.__name__}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to bind (default HUMWATCH_HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default HUMWATCH_PORT, 8000)")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="worker processes; with more than one, /metrics aggregates them through "
            "PROMETHEUS_MULTIPROC_DIR (emptied at start; a temporary folder when unset)",
        ),
    ] = 1,
) -> None:
    """Run the API (uvicorn). Applies pending migrations to the embedded SQLite database;
    a Postgres database must be upgraded first with `humwatch db upgrade`."""
    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    _prepare_to_serve(settings, host)

    import uvicorn

    from service.multiproc import multiprocess_directory

    typer.echo(f"humwatch serving on http://{host}:{port} (API docs at /docs)")
    # The metrics directory must be ready before the app (and prometheus_client) is imported.
    with multiprocess_directory(required=workers > 1):
        if workers > 1:
            # The workers are fresh interpreters that read the settings from the environment.
            uvicorn.run(
                "service.app:create_app",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level="info",
            )
            return
        from service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def demo(
    url: Annotated[
        str | None,
        typer.Option(help="feed a service already running there instead of starting one"),
    ] = None,
    port: Annotated[int, typer.Option(help="port of the service the demo starts")] = 8000,
    recordings: Annotated[
        Path | None,
        typer.Option(
            help="folder of real recordings to replay as one more machine "
            "(normal/*.wav, abnormal/*.wav); default: MIMII fan clips in ../shared"
        ),
    ] = None,
    fault_after: Annotated[
        float, typer.Option(help="seconds of monitoring before pump-01 develops a fault")
    ] = 180.0,
    fast: Annotated[
        bool, typer.Option(help="send audio as fast as it is scored (simulated time)")
    ] = False,
    steps: Annotated[int | None, typer.Option(help="stop after this many chunks")] = None,
) -> None:
    """Start the service on 127.0.0.1 (SQLite by default) and stream a simulated plant to it:
    machines enroll, then stream in real time, and one develops a fault. Talks to the API."""
    from service.demo_command import run_demo

    if url is None:
        settings = _settings()
        _prepare_to_serve(settings, "127.0.0.1")
    else:
        settings = None
    try:
        run_demo(settings, url, port, recordings, fault_after, fast, steps)
    except (ValueError, OSError, RuntimeError) as exc:
        fail(str(exc))


# -- API commands (--url / HUMWATCH_URL, key in HUMWATCH_API_KEY); see client_commands -------

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="HUMWATCH_URL",
        help="the humwatch service; writes send the key in HUMWATCH_API_KEY (Bearer)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON, not a table")]
MachineOption = Annotated[
    str, typer.Option("--machine", "-m", metavar="ID", help="the machine's id (slug)")
]
StartedAtOption = Annotated[
    str,
    typer.Option(
        "--started-at",
        help="time of each file's first sample: 'auto' (a file ends at its modification "
        "time, moved earlier so that files do not overlap; re-running stores nothing twice), "
        "'now' (the service's receive time), or an ISO time for the first file (the others "
        "follow back to back)",
    ),
]
ConditionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--condition", metavar="KEY=VALUE", help="operating condition, e.g. rpm=1480 (repeat)"
    ),
]


@contextlib.contextmanager
def _one_line_errors():
    """A ``CommandError`` (or Ctrl-C) becomes one error line and a non-zero exit."""
    from service.client_commands import CommandError

    try:
        yield
    except CommandError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


machines_app = typer.Typer(
    help="Register and inspect machines. Talk to the API (--url, HUMWATCH_API_KEY).",
    no_args_is_help=True,
)
app.add_typer(machines_app, name="machines")


@machines_app.command("add")
def machines_add(
    machine_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="slug: lowercase letters, digits, '-', '_' (1-64)"),
    ],
    name: Annotated[str | None, typer.Option(help="display name (default: the id)")] = None,
    site: Annotated[str | None, typer.Option(help="plant or site")] = None,
    area: Annotated[str | None, typer.Option(help="hall, line or area")] = None,
    machine_type: Annotated[
        str | None, typer.Option("--type", help="kind of machine, e.g. pump")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="free label (repeat)")
    ] = None,
    window_seconds: Annotated[
        float | None, typer.Option(help="window length in seconds (default: the service's)")
    ] = None,
    hop_seconds: Annotated[
        float | None, typer.Option(help="seconds between window starts (default: the service's)")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="'mix' averages the microphones; 0, 1, ... picks one")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Register a machine; it starts enrolling. Talks to the API."""
    from service import client_commands as cc

    with _one_line_errors(), cc.connect(url) as api:
        cc.machines_add(
            api,
            machine_id,
            name=name,
            site=site,
            area=area,
            machine_type=machine_type,
            labels=label,
            window_seconds=window_seconds,
            hop_seconds=hop_seconds,
            channel=channel,
            as_json=as_json,
        )


@machines_app.command("list")
def machines_list(
    site: Annotated[str | None, typer.Option(help="only machines of this site")] = None,
    state: Annotated[
        str | None, typer.Option(help="only machines in this state: enrolling, monitoring, paused")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """List the machines with their state and active baseline. Talks to the API."""
    from service import client_commands as cc

    with _one_line_errors(), cc.connect(url) as api:
        cc.machines_list(api, site, state, as_json)


@machines_app.command("show")
def machines_show(
    machine_id: Annotated[str, typer.Argument(metavar="ID", help="the machine's id")],
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """One machine's settings and state, and its baseline versions. Talks to the API."""
    from service import client_commands as cc

    with _one_line_errors(), cc.connect(url) as api:
        cc.machines_show(api, machine_id, as_json)


@app.command()
def enroll(
    machine: MachineOption,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILES_OR_FOLDERS...",
            help=".wav, .flac or .ogg files; folders are searched recursively",
        ),
    ],
    started_at: StartedAtOption = "auto",
    condition: ConditionOption = None,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Enroll a machine on normal recordings (folders walked). Talks to the API.

    Sends each file with a progress bar; the machine starts monitoring once it has enough.
    Files the service refuses are listed and skipped (exit status 1).
    """
    from service import client_commands as cc

    with _one_line_errors(), cc.connect(url) as api:
        cc.enroll(api, machine, paths, started_at, condition)


@app.command()
def score(
    machine: MachineOption,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a .wav, .flac or .ogg file")],
    started_at: StartedAtOption = "auto",
    condition: ConditionOption = None,
    outliers_only: Annotated[
        bool, typer.Option("--outliers-only", help="list only the outlier windows")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Score one recording and print its windows. Talks to the API.

    Prints each window's start, end, score, ratio (score / threshold) and whether it is an
    outlier. The machine must be monitoring; the recording is stored like any other.
    """
    from service import client_commands as cc

    with _one_line_errors(), cc.connect(url) as api:
        cc.score(api, machine, file, started_at, condition, outliers_only, as_json)


# -- local commands (no service) -----------------------------------------------------------


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(metavar="OUT.wav", help="file to write (.wav/.flac/.ogg)")],
    kind: Annotated[str, typer.Option(help="fan, pump, compressor, conveyor or gearbox")] = "pump",
    rpm: Annotated[float | None, typer.Option(help="shaft speed (default: the kind's)")] = None,
    seconds: Annotated[float, typer.Option(help="length of each file")] = 10.0,
    fault: Annotated[
        str | None,
        typer.Option(
            help="bearing, imbalance, looseness, cavitation, valve_click or belt_squeal "
            "(default: a healthy machine)"
        ),
    ] = None,
    severity: Annotated[float, typer.Option(help="fault severity, 0 to 1")] = 0.5,
    snr_db: Annotated[float, typer.Option(help="machine over factory background, in dB")] = 12.0,
    seed: Annotated[int, typer.Option(help="another seed is another run of the machine")] = 0,
    sample_rate: Annotated[int, typer.Option(help="samples per second")] = 16000,
    count: Annotated[
        int,
        typer.Option(
            help="write this many consecutive files (OUT-001.wav, ...) of one continuous run"
        ),
    ] = 1,
) -> None:
    """Write a synthetic machine recording, healthy or faulty. Runs locally.

    A machine in a factory (shaft, blades, flow, background) from detectors/simulate.py, to
    try humwatch without microphones.
    """
    from service.local_commands import simulate_recording

    with _one_line_errors():
        paths = simulate_recording(
            out, kind, rpm, seconds, fault, severity, snr_db, seed, sample_rate, count
        )
    what = f"{kind}" + (f" with a {fault} fault (severity {severity:g})" if fault else ", healthy")
    first = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1].name}"
    typer.echo(f"wrote {first}: {len(paths)} x {seconds:g} s of a {what}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    which: Annotated[
        list[str] | None,
        typer.Option(
            help="end-to-end, knn, service-ingest, embedders-gpu or all (repeat; "
            "default: end-to-end and knn, the README's table)"
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="a short smoke run of each benchmark")] = False,
    out: Annotated[
        Path | None, typer.Option(help="also write <OUT>/<name>.json per benchmark")
    ] = None,
) -> None:
    """Run the benchmark scripts and print their JSON. Runs locally.

    Runs benchmarks/*.py one after the other; arguments after -- go to the script (with one
    --which). service-ingest needs Postgres (HUMWATCH_BENCH_DATABASE_URL).
    """
    from service.local_commands import run_benchmarks

    with _one_line_errors():
        run_benchmarks(which, quick, list(ctx.args), out)


if __name__ == "__main__":
    app()
