"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import RuntimeDep
from service.errors import error_body
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"description": "not ready"}})
def readyz(runtime: RuntimeDep):
    """The database answers and the default embedder is loaded."""
    checks = {}
    try:
        with runtime.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["embedder"] = "ok" if runtime.embedder_ready.is_set() else "loading"
    checks["index"] = "ok" if runtime.index_warm.is_set() else "warming"
    if checks["database"] != "ok" or checks["embedder"] != "ok":
        detail = ", ".join(f"{k}: {v}" for k, v in checks.items())
        return JSONResponse(error_body("not_ready", detail), status_code=503)
    return Health(status="ready", checks=checks)
