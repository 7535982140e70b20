"""``humwatch db upgrade`` and ``humwatch serve`` (talk to the database directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import app, fail, load_settings

# -- service and database (run locally) ---------------------------------------------------

db_app = typer.Typer(help="Database schema commands. Talk to the database directly.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="target Alembic revision")] = "head",
) -> None:
    """Apply pending migrations to HUMWATCH_DATABASE_URL. Talks to the database directly."""
    from sqlalchemy.exc import SQLAlchemyError

    from service import migrate

    settings = load_settings()
    try:
        migrate.upgrade(settings.database_url, revision)
    except SQLAlchemyError as exc:
        fail(f"cannot migrate {_safe_url(settings.database_url)}: {exc.__class__.__name__}: {exc}")
    typer.echo(f"database {_safe_url(settings.database_url)} is at revision {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def prepare_to_serve(settings, host: str) -> None:
    """Refuse unsafe binds, point numba at a persistent cache, migrate SQLite (Postgres must
    already be at the latest schema)."""
    import os

    from service.config import UnsafeSettingsError

    try:
        warning = settings.check_bind(host)
    except UnsafeSettingsError as exc:
        fail(str(exc))
    if warning:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "humwatch" / "numba"))
    prepare_database(settings)


def prepare_database(settings) -> None:
    """Migrate the embedded SQLite database; refuse a Postgres one behind the latest schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from service import migrate
    from service.db import make_engine

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
    settings = load_settings()
    host = host or settings.host
    port = port or settings.port
    prepare_to_serve(settings, host)

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
