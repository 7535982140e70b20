"""Window endpoints: listing, detail, audio, feedback."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from service.api.deps import MachineId, RuntimeDep, WindowId
from service.limits import QueryTime
from service.schemas import FeedbackIn, WindowDetail, WindowPage
from service.security import Writer
from service.services import windows as windows_service

router = APIRouter(tags=["windows"])


@router.get("/machines/{machine_id}/windows")
def list_windows(
    machine_id: MachineId,
    runtime: RuntimeDep,
    start: QueryTime | None = Query(
        None, alias="from", description="window start >= (ISO 8601, or epoch s/ms)"
    ),
    end: QueryTime | None = Query(
        None, alias="to", description="window start < (ISO 8601, or epoch s/ms)"
    ),
    outliers_only: bool = False,
    limit: int = Query(100, ge=1, le=windows_service.MAX_PAGE),
    cursor: str | None = Query(None, max_length=500),
) -> WindowPage:
    """Windows of a machine, newest first (keyset pagination with ``next_cursor``)."""
    with runtime.db.session() as session:
        items, next_cursor = windows_service.list_windows(
            session,
            machine_id,
            start=start,
            end=end,
            outliers_only=outliers_only,
            limit=limit,
            cursor=cursor,
        )
    return WindowPage(items=items, next_cursor=next_cursor)


@router.get("/windows/{window_id}")
def get_window(window_id: WindowId, runtime: RuntimeDep) -> WindowDetail:
    """One window with its score, label and whether its audio is kept."""
    with runtime.db.session() as session:
        return windows_service.get_window(session, window_id)


@router.get(
    "/windows/{window_id}/audio",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}, 410: {"description": "audio pruned"}},
)
def get_window_audio(window_id: WindowId, runtime: RuntimeDep) -> Response:
    """The window's audio as WAV (mono, at the model's sample rate)."""
    with runtime.db.session() as session:
        data = windows_service.window_wav(session, window_id)
    return Response(
        data,
        media_type="audio/wav",
        headers={"Content-Disposition": f'inline; filename="window-{window_id}.wav"'},
    )


@router.post("/windows/{window_id}/feedback", dependencies=[Writer])
def give_feedback(window_id: WindowId, body: FeedbackIn, runtime: RuntimeDep) -> WindowDetail:
    """Label a window: ``normal`` joins the next baseline, ``anomaly`` never does."""
    with runtime.db.session() as session:
        return windows_service.give_feedback(session, window_id, body.label, body.note)
