"""The API side of the ``humwatch`` command line: a small HTTP client and the ``machines``,
``enroll`` and ``score`` commands built on it.

Every failure becomes a ``CommandError`` whose message is one line saying what went wrong and
what to do; ``service.cli`` prints it and exits non-zero. The client talks to ``--url``
(``HUMWATCH_URL``) with the key in ``HUMWATCH_API_KEY`` as ``Authorization: Bearer``. Tests
point the commands at an in-process app by setting ``HTTP_FACTORY`` to return a TestClient.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

URL_ENV = "HUMWATCH_URL"
API_KEY_ENV = "HUMWATCH_API_KEY"
AUDIO_CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
}
# Upload answers about one file (too large, not audio, unusable audio): ``enroll`` reports
# the file and goes on with the others. Anything else stops it.
FILE_ERRORS = {413, 415, 422}
# Tests set this to return a ready client (a FastAPI TestClient); the Api does not close it.
HTTP_FACTORY: Callable[[str], httpx.Client] | None = None


class CommandError(Exception):
    """A failure to print as one line (with what to do) before exiting non-zero."""


class ApiError(CommandError):
    """The API answered with an error (its ``{"error": ..., "detail": ...}`` body)."""

    def __init__(self, status: int, code: str, detail: str, hint: str | None = None) -> None:
        self.status, self.code, self.detail = status, code, detail
        message = f"{detail} ({code}, HTTP {status})"
        super().__init__(f"{message}; {hint}" if hint else message)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


KEY_HINT = (
    f"set {API_KEY_ENV} to one of the service's HUMWATCH_API_KEYS (or HUMWATCH_READ_KEYS "
    f"for reads; export {API_KEY_ENV}=...)"
)


class Api:
    """The humwatch HTTP API at ``url``.

    Parameters
    ----------
    url : base URL of the service (``http://host:port``)
    key : API key sent as ``Authorization: Bearer``; None sends none
    http : a ready ``httpx.Client`` (e.g. a TestClient) to use instead of opening one; it is
        left open on ``close``
    timeout : seconds to wait for an answer (uploads are decoded and embedded before it comes)
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key or None
        self.timeout = timeout
        self._owns_http = http is None
        if http is None:
            try:
                if not self.url.lower().startswith(("http://", "https://")):
                    raise ValueError("it needs http:// or https://")
                http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0))
            except (httpx.InvalidURL, ValueError) as exc:
                raise CommandError(
                    f"{url!r} is not a valid URL ({exc}); set --url or {URL_ENV} "
                    "(e.g. http://127.0.0.1:8000)"
                ) from exc
        self.http = http

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, not_found_hint: str | None = None, **kwargs: Any
    ) -> Any:
        """Send one request; the decoded JSON answer, or a ``CommandError``."""
        headers = dict(kwargs.pop("headers", None) or {})
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise CommandError(
                f"cannot reach humwatch at {self.url}: is `humwatch serve` running? "
                f"(set --url or {URL_ENV})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CommandError(
                f"humwatch at {self.url} did not answer within {self.timeout:g} s "
                "(is it overloaded? try again, or send shorter recordings)"
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CommandError(
                f"request to {self.url} failed: {_one_line(exc) or type(exc).__name__} "
                f"(check --url or {URL_ENV})"
            ) from exc
        if response.status_code >= 400:
            raise self._error(response, not_found_hint)
        try:
            return response.json()
        except ValueError as exc:
            raise CommandError(
                f"{self.url}{path} answered HTTP {response.status_code} without JSON: "
                f"is {self.url} a humwatch service? (set --url or {URL_ENV})"
            ) from exc

    def _error(self, response: httpx.Response, not_found_hint: str | None) -> CommandError:
        status = response.status_code
        try:
            body = response.json()
            code, detail = str(body["error"]), _one_line(body["detail"])
        except (ValueError, KeyError, TypeError):
            return CommandError(
                f"{self.url} answered HTTP {status} ({_one_line(response.text, 120) or 'empty'}): "
                f"is it a humwatch service? (set --url or {URL_ENV})"
            )
        if status == 401:
            return ApiError(status, code, detail, KEY_HINT)
        if status == 403:
            hint = (
                f"{API_KEY_ENV} holds a key the service does not accept; {KEY_HINT}"
                if self.key
                else KEY_HINT
            )
            return ApiError(status, code, detail, hint)
        if status == 404:
            return ApiError(status, code, detail, not_found_hint)
        if status >= 500:
            return ApiError(status, code, detail, "the service failed; see its log")
        return ApiError(status, code, detail)

    # -- endpoints ---------------------------------------------------------------------------

    def create_machine(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/machines", json=body)

    def list_machines(self, site: str | None = None, state: str | None = None) -> list[dict]:
        params = {k: v for k, v in {"site": site, "state": state}.items() if v is not None}
        return self.request("GET", "/v1/machines", params=params)

    def get_machine(self, machine_id: str) -> dict[str, Any]:
        return self.request(
            "GET", f"/v1/machines/{_seg(machine_id)}", not_found_hint=machine_hint(machine_id)
        )

    def list_baselines(self, machine_id: str) -> list[dict[str, Any]]:
        return self.request(
            "GET",
            f"/v1/machines/{_seg(machine_id)}/baselines",
            not_found_hint=machine_hint(machine_id),
        )

    def upload(
        self,
        machine_id: str,
        data: bytes,
        content_type: str,
        started_at: datetime | None = None,
        conditions: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST one recording; the ``IngestOut`` body (``created`` false: already stored)."""
        params = dict(conditions or {})
        if started_at is not None:
            params["started_at"] = started_at.isoformat()
        return self.request(
            "POST",
            f"/v1/machines/{_seg(machine_id)}/recordings",
            content=data,
            headers={"Content-Type": content_type},
            params=params,
            not_found_hint=machine_hint(machine_id),
        )

    def upload_batch(
        self,
        uploads: list[tuple[str, bytes, str, datetime, dict[str, str]]],
    ) -> list[dict[str, Any]]:
        """POST several recordings in one request (``/v1/recordings/batch``), each
        ``(machine_id, data, content_type, started_at, conditions)``; every item's outcome
        (``status``, ``result`` as ``upload`` returns it, or ``error``), in order."""
        items, files = [], []
        for i, (machine_id, data, content_type, started_at, conditions) in enumerate(uploads):
            items.append(
                {
                    "machine_id": machine_id,
                    "started_at": started_at.isoformat(),
                    "conditions": dict(conditions),
                    "file": f"f{i}",
                }
            )
            files.append((f"f{i}", (f"f{i}", data, content_type)))
        manifest = ("manifest", (None, json.dumps({"items": items}), "application/json"))
        return self.request("POST", "/v1/recordings/batch", files=[manifest, *files])["items"]


def _seg(value: str) -> str:
    """A path segment, percent-encoded."""
    return urllib.parse.quote(value, safe="")


def machine_hint(machine_id: str) -> str:
    return f"register it with `humwatch machines add {machine_id}` or see `humwatch machines list`"


@contextlib.contextmanager
def connect(url: str) -> Iterator[Api]:
    """An ``Api`` for ``url`` with the key from ``HUMWATCH_API_KEY``."""
    http = HTTP_FACTORY(url) if HTTP_FACTORY is not None else None
    with Api(url, key=os.environ.get(API_KEY_ENV), http=http) as api:
        yield api


# -- output helpers ----------------------------------------------------------------------------


def stdout_console() -> Console:
    # No markup: machine names and details are printed as they are.
    return Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def stderr_console() -> Console:
    return Console(stderr=True, markup=False, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _time(value: str | None, with_date: bool = True) -> str:
    if not value:
        return "-"
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return value
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    return f"{text}.{t.microsecond // 1000:03d}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"{what} {pair!r} is not KEY=VALUE (e.g. {what} line=2)")
        out[key.strip()] = value.strip()
    return out


# -- machines ----------------------------------------------------------------------------------


def machines_add(
    api: Api,
    machine_id: str,
    *,
    name: str | None = None,
    site: str | None = None,
    area: str | None = None,
    machine_type: str | None = None,
    labels: list[str] | None = None,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    channel: str | None = None,
    as_json: bool = False,
) -> dict[str, Any]:
    """Register a machine and say how to enroll it."""
    body: dict[str, Any] = {"id": machine_id}
    fields = {
        "name": name,
        "site": site,
        "area": area,
        "machine_type": machine_type,
        "window_seconds": window_seconds,
        "hop_seconds": hop_seconds,
    }
    body.update({k: v for k, v in fields.items() if v is not None})
    if labels:
        body["labels"] = parse_pairs(labels, "--label")
    if channel is not None:
        body["channel"] = int(channel) if channel.isdigit() else channel
    machine = api.create_machine(body)
    if as_json:
        print_json(machine)
        return machine
    out = stdout_console()
    out.print(
        f"registered {machine['id']} ({machine['name']}): {machine['state']}, "
        f"{machine['window_seconds']:g} s windows every {machine['hop_seconds']:g} s"
    )
    out.print(
        f"next: send normal audio with `humwatch enroll --machine {machine['id']} FILES...`; "
        "it starts monitoring once enough is enrolled"
    )
    return machine


def machines_list(
    api: Api, site: str | None = None, state: str | None = None, as_json: bool = False
) -> list[dict[str, Any]]:
    """Print the machines as a table."""
    machines = api.list_machines(site, state)
    if as_json:
        print_json(machines)
        return machines
    out = stdout_console()
    if not machines:
        out.print("no machines" + (" match" if site or state else " yet: `humwatch machines add`"))
        return machines
    table = Table("id", "name", "type", "site", "area", "state", "enrolled s", "baseline")
    for m in machines:
        version = m["active_baseline_version"]
        table.add_row(
            m["id"],
            m["name"],
            m["machine_type"] or "-",
            m["site"] or "-",
            m["area"] or "-",
            m["state"],
            f"{m['enrolled_seconds']:.1f}",
            f"v{version}" if version else "-",
        )
    out.print(table)
    return machines


def machines_show(api: Api, machine_id: str, as_json: bool = False) -> dict[str, Any]:
    """Print one machine and its baseline versions."""
    machine = api.get_machine(machine_id)
    baselines = api.list_baselines(machine_id)
    if as_json:
        doc = {**machine, "baselines": baselines}
        print_json(doc)
        return doc
    out = stdout_console()
    rows = [
        ("id", machine["id"]),
        ("name", machine["name"]),
        ("type", machine["machine_type"] or "-"),
        ("site", machine["site"] or "-"),
        ("area", machine["area"] or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in machine["labels"].items()) or "-"),
        ("state", machine["state"] + (" (archived)" if machine["archived_at"] else "")),
        ("enrolled", f"{machine['enrolled_seconds']:.1f} s of normal audio"),
        ("windows", f"{machine['window_seconds']:g} s, hop {machine['hop_seconds']:g} s"),
        ("channel", str(machine["channel"])),
        ("embedder", json.dumps(machine["embedder"], sort_keys=True)),
        (
            "scoring",
            f"k={machine['k']}, {machine['metric']}, standardize={machine['standardize']}, "
            f"false alarm rate {machine['false_alarm_rate']:g}"
            + (
                f", baselines within condition {machine['baseline_condition']!r}"
                if machine.get("baseline_condition")
                else ""
            ),
        ),
        ("created", _time(machine["created_at"])),
    ]
    info = Table.grid(padding=(0, 2))
    for key, value in rows:
        info.add_row(key, value)
    out.print(info)
    if not baselines:
        out.print("no baselines yet (one is built when enrollment completes)")
        return {**machine, "baselines": baselines}
    table = Table("version", "active", "created", "vectors", "recordings", "threshold", "k", "note")
    for b in baselines:
        table.add_row(
            f"v{b['version']}",
            "yes" if b["active"] else "",
            _time(b["created_at"]),
            str(b["n_vectors"]),
            str(b["n_recordings"]),
            _num(b["threshold"]),
            str(b["k"]),
            b["note"] or "",
        )
    out.print(table)
    return {**machine, "baselines": baselines}


# -- audio files -------------------------------------------------------------------------------


def collect_audio(paths: list[Path]) -> list[Path]:
    """Audio files named or found in folders (recursively, by name), in order, no repeats."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in AUDIO_CONTENT_TYPES
                and not f.name.startswith(".")  # e.g. macOS ._name.wav resource forks
            )
            if not found:
                raise CommandError(f"{path}: no .wav, .flac or .ogg files in this folder")
            files.extend(found)
        elif path.suffix.lower() not in AUDIO_CONTENT_TYPES:
            raise CommandError(f"{path}: not a .wav, .flac or .ogg file")
        else:
            files.append(path)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def audio_duration(path: Path) -> float | None:
    """Seconds of audio in the file, or None when it cannot be read here."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - the service reports what is wrong with it
        return None
    return info.frames / info.samplerate if info.samplerate else None


def plan_starts(files: list[Path], mode: str) -> list[tuple[Path, datetime | None]]:
    """The upload order and each file's ``started_at`` (None: the service decides)."""
    mode = mode.strip()
    if mode == "now":
        return [(f, None) for f in files]
    durations = [audio_duration(f) or 0.0 for f in files]
    if mode == "auto":
        mtimes = [f.stat().st_mtime for f in files]
        order = sorted(range(len(files)), key=lambda i: (mtimes[i], str(files[i])))
        starts: dict[int, datetime] = {}
        next_start: datetime | None = None
        for i in reversed(order):
            end = datetime.fromtimestamp(mtimes[i], UTC)
            if next_start is not None and next_start < end:
                end = next_start
            starts[i] = end - timedelta(seconds=durations[i])
            next_start = starts[i]
        return [(files[i], starts[i]) for i in order]
    try:
        t = datetime.fromisoformat(mode)
    except ValueError as exc:
        raise CommandError(
            f"--started-at {mode!r} is not 'auto', 'now' or an ISO time (e.g. 2025-01-06T08:00:00Z)"
        ) from exc
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    plan = []
    for f, seconds in zip(files, durations, strict=True):
        plan.append((f, t))
        t += timedelta(seconds=seconds)
    return plan


def _conditions(pairs: list[str] | None) -> dict[str, str]:
    conditions = parse_pairs(pairs, "--condition")
    if "started_at" in conditions:
        raise CommandError("use --started-at, not --condition started_at=...")
    return conditions


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


# -- enroll ------------------------------------------------------------------------------------


@dataclass
class EnrollSummary:
    files: int = 0
    stored: int = 0
    already_stored: int = 0
    windows: int = 0
    scored_windows: int = 0
    outliers: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)


def enroll(
    api: Api,
    machine_id: str,
    paths: list[Path],
    started_at: str = "auto",
    conditions: list[str] | None = None,
    batch: int = 1,
) -> EnrollSummary:
    """Upload every audio file (folders walked) with a progress bar; report the outcome.

    ``batch`` > 1 sends that many files per request (``POST /v1/recordings/batch``; each
    file is still stored or refused on its own). Files the service refuses as audio are
    reported and skipped; anything else (no service, no key, unknown or paused machine)
    stops the run. Raises ``CommandError`` at the end when some file was not stored.
    """
    files = collect_audio(paths)
    params = _conditions(conditions)
    if batch > 1 and started_at.strip() == "now":
        raise CommandError(
            "--batch needs start times: use --started-at auto or an ISO time, not 'now'"
        )
    plan = plan_starts(files, started_at)
    machine = api.get_machine(machine_id)
    err = stderr_console()
    if machine["state"] == "monitoring":
        err.print(
            f"note: {machine_id} is already monitoring: these recordings are scored against "
            f"baseline v{machine['active_baseline_version']}, not added to it"
        )
    summary = EnrollSummary(files=len(plan))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"enrolling {machine_id}", total=len(plan))
        for group in (plan[i : i + batch] for i in range(0, len(plan), max(1, batch))):
            progress.update(task, description=f"{machine_id} <- {group[0][0].name}")
            for (path, _start), outcome in zip(
                group, _send(api, machine_id, group, params, batch > 1), strict=True
            ):
                if isinstance(outcome, ApiError):
                    summary.failed.append((path, outcome.detail))
                    progress.console.print(f"skipped {path}: {outcome.detail}", soft_wrap=True)
                    progress.advance(task)
                    continue
                windows = outcome["windows"]
                if outcome["created"]:
                    summary.stored += 1
                    summary.windows += len(windows)
                    summary.scored_windows += sum(w["score"] is not None for w in windows)
                    summary.outliers += sum(bool(w["is_outlier"]) for w in windows)
                else:
                    summary.already_stored += 1
                progress.advance(task)
    summary.machine = api.get_machine(machine_id)
    _print_enroll_summary(machine_id, summary)
    if summary.failed:
        path, detail = summary.failed[0]
        raise CommandError(
            f"{len(summary.failed)} of {summary.files} files were not stored "
            f"(first: {path}: {detail})"
        )
    return summary


def _send(
    api: Api,
    machine_id: str,
    group: list[tuple[Path, datetime | None]],
    params: dict[str, str],
    as_batch: bool,
) -> list[dict[str, Any] | ApiError]:
    """Upload a group of files (one request each, or one batch): per file the upload's
    answer, or the ``ApiError`` that refused that file as audio; any other error raises."""
    kinds = [AUDIO_CONTENT_TYPES[path.suffix.lower()] for path, _ in group]
    if not as_batch:
        out: list[dict[str, Any] | ApiError] = []
        for (path, start), kind in zip(group, kinds, strict=True):
            try:
                out.append(api.upload(machine_id, _read(path), kind, start, params))
            except ApiError as exc:
                if exc.status not in FILE_ERRORS:
                    raise
                out.append(exc)
        return out
    uploads = [
        (machine_id, _read(path), kind, start, params)
        for (path, start), kind in zip(group, kinds, strict=True)
    ]
    out = []
    for item in api.upload_batch(uploads):  # type: ignore[arg-type]
        if item["status"] in (200, 201):
            out.append(item["result"])
            continue
        status, body = item["status"], item["error"]
        hint = machine_hint(machine_id) if status == 404 else None
        if status >= 500:
            hint = "the service failed; see its log"
        error = ApiError(status, body["error"], _one_line(body["detail"]), hint)
        if status not in FILE_ERRORS:
            raise error
        out.append(error)
    return out


def _print_enroll_summary(machine_id: str, s: EnrollSummary) -> None:
    out = stdout_console()
    line = f"stored {s.stored} recording{'s' * (s.stored != 1)} ({s.windows} windows)"
    if s.already_stored:
        line += f"; {s.already_stored} already stored (sent before with the same start)"
    out.print(line)
    if s.scored_windows:
        out.print(
            f"{s.scored_windows} windows were scored (the machine was monitoring): "
            f"{s.outliers} outlier{'s' * (s.outliers != 1)}"
        )
    m = s.machine
    if m["state"] == "monitoring":
        out.print(
            f"{machine_id} is monitoring with baseline v{m['active_baseline_version']} "
            f"({m['enrolled_seconds']:.1f} s of enrollment audio); "
            f"score new audio with `humwatch score --machine {machine_id} FILE`"
        )
    elif m["state"] == "enrolling":
        out.print(
            f"{machine_id} is still enrolling: {m['enrolled_seconds']:.1f} s of normal audio "
            "so far; send more with `humwatch enroll`"
        )
    else:
        out.print(f"{machine_id} is {m['state']}")


# -- score -------------------------------------------------------------------------------------


def score(
    api: Api,
    machine_id: str,
    path: Path,
    started_at: str = "auto",
    conditions: list[str] | None = None,
    outliers_only: bool = False,
    as_json: bool = False,
) -> dict[str, Any]:
    """Upload one file to a monitoring machine and print its windows with their scores."""
    if path.is_dir():
        raise CommandError(f"{path} is a folder: score takes one file (enroll takes folders)")
    (path,) = collect_audio([path])
    params = _conditions(conditions)
    ((_, start),) = plan_starts([path], started_at)
    machine = api.get_machine(machine_id)
    if machine["state"] == "enrolling":
        raise CommandError(
            f"{machine_id} is still enrolling ({machine['enrolled_seconds']:.1f} s of normal "
            "audio so far), so nothing is scored yet and this file would become enrollment "
            f"material: enroll normal audio first (`humwatch enroll --machine {machine_id} "
            "FILES`)"
        )
    result = api.upload(
        machine_id, _read(path), AUDIO_CONTENT_TYPES[path.suffix.lower()], start, params
    )
    if as_json:
        print_json(result)
        return result
    out = stdout_console()
    windows = sorted(result["windows"], key=lambda w: w["start_at"])
    shown = [w for w in windows if w["is_outlier"]] if outliers_only else windows
    if shown:
        table = Table("start (UTC)", "end", "score", "ratio", "outlier")
        for w in shown:
            table.add_row(
                _time(w["start_at"]),
                _time(w["end_at"], with_date=False),
                _num(w["score"]),
                _num(w["ratio"], 2),
                "OUTLIER" if w["is_outlier"] else "",
            )
        out.print(table)
    outliers = sum(bool(w["is_outlier"]) for w in windows)
    ratios = [w["ratio"] for w in windows if w["ratio"] is not None]
    line = (
        f"{path.name}: {len(windows)} windows, {outliers} outlier{'s' * (outliers != 1)}"
        + (f", highest ratio {max(ratios):.2f}" if ratios else "")
        + (f" (baseline v{result['baseline_version']})" if result["baseline_version"] else "")
    )
    out.print(line)
    if not result["created"]:
        out.print(
            "this audio was already stored with the same start: these are its stored windows "
            "(--started-at now stores it again)"
        )
    return result
