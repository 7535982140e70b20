"""Service test fixtures: a fresh database per test (SQLite file, or a fresh Postgres schema
when HUMWATCH_TEST_DATABASE_URL is set), and a TestClient on an app using it."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from service.app import create_app
from service.config import Settings
from service.db import Database
from service.models import Base
from tests.service.audio import wav

PG_URL = os.environ.get("HUMWATCH_TEST_DATABASE_URL")
API_KEY = "test-api-key-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"

# Short windows keep the suite fast; enrollment completes after 6 s of audio (six 1 s
# clips of 7 windows: fewer recordings make the standardised kNN threshold too tight).
FAST_SETTINGS = {
    "min_enrollment_seconds": 6.0,
    # The six clips are consecutive (one run): service tests of runs and learning set these.
    "min_enrollment_runs": 1,
    "learning_days": 0.0,
    "warm_up_index": False,
    "prune_interval_seconds": 0,
    "event_sweep_interval_seconds": 0,
}
FAST_MACHINE = {"window_seconds": 0.25, "hop_seconds": 0.125}
ENROLL_CLIPS = 6
WINDOWS_PER_CLIP = 7  # 1 s clips
ENROLL_WINDOWS = ENROLL_CLIPS * WINDOWS_PER_CLIP


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend() -> str:
    return "postgresql" if PG_URL else "sqlite"


@contextlib.contextmanager
def fresh_database(tmp_dir: Path, *, create: bool = True) -> Iterator[str]:
    """A URL to an empty database: a new Postgres schema (dropped after) or a SQLite file."""
    if PG_URL is None:
        url = f"sqlite:///{tmp_dir / 'humwatch.db'}"
        if create:
            engine = create_engine(url)
            Base.metadata.create_all(engine)
            engine.dispose()
        yield url
        return
    schema = f"hw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        make_url(PG_URL)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        if create:
            engine = create_engine(url)
            Base.metadata.create_all(engine)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _no_humwatch_environment(monkeypatch):
    """Tests set their own settings: ignore HUMWATCH_* from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("HUMWATCH_") and name != "HUMWATCH_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory) -> Iterator[str]:
    """One database shared by a module's tests (for expensive read-mostly setups)."""
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def module_make_client(module_db_url: str) -> Iterator[Callable[..., TestClient]]:
    stack = contextlib.ExitStack()

    def factory(**overrides) -> TestClient:
        app = create_app(make_settings(module_db_url, **overrides))
        return stack.enter_context(TestClient(app))

    with stack:
        yield factory


@pytest.fixture
def private_postgres():
    """A Postgres cluster of this test's own, schema created, that the test may stop and
    start (``tests.service.live.PrivatePostgres``)."""
    from tests.service.live import PrivatePostgres

    pg = PrivatePostgres()
    try:
        engine = create_engine(pg.url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield pg
    finally:
        pg.destroy()


def make_settings(url: str, **overrides) -> Settings:
    return Settings(database_url=url, **{**FAST_SETTINGS, **overrides})


@pytest.fixture
def make_client(db_url: str) -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(**settings)`` -> a started TestClient on the test database."""
    stack = contextlib.ExitStack()

    def factory(**overrides) -> TestClient:
        app = create_app(make_settings(db_url, **overrides))
        return stack.enter_context(TestClient(app))

    with stack:
        yield factory


@pytest.fixture
def client(make_client) -> TestClient:
    """A client on an app with authentication off (no keys configured)."""
    return make_client()


def table_counts(client: TestClient) -> dict[str, int]:
    """Rows per table of the client's database."""
    db: Database = client.app.state.runtime.db
    with db.session() as session:
        return {
            t.name: session.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def create_machine(client: TestClient, machine_id: str = "press-01", **fields) -> dict:
    body = {"id": machine_id, **FAST_MACHINE, **fields}
    resp = client.post("/v1/machines", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def upload(client: TestClient, machine_id: str, data: bytes, content_type="audio/wav", **params):
    return client.post(
        f"/v1/machines/{machine_id}/recordings",
        content=data,
        headers={"Content-Type": content_type},
        params=params,
    )


T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """ISO time ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat()


def enroll(
    client: TestClient, machine_id: str = "press-01", clips: int = ENROLL_CLIPS, **fields
) -> dict:
    """Create a machine and send ``clips`` normal 1 s clips; returns the last upload's body."""
    create_machine(client, machine_id, **fields)
    body = None
    for i in range(clips):
        resp = upload(client, machine_id, wav(1.0, seed=100 + i), started_at=at(i))
        assert resp.status_code == 201, resp.text
        body = resp.json()
    return body


# Figures tests want in the terminal summary (e.g. the end-to-end AUC), printed at the end.
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY_LINES:
        terminalreporter.section("humwatch service figures")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
