"""Machine registry endpoints."""

from __future__ import annotations

from fastapi import APIRouter, status

from service.api.deps import MachineId, RuntimeDep
from service.event_schemas import EventOut, MachineHealthOut
from service.schemas import CoverageOut, MachineCreate, MachineOut, MachineState, MachineUpdate
from service.security import Writer
from service.services import events as events_service
from service.services import machines as machines_service

router = APIRouter(prefix="/machines", tags=["machines"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Writer])
def create_machine(body: MachineCreate, runtime: RuntimeDep) -> MachineOut:
    """Register a machine; it starts enrolling."""
    with runtime.db.session() as session:
        machine = machines_service.create_machine(session, runtime, body)
        return MachineOut.model_validate(machine)


@router.get("")
def list_machines(
    runtime: RuntimeDep,
    site: str | None = None,
    state: MachineState | None = None,
    include_archived: bool = False,
) -> list[MachineHealthOut]:
    """List machines, filtered by site and state, with their health and open events."""
    with runtime.db.session() as session:
        machines = machines_service.list_machines(session, site, state, include_archived)
        return _with_health(session, machines)


@router.get("/{machine_id}")
def get_machine(machine_id: MachineId, runtime: RuntimeDep) -> MachineHealthOut:
    """One machine (archived machines included) with its health and open events."""
    with runtime.db.session() as session:
        machine = machines_service.get_machine(session, machine_id)
        out = _with_health(session, [machine])[0]
        out.coverage = CoverageOut(**machines_service.material_coverage(session, machine).as_dict())
        return out


def _with_health(session, machines) -> list[MachineHealthOut]:
    health = events_service.machine_health(session, machines)
    out = []
    for machine in machines:
        state, opened = health[machine.id]
        anomaly, sensor = opened.get("anomaly"), opened.get("sensor")
        fields = MachineOut.model_validate(machine).model_dump()
        fields["channel_spec"] = fields.pop("channel")
        fields.update(
            health=state,
            open_event=EventOut.of(anomaly) if anomaly else None,
            open_sensor_event=EventOut.of(sensor) if sensor else None,
        )
        out.append(MachineHealthOut.model_validate(fields))
    return out


@router.patch("/{machine_id}", dependencies=[Writer])
def update_machine(machine_id: MachineId, body: MachineUpdate, runtime: RuntimeDep) -> MachineOut:
    """Change a machine's description, pause/resume it, or its detection settings before audio."""
    with runtime.db.session() as session:
        machine = machines_service.update_machine(session, runtime, machine_id, body)
        return MachineOut.model_validate(machine)


@router.delete("/{machine_id}", dependencies=[Writer])
def archive_machine(machine_id: MachineId, runtime: RuntimeDep) -> MachineOut:
    """Archive a machine: it takes no more audio; its history stays readable."""
    with runtime.db.session() as session:
        return MachineOut.model_validate(
            machines_service.archive_machine(session, runtime, machine_id)
        )
