"""Windows: keyset-paginated listing, detail, audio, feedback."""

from __future__ import annotations

import base64
import binascii
import io
import json
from datetime import datetime

import numpy as np
import soundfile as sf
from sqlalchemy.orm import Session

from detectors.audio import encode_wav
from service.errors import GoneError, InvalidInputError, NotFoundError
from service.limits import check_cursor_id, to_utc
from service.models import utcnow
from service.repositories import windows as windows_repo
from service.schemas import WindowDetail
from service.services.machines import get_machine, get_writable_machine

MAX_PAGE = 500


def encode_cursor(start_at: datetime, window_id: int) -> str:
    """Opaque cursor for the keyset (start_at, id)."""
    raw = json.dumps({"t": start_at.isoformat(), "id": window_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        at = datetime.fromisoformat(data["t"])
        if at.tzinfo is None:
            raise ValueError("naive time")
        at = to_utc(at)
        wid = check_cursor_id(data["id"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            "cursor is not valid; pass the next_cursor of a previous page unchanged"
        ) from exc
    return at, wid


def _detail(row) -> WindowDetail:
    return WindowDetail.model_validate(dict(row._mapping))


def list_windows(
    session: Session,
    machine_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    outliers_only: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[WindowDetail], str | None]:
    """A page of windows newest first and the cursor of the next page (None at the end)."""
    get_machine(session, machine_id)
    if start is not None and end is not None and start >= end:
        raise InvalidInputError("'from' must be before 'to'")
    after = decode_cursor(cursor) if cursor else None
    rows = windows_repo.page(
        session,
        machine_id,
        start=start,
        end=end,
        outliers_only=outliers_only,
        limit=limit + 1,
        after=after,
    )
    items = [_detail(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.start_at, last.id)
    return items, next_cursor


def get_window(session: Session, window_id: int) -> WindowDetail:
    row = windows_repo.get_detail(session, window_id)
    if row is None:
        raise NotFoundError(f"window {window_id} does not exist")
    return _detail(row)


def window_wav(session: Session, window_id: int) -> bytes:
    """The window's audio as 16-bit WAV, cut from its recording's audio (410 once pruned)."""
    samples, rate = window_samples(session, window_id)
    return encode_wav(samples, rate)


def window_samples(session: Session, window_id: int) -> tuple[np.ndarray, int]:
    """The window's audio ``(n,)`` float32 mono at the model rate, and that rate (410 once
    pruned)."""
    window = windows_repo.get(session, window_id)
    if window is None:
        raise NotFoundError(f"window {window_id} does not exist")
    found = windows_repo.get_audio(session, window)
    if found is None:
        raise GoneError(
            f"the audio of window {window_id} was pruned (audio is kept for recordings with "
            "outlier or labelled windows, and for HUMWATCH_AUDIO_RETENTION_DAYS otherwise)"
        )
    recording, audio = found
    rate = audio.sample_rate
    start = round((window.start_at - recording.started_at).total_seconds() * rate)
    frames = round((window.end_at - window.start_at).total_seconds() * rate)
    with sf.SoundFile(io.BytesIO(audio.data)) as f:
        f.seek(max(0, start))
        samples = f.read(frames, dtype="float32")
    return samples, rate


def give_feedback(session: Session, window_id: int, label: str, note: str | None) -> WindowDetail:
    """Label a window normal (joins the next baseline) or anomaly (never does)."""
    window = windows_repo.get(session, window_id)
    if window is None:
        raise NotFoundError(f"window {window_id} does not exist")
    get_writable_machine(session, window.machine_id)
    windows_repo.set_label(session, window, label, note, utcnow())
    return get_window(session, window_id)
