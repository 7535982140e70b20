"""The ``humwatch`` command line.

Commands that talk to the database or run locally say so in their help; others call the API.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
