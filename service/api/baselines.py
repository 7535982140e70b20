"""Baseline endpoints: listing for everyone, build and activate for admins."""

from __future__ import annotations

from fastapi import APIRouter, Path, status
from fastapi.concurrency import run_in_threadpool

from service.api.deps import MachineId, RuntimeDep
from service.limits import INT32_MAX
from service.models import Baseline
from service.schemas import BaselineBuild, BaselineOut, PruneOut
from service.security import Admin
from service.services import baselines as baselines_service
from service.services import retention
from service.services.machines import get_machine

router = APIRouter(tags=["baselines"])
admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Admin])


def _out(baseline: Baseline, active_version: int | None) -> BaselineOut:
    out = BaselineOut.model_validate(baseline)
    out.active = baseline.version == active_version
    return out


@router.get("/machines/{machine_id}/baselines")
def list_baselines(machine_id: MachineId, runtime: RuntimeDep) -> list[BaselineOut]:
    """Every baseline version of a machine, oldest first, with the active one flagged."""
    with runtime.db.session() as session:
        machine = get_machine(session, machine_id)
        return [
            _out(b, machine.active_baseline_version)
            for b in baselines_service.list_baselines(session, machine)
        ]


@admin_router.post("/machines/{machine_id}/baselines", status_code=status.HTTP_201_CREATED)
async def build_baseline(
    machine_id: MachineId, runtime: RuntimeDep, body: BaselineBuild | None = None
) -> BaselineOut:
    """Build a new baseline version from normal material in a time range; activate it."""
    body = body or BaselineBuild()
    baseline, active = await run_in_threadpool(
        baselines_service.rebuild,
        runtime,
        machine_id,
        start=body.from_,
        end=body.to,
        k=body.k,
        false_alarm_rate=body.false_alarm_rate,
        activate_now=body.activate,
        note=body.note,
    )
    out = BaselineOut.model_validate(baseline)
    out.active = active
    return out


@admin_router.post("/machines/{machine_id}/baselines/{version}/activate")
async def activate_baseline(
    machine_id: MachineId, runtime: RuntimeDep, version: int = Path(ge=1, le=INT32_MAX)
) -> BaselineOut:
    """Make a version active: roll back to an older one or forward to a newer one."""
    baseline = await run_in_threadpool(
        baselines_service.activate_version, runtime, machine_id, version
    )
    out = BaselineOut.model_validate(baseline)
    out.active = True
    return out


@admin_router.post("/prune")
async def prune(runtime: RuntimeDep) -> PruneOut:
    """Run one retention pass now (it also runs periodically)."""
    result = await run_in_threadpool(retention.prune, runtime)
    return PruneOut(
        recording_audio_deleted=result.recording_audio_deleted,
        embeddings_cleared=result.embeddings_cleared,
    )
