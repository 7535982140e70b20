"""Event endpoints: listing, detail with windows and timeline, acknowledge, close; a machine's
event parameters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from detectors.events import EventParams
from service import metrics
from service.api.deps import MachineId, RuntimeDep
from service.event_schemas import (
    AcknowledgeIn,
    CloseIn,
    CloseOut,
    EventDetail,
    EventKind,
    EventOut,
    EventPage,
    EventParamsOut,
    EventState,
    Severity,
)
from service.schemas import BaselineOut, as_utc
from service.security import Credentials, Writer, require_admin
from service.services import events as events_service

router = APIRouter(tags=["events"])

EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_EVENT_WINDOWS = 5000


@router.get("/events")
def list_events(
    runtime: RuntimeDep,
    machine: str | None = Query(None, min_length=1, max_length=64, description="machine id"),
    site: str | None = Query(None, max_length=200),
    area: str | None = Query(None, max_length=200),
    kind: EventKind | None = None,
    state: EventState | None = None,
    severity: Severity | None = Query(None, description="current severity"),
    start: datetime | None = Query(None, alias="from", description="opened at >= (UTC)"),
    end: datetime | None = Query(None, alias="to", description="opened at < (UTC)"),
    limit: int = Query(50, ge=1, le=events_service.MAX_PAGE),
    cursor: str | None = Query(None, max_length=500),
) -> EventPage:
    """Events newest first (by opened_at; keyset pagination with ``next_cursor``)."""
    with runtime.db.session() as session:
        items, next_cursor = events_service.list_events(
            session,
            machine_id=machine,
            site=site,
            area=area,
            kind=kind,
            state=state,
            severity=severity,
            start=as_utc(start) if start else None,
            end=as_utc(end) if end else None,
            limit=limit,
            cursor=cursor,
        )
        return EventPage(items=[EventOut.of(e) for e in items], next_cursor=next_cursor)


@router.get("/events/{event_id}")
def get_event(
    event_id: EventId,
    runtime: RuntimeDep,
    windows_limit: int = Query(500, ge=0, le=MAX_EVENT_WINDOWS, description="windows listed"),
) -> EventDetail:
    """One event with its timeline and its windows (time order, up to ``windows_limit``)."""
    with runtime.db.session() as session:
        event = events_service.get_event(session, event_id)
        windows = events_service.member_windows(session, event_id, windows_limit)
        return EventDetail.of_detail(event, list(windows), windows_limit)


@router.post("/events/{event_id}/acknowledge", dependencies=[Writer])
def acknowledge_event(event_id: EventId, body: AcknowledgeIn, runtime: RuntimeDep) -> EventOut:
    """Record who has seen the event, with a comment (409 if closed or acknowledged)."""
    with runtime.db.session() as session:
        event = events_service.acknowledge(session, event_id, body.by, body.comment)
        out = EventOut.of(event)
    metrics.observe_acknowledgement(
        out.kind, (out.acknowledgement.at - out.opened_at).total_seconds()
    )
    return out


async def _admin_for_rebuild(request: Request, credentials: Credentials, body: CloseIn) -> None:
    if body.rebuild_baseline:
        await require_admin(request, credentials)


@router.post("/events/{event_id}/close", dependencies=[Writer])
async def close_event(
    event_id: EventId,
    body: CloseIn,
    runtime: RuntimeDep,
    _admin: Annotated[None, Depends(_admin_for_rebuild)],
) -> CloseOut:
    """Close with a disposition; ``false_alarm`` labels its windows normal, ``confirmed_fault``
    anomaly; ``rebuild_baseline`` (admin) builds the next baseline in the same transaction."""
    result = await run_in_threadpool(
        events_service.close,
        runtime,
        event_id,
        by=body.by,
        disposition=body.disposition,
        reason=body.reason,
        rebuild_baseline=body.rebuild_baseline,
    )
    baseline = None
    if result.baseline is not None:
        baseline = BaselineOut.model_validate(result.baseline)
        baseline.active = True
    return CloseOut(
        event=EventOut.of(result.event), labelled_windows=result.labelled_windows, baseline=baseline
    )


def _params_out(params: EventParams, overrides: dict[str, Any]) -> EventParamsOut:
    return EventParamsOut(
        params=params.to_dict(), overrides=overrides, defaults=EventParams().to_dict()
    )


@router.get("/machines/{machine_id}/event-params")
def get_event_params(machine_id: MachineId, runtime: RuntimeDep) -> EventParamsOut:
    """The event parameters in force for a machine (``detectors.events.EventParams``)."""
    with runtime.db.session() as session:
        params = events_service.get_params(session, machine_id)
    defaults = EventParams().to_dict()
    overrides = {k: v for k, v in params.to_dict().items() if defaults[k] != v}
    return _params_out(params, overrides)


@router.put("/machines/{machine_id}/event-params", dependencies=[Writer])
def put_event_params(
    machine_id: MachineId,
    runtime: RuntimeDep,
    overrides: dict[str, float | int] = Body(
        ..., examples=[{"m": 4, "quiet_s": 600}], description="overrides; {} restores defaults"
    ),
) -> EventParamsOut:
    """Replace a machine's event parameter overrides (validated together)."""
    with runtime.db.session() as session:
        params = events_service.set_params(session, machine_id, overrides)
    return _params_out(params, overrides)
