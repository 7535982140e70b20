"""HTTP endpoints (thin: parse, authorise, call a service, shape the response)."""

from fastapi import APIRouter

from service.api import baselines, health, machines, recordings, windows

v1 = APIRouter(prefix="/v1")
v1.include_router(machines.router)
v1.include_router(recordings.router)
v1.include_router(windows.router)
v1.include_router(baselines.router)
v1.include_router(baselines.admin_router)

__all__ = ["health", "v1"]
