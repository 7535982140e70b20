"""Machine registry: create, read, update, archive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from detectors.errors import EmbedderError
from detectors.presets import stat_block
from detectors.windows import window_lengths
from service.config import (
    DEFAULT_BASELINE,
    DEFAULT_CHANNEL,
    DEFAULT_EMBEDDER,
    DEFAULT_HOP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
)
from service.embedder_specs import check_logmel_budget, resolve_hf_model
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.models import Machine, Recording, utcnow
from service.repositories import machines as machines_repo
from service.repositories import recordings as recordings_repo
from service.runtime import Runtime
from service.schemas import MachineCreate, MachineUpdate
from service.services import runs
from service.services.conditions import CONDITION_KEY

_DETECTION_FIELDS = ("window_seconds", "hop_seconds", "channel", "embedder")


def get_machine(session: Session, machine_id: str, *, for_update: bool = False) -> Machine:
    """The machine or ``NotFoundError``."""
    machine = machines_repo.get(session, machine_id, for_update=for_update)
    if machine is None:
        raise NotFoundError(f"machine {machine_id!r} does not exist")
    return machine


def get_writable_machine(session: Session, machine_id: str, *, for_update: bool = False) -> Machine:
    """The machine, or ``ConflictError`` when it is archived (read-only history)."""
    return check_writable(get_machine(session, machine_id, for_update=for_update))


def check_writable(machine: Machine | None, machine_id: str | None = None) -> Machine:
    """``machine`` itself, ``NotFoundError`` for None, ``ConflictError`` when archived."""
    if machine is None:
        raise NotFoundError(f"machine {machine_id!r} does not exist")
    if machine.archived_at is not None:
        raise ConflictError(f"machine {machine.id!r} is archived; its history is read-only")
    return machine


def _spec_dict(spec: Any) -> dict[str, Any] | str | None:
    """A request's embedder (pydantic model, name or stored dict) as a plain spec."""
    if isinstance(spec, BaseModel):
        return spec.model_dump(exclude_unset=True) | {"name": spec.name}
    return spec


def _resolve_detection(
    runtime: Runtime,
    embedder_spec: Any,
    window_seconds: float,
    hop_seconds: float,
) -> dict[str, Any]:
    """Check the spec's limits, build the embedder and check the window fits it; returns its
    full spec. Nothing is built (or cached) for a spec that breaks a limit."""
    spec = _spec_dict(embedder_spec)
    if hop_seconds > window_seconds:
        raise InvalidInputError(
            f"hop_seconds ({hop_seconds:g}) must not exceed window_seconds ({window_seconds:g}); "
            "audio between windows would never be heard"
        )
    requested_model = None
    if isinstance(spec, dict) and spec.get("name") == "logmel":
        check_logmel_budget(spec, window_seconds, runtime.settings.max_recording_seconds)
    elif isinstance(spec, dict) and spec.get("name") == "hf":
        requested_model = str(spec.get("model", ""))
        registry = runtime.embedders
        resolve_hf_model(requested_model, registry.models_dir, registry.allow_downloads)

    def fits(embedder) -> None:
        window, _ = window_lengths(embedder.sample_rate, window_seconds, hop_seconds)
        embedder.embed(np.zeros((1, window), dtype=np.float32))  # EmbedderError if too short

    try:
        embedder = runtime.embedders.build_checked(spec, fits)
    except EmbedderError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad spec can fail in many ways
        raise InvalidInputError(f"embedder {spec!r} cannot be built: {exc}") from exc
    out = dict(embedder.spec)
    if requested_model is not None:
        out["model"] = requested_model  # the name, resolved in the models directory on load
    return out


def create_machine(session: Session, runtime: Runtime, data: MachineCreate) -> Machine:
    """Register a machine in state ``enrolling`` (409 when the id is taken)."""
    settings = runtime.settings
    if machines_repo.get(session, data.id) is not None:
        raise ConflictError(f"machine id {data.id!r} is already taken")
    window = data.window_seconds or DEFAULT_WINDOW_SECONDS
    hop = data.hop_seconds or min(DEFAULT_HOP_SECONDS, window)
    spec = _resolve_detection(
        runtime, data.embedder if data.embedder is not None else DEFAULT_EMBEDDER, window, hop
    )
    machine = Machine(
        id=data.id,
        name=data.name or data.id,
        site=data.site,
        area=data.area,
        machine_type=data.machine_type,
        labels=dict(data.labels),
        window_seconds=window,
        hop_seconds=hop,
        channel=str(data.channel if data.channel is not None else DEFAULT_CHANNEL),
        embedder=spec,
        k=data.k or settings.default_k,
        metric=data.metric or DEFAULT_BASELINE["metric"],
        standardize=(
            data.standardize if data.standardize is not None else DEFAULT_BASELINE["standardize"]
        ),
        whiten=_whiten(data.whiten, DEFAULT_BASELINE["whiten"]),
        block_space=_block_space(
            spec,
            data.two_spaces
            if data.two_spaces is not None
            else DEFAULT_BASELINE["block_space"] is not None,
            explicit=data.two_spaces is True,
        ),
        false_alarm_rate=data.false_alarm_rate or settings.default_false_alarm_rate,
        baseline_condition=_baseline_condition(data.baseline_condition),
        state="enrolling",
        enrolled_seconds=0.0,
        enrollment_seconds=data.enrollment_seconds or settings.min_enrollment_seconds,
        enrollment_runs=data.enrollment_runs or settings.min_enrollment_runs,
        run_gap_seconds=data.run_gap_seconds or settings.run_gap_seconds,
        learning_days=(
            data.learning_days if data.learning_days is not None else settings.learning_days
        ),
    )
    try:
        with session.begin_nested():
            machines_repo.add(session, machine)
    except IntegrityError as exc:
        raise ConflictError(f"machine id {data.id!r} is already taken") from exc
    return machine


def list_machines(
    session: Session, site: str | None, state: str | None, include_archived: bool
) -> Sequence[Machine]:
    """Machines filtered by site and state."""
    return machines_repo.list_machines(
        session, site=site, state=state, include_archived=include_archived
    )


def update_machine(
    session: Session, runtime: Runtime, machine_id: str, data: MachineUpdate
) -> Machine:
    """Change descriptive fields and baseline parameters (used by the next baseline),
    pause/resume, or the detection settings while the machine has no audio yet."""
    machine = get_writable_machine(session, machine_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    detection = {k: changes.pop(k) for k in _DETECTION_FIELDS if k in changes}
    if detection:
        has_audio = session.execute(
            select(exists().where(Recording.machine_id == machine.id))
        ).scalar_one()
        if has_audio:
            raise ConflictError(
                f"{', '.join(sorted(detection))} cannot change once machine {machine.id!r} has "
                "audio (its baselines depend on them); register a new machine instead"
            )
        window = detection.get("window_seconds") or machine.window_seconds
        hop = detection.get("hop_seconds") or machine.hop_seconds
        spec = detection.get("embedder") or machine.embedder
        machine.embedder = _resolve_detection(runtime, spec, window, hop)
        machine.block_space = _block_space(machine.embedder, machine.block_space is not None)
        machine.window_seconds, machine.hop_seconds = window, hop
        if detection.get("channel") is not None:
            machine.channel = str(detection["channel"])
    state = changes.pop("state", None)
    if state is not None and state != machine.state:
        if state == "monitoring" and machine.active_baseline_version is None:
            raise ConflictError(
                f"machine {machine.id!r} has no baseline yet; it turns monitoring by itself "
                "once enrolled"
            )
        if state == "paused" and machine.state == "enrolling":
            raise ConflictError(f"machine {machine.id!r} is still enrolling; it cannot pause")
        machine.state = state
    if "whiten" in changes:
        changes["whiten"] = _whiten(changes["whiten"], machine.whiten)
    if "two_spaces" in changes:
        two_spaces = changes.pop("two_spaces")
        if two_spaces is None:
            raise InvalidInputError("two_spaces cannot be null (true or false)")
        machine.block_space = _block_space(machine.embedder, two_spaces, explicit=True)
    if "baseline_condition" in changes:
        changes["baseline_condition"] = _baseline_condition(changes["baseline_condition"])
    for name, value in changes.items():
        if value is None and not Machine.__table__.c[name].nullable:
            raise InvalidInputError(f"{name} cannot be null")
        setattr(machine, name, value)
    machine.updated_at = utcnow()
    session.flush()
    return machine


def archive_machine(session: Session, runtime: Runtime, machine_id: str) -> Machine:
    """Archive: no more audio or changes; recordings, windows and baselines stay readable."""
    machine = get_writable_machine(session, machine_id, for_update=True)
    machine.archived_at = utcnow()
    session.flush()
    runtime.baselines.discard(machine.id)
    return machine


def material_coverage(session: Session, machine: Machine) -> runs.Coverage:
    """Seconds, runs, time span and conditions of the machine's baseline material."""
    spans = [runs.Span(*row) for row in recordings_repo.material_spans(session, machine.id)]
    return runs.coverage(spans, machine.run_gap_seconds)


def _whiten(requested: float | None, default: float | None) -> float | None:
    """The stored whitening share: None (not given) keeps ``default``, 0 switches it off."""
    if requested is None:
        return default
    return None if requested == 0 else float(requested)


def _block_space(embedder: dict[str, Any], dual: bool, explicit: bool = False) -> int | None:
    """The statistic block of a machine with this embedder that scores in two spaces (None:
    one space, or an embedder whose dimensions have no statistic blocks; asking for two
    spaces with such an embedder, ``explicit``, is refused)."""
    if not dual:
        return None
    block = stat_block(embedder)
    if block is None and explicit:
        raise InvalidInputError(
            f"two_spaces needs a log-mel embedder (its statistics come in blocks of mel bands); "
            f"embedder {embedder.get('name')!r} has none: leave two_spaces false"
        )
    return block


def _baseline_condition(name: str | None) -> str | None:
    """The operating-condition attribute baselines are fitted within (None: pooled)."""
    if name is None:
        return None
    if not CONDITION_KEY.match(name):
        raise InvalidInputError(
            f"baseline_condition {name!r} is not an operating-condition name "
            "(letters, digits, '_', '.', '-')"
        )
    if name == runs.RUN_CONDITION:
        raise InvalidInputError(
            f"{name!r} names runs (the unit of calibration), not an operating condition; "
            "baselines cannot be fitted within one run"
        )
    return name
