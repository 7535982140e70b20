"""The service app plus one route that fails unexpectedly (for tests/service/test_outages.py,
served by uvicorn: ``uvicorn --factory tests.service.crashing_app:make_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from service.app import create_app


def make_app() -> FastAPI:
    app = create_app()

    @app.get("/crash", include_in_schema=False)
    def crash() -> None:
        raise RuntimeError("deliberate failure")

    return app
