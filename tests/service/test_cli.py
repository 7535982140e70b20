"""`humwatch serve`, `humwatch db upgrade` and the options of `humwatch evaluate simulated`."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from service import migrate
from service.cli import app
from service.config import get_settings
from service.db import make_engine
from tests.service.conftest import API_KEY, backend, fresh_database

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Point the CLI at an empty test database; uvicorn.run records instead of serving."""
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    with fresh_database(tmp_path, create=False) as url:
        monkeypatch.setenv("HUMWATCH_DATABASE_URL", url)
        get_settings.cache_clear()
        yield url, calls
    get_settings.cache_clear()


def _tables(url):
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_upgrade(env):
    url, _ = env
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "machines" in _tables(url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0  # idempotent


def test_serve_refuses_public_bind_without_keys(env):
    _, calls = env
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve on 0.0.0.0" in result.output and calls == []


def test_serve_refuses_bad_settings(env, monkeypatch):
    monkeypatch.setenv("HUMWATCH_API_KEYS", "short")
    get_settings.cache_clear()
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1 and "HUMWATCH_API_KEYS" in result.output


def test_serve_public_with_keys(env, monkeypatch):
    url, calls = env
    monkeypatch.setenv("HUMWATCH_API_KEYS", API_KEY)
    monkeypatch.setenv("HUMWATCH_ADMIN_TOKEN", API_KEY + "-admin")
    get_settings.cache_clear()
    migrate.upgrade(url)
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9123"])
    assert result.exit_code == 0, result.output
    assert calls[0][1]["host"] == "0.0.0.0" and calls[0][1]["port"] == 9123


@pytest.mark.skipif(backend() != "sqlite", reason="auto-migration is for the embedded SQLite")
def test_serve_migrates_sqlite_and_warns_about_loopback(env):
    url, calls = env
    result = runner.invoke(app, ["serve", "--port", "9124"])
    assert result.exit_code == 0, result.output
    assert "loopback" in result.output
    assert "machines" in _tables(url)
    assert calls[0][1] == {"host": "127.0.0.1", "port": 9124, "log_level": "info"}


@pytest.mark.skipif(backend() != "postgresql", reason="Postgres is migrated explicitly")
def test_serve_asks_for_db_upgrade_on_postgres(env):
    url, calls = env
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1 and "humwatch db upgrade" in result.output and calls == []
    migrate.upgrade(url)
    assert runner.invoke(app, ["serve"]).exit_code == 0 and len(calls) == 1


def test_evaluate_simulated_refuses_an_unknown_learning_rule_or_fault():
    bad_rule = runner.invoke(app, ["evaluate", "simulated", "--learning-rule", "mean@2"])
    assert bad_rule.exit_code == 1 and "admission statistic" in bad_rule.output
    bad_fault = runner.invoke(app, ["evaluate", "simulated", "--learning-fault", "rust"])
    assert bad_fault.exit_code == 1 and "unknown fault type" in bad_fault.output
