"""Alembic: upgrade on an empty database, no drift from the models, downgrade to base."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service import migrate
from service.db import make_engine
from service.models import Base
from tests.service.conftest import fresh_database


def _diff(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)


def test_upgrade_matches_models_and_downgrades(tmp_path):
    with fresh_database(tmp_path, create=False) as url:
        engine = make_engine(url)
        try:
            assert inspect(engine).get_table_names() == []
            assert migrate.pending(engine)
            migrate.upgrade(url)
            assert not migrate.pending(engine)
            tables = set(inspect(engine).get_table_names())
            assert tables == {t.name for t in Base.metadata.sorted_tables} | {"alembic_version"}
            assert _diff(engine) == []
            migrate.downgrade(url, "base")
            assert inspect(engine).get_table_names() == ["alembic_version"]
            migrate.upgrade(url)  # and back up again
            assert _diff(engine) == []
        finally:
            engine.dispose()


def test_the_app_works_on_a_migrated_database(tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.audio import wav
    from tests.service.conftest import enroll, make_settings, upload

    with fresh_database(tmp_path, create=False) as url:
        migrate.upgrade(url)
        with TestClient(create_app(make_settings(url))) as client:
            enroll(client, "fan-01")
            resp = upload(client, "fan-01", wav(1.0, seed=9, fault=True))
            assert resp.status_code == 201 and resp.json()["windows"][0]["is_outlier"]
