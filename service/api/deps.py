"""Shared endpoint dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs plain function dependencies in its threadpool, one hop per request.
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MachineId = Annotated[str, Path(min_length=1, max_length=64, description="machine slug")]
WindowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
