"""Prometheus metrics: every metric of the service, how it is fed, and ``GET /metrics``.

Names follow the Prometheus practices: prefix ``humwatch_``, base units (seconds, ratios of
full scale), ``_total`` on counters, ``_timestamp_seconds`` on Unix times. Per-machine
metrics carry one label, ``machine`` (the slug). A machine's site, area and type are labels
of ``humwatch_machine_info`` only and are joined in queries
(``... * on(machine) group_left(site) humwatch_machine_info``), so renaming a site never
splits a machine's series. Other labels come from small fixed sets; window and recording
ids never become labels (per-window detail lives in the database).

Per machine, pushed by the ingest path. The gauges are seeded from the database when the
process starts (``initialise_from_database``), and every counter of a known machine starts
at 0, so a restart neither blanks the dashboards nor hides a machine from ``rate()``:

==================================================== ========= ===================================
humwatch_machine_score{machine}                      gauge     score of the latest scored window
humwatch_machine_score_ratio{machine}                gauge     its score / baseline threshold
                                                               (> 1: the window is an outlier)
humwatch_machine_last_window_timestamp_seconds       gauge     end (Unix time) of the newest
{machine}                                                      window received, scored or not
humwatch_machine_audio_rms_ratio{machine}            gauge     RMS of the latest recording as
                                                               the model hears it (mono, model
                                                               rate), fraction of full scale;
                                                               ``20 * log10(x)`` is dBFS
humwatch_machine_audio_peak_ratio{machine}           gauge     peak of the latest recording,
                                                               fraction of full scale
humwatch_recordings_ingested_total{machine}          counter   recordings stored
humwatch_audio_ingested_seconds_total{machine}       counter   seconds of audio stored
humwatch_windows_ingested_total{machine}             counter   windows stored (enrolling too)
humwatch_windows_scored_total{machine}               counter   windows scored against a baseline
humwatch_outlier_windows_total{machine}              counter   scored windows with ratio > 1
humwatch_silent_windows_total{machine}               counter   windows quieter than
                                                               ``SILENCE_RMS`` (-60 dBFS)
humwatch_clipped_windows_total{machine}              counter   windows with at least
                                                               ``CLIPPED_FRACTION`` of their
                                                               samples at full scale
humwatch_window_score_ratio{machine}                 histogram score / threshold of every scored
                                                               window; buckets dense around 1
==================================================== ========= ===================================

Per machine, read from the database at every scrape, so they are exact whichever process
answers and follow every change (state, site, baseline activation) at once. Archived
machines are left out:

==================================================== ========= ===================================
humwatch_machine_info{machine,site,area,machine_type} gauge    always 1; descriptive labels
humwatch_machine_state{machine,state}                gauge     1 for the machine's state, 0 for
                                                               the other states (enrolling,
                                                               monitoring, paused)
humwatch_machine_baseline_version{machine}           gauge     active baseline version, 0: none
humwatch_machine_baseline_vectors{machine}           gauge     vectors in the active baseline
humwatch_machine_baseline_threshold{machine}         gauge     its threshold (score units; 1 for
                                                               a baseline within operating
                                                               conditions, whose scores are
                                                               ratios)
humwatch_machine_baseline_created_timestamp_seconds  gauge     when it was built (Unix time)
{machine}
humwatch_database_up                                 gauge     1 when this read succeeded
humwatch_machine_health{machine,state}               gauge     1 for the machine's health, 0 for
                                                               the others (enrolling, learning,
                                                               ok, warning, alarm, sensor_fault)
humwatch_machine_open_events{machine,kind,severity}  gauge     1 while the machine has an open
                                                               event of that kind (anomaly,
                                                               sensor) and severity (warning,
                                                               alarm), else 0; the alert rules
                                                               fire from it
humwatch_events_opened_total{kind}                   counter   events ever opened (counted in
                                                               the database: exact across
                                                               processes and restarts)
humwatch_events_escalated_total{kind}                counter   events ever escalated to alarm
humwatch_events_closed_total{kind,disposition}       counter   events closed by a person, by
                                                               disposition (confirmed_fault,
                                                               false_alarm, planned_work,
                                                               sensor_issue)
==================================================== ========= ===================================

Service:

==================================================== ========= ===================================
humwatch_http_request_duration_seconds               histogram time to answer, by ``method``,
{method,route,status}                                          ``route`` template
                                                               (``/v1/machines/{machine_id}``;
                                                               ``unmatched`` for unknown paths)
                                                               and HTTP ``status``
humwatch_ingest_rejections_total{reason}             counter   audio uploads refused (4xx), by
                                                               the API error code
                                                               (``payload_too_large``, ...)
humwatch_batch_uploads_total{outcome}                counter   recordings sent in batch uploads
                                                               (``POST /v1/recordings/batch``),
                                                               by ``outcome``: ``stored``,
                                                               ``already_stored``, ``refused``
                                                               (4xx: also counted in
                                                               ``humwatch_ingest_rejections_total``;
                                                               a refused batch counts once),
                                                               ``failed`` (5xx)
humwatch_ingest_lag_seconds                          histogram from the end of a recording's audio
                                                               to its windows being stored
humwatch_ingest_group_uploads                        histogram single uploads written per write
                                                               transaction (group commit; 1: an
                                                               upload alone)
humwatch_embedding_duration_seconds{embedder}        histogram time to embed one recording's
                                                               windows, by embedder name
humwatch_scoring_duration_seconds                    histogram time to score one recording's
                                                               windows against the baseline
humwatch_event_acknowledge_seconds{kind}             histogram time from an event's opening to
                                                               its acknowledgement
humwatch_build_info{version}                         gauge     always 1
==================================================== ========= ===================================

Queue, pushed by ``humwatch worker`` (service.stream.worker; served on its ``--metrics-port``):

==================================================== ========= ===================================
humwatch_queue_chunks_total{outcome}                 counter   chunks taken from JetStream, by
                                                               ``outcome``: ``stored``,
                                                               ``duplicate`` (already stored),
                                                               ``dead_lettered``, ``retried``
humwatch_queue_dead_letters_total{reason}            counter   chunks sent to the dead-letter
                                                               subject, by error code
humwatch_queue_redeliveries_total                    counter   chunks delivered more than once
                                                               (a worker died or timed out)
humwatch_queue_latency_seconds                       histogram from the agent's first publish of
                                                               a chunk to its windows stored
humwatch_queue_pending_messages                      gauge     chunks waiting for a worker
                                                               (sampled from the consumer)
==================================================== ========= ===================================

In a single process the standard ``process_*`` and ``python_*`` metrics are served too.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory at
start (``humwatch serve --workers N`` prepares one, see ``service.multiproc``),
prometheus_client's multiprocess mode is used: every process writes its values to files
there and ``/metrics``, whichever worker answers, sums counters and histograms over all
processes, takes the most recent value of the latest-score and level gauges and the maximum
of the timestamps. Without it, one process per replica is the rule: a worker started by a
process supervisor without the directory logs a warning, since each worker would then report
only its own requests.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service import __version__
from service.db import Database
from service.models import (
    DISPOSITIONS,
    EVENT_KINDS,
    EVENT_SEVERITIES,
    HEALTH_STATES,
    MACHINE_STATES,
)
from service.multiproc import MULTIPROC_ENV, multiprocess_dir
from service.repositories import events as events_repo
from service.repositories import metrics as metrics_repo

log = logging.getLogger("humwatch.metrics")

METRICS_PATH = "/metrics"
INGEST_ROUTE = ("POST", "/v1/machines/{machine_id}/recordings")

# Microphone health, judged per window on the audio the model hears (mono, model rate).
SILENCE_RMS = 10 ** (-60 / 20)  # -60 dBFS: a dead or unplugged microphone
CLIP_LEVEL = 0.99  # |sample| at or above this is at full scale
CLIPPED_FRACTION = 0.001  # 0.1% of a window's samples at full scale: the window is clipped
RATIO_CAP = 1e3  # a ratio from a zero threshold (inf) is counted as this

RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
ACK_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

# Created-time series (``*_created``) would double the series count for no dashboard use.
disable_created_metrics()

# -- per machine, pushed by ingest -----------------------------------------------------------

MACHINE_SCORE = Gauge(
    "humwatch_machine_score",
    "Anomaly score of the machine's latest scored window (higher is more anomalous).",
    ["machine"],
    multiprocess_mode="mostrecent",
)
MACHINE_SCORE_RATIO = Gauge(
    "humwatch_machine_score_ratio",
    "Score / baseline threshold of the machine's latest scored window (> 1: outlier).",
    ["machine"],
    multiprocess_mode="mostrecent",
)
LAST_WINDOW_TIMESTAMP = Gauge(
    "humwatch_machine_last_window_timestamp_seconds",
    "End (Unix time) of the newest window received for the machine, scored or not.",
    ["machine"],
    multiprocess_mode="max",
)
AUDIO_RMS = Gauge(
    "humwatch_machine_audio_rms_ratio",
    "RMS level of the machine's latest recording (mono, model rate) as a fraction of full "
    "scale; 20*log10 of it is dBFS.",
    ["machine"],
    multiprocess_mode="mostrecent",
)
AUDIO_PEAK = Gauge(
    "humwatch_machine_audio_peak_ratio",
    "Peak level of the machine's latest recording as a fraction of full scale.",
    ["machine"],
    multiprocess_mode="mostrecent",
)
RECORDINGS = Counter(
    "humwatch_recordings_ingested", "Recordings stored for the machine.", ["machine"]
)
AUDIO_SECONDS = Counter(
    "humwatch_audio_ingested_seconds", "Seconds of audio stored for the machine.", ["machine"]
)
WINDOWS_INGESTED = Counter(
    "humwatch_windows_ingested",
    "Windows stored for the machine (enrollment windows included).",
    ["machine"],
)
WINDOWS_SCORED = Counter(
    "humwatch_windows_scored", "Windows scored against the machine's baseline.", ["machine"]
)
OUTLIER_WINDOWS = Counter(
    "humwatch_outlier_windows",
    "Scored windows whose score exceeds the baseline threshold (ratio > 1).",
    ["machine"],
)
SILENT_WINDOWS = Counter(
    "humwatch_silent_windows",
    "Windows whose RMS is below -60 dBFS (microphone dead, muted or unplugged).",
    ["machine"],
)
CLIPPED_WINDOWS = Counter(
    "humwatch_clipped_windows",
    "Windows with at least 0.1% of their samples at full scale (microphone gain too high).",
    ["machine"],
)
RATIO_HISTOGRAM = Histogram(
    "humwatch_window_score_ratio",
    "Score / baseline threshold of every scored window (> 1: outlier).",
    ["machine"],
    buckets=RATIO_BUCKETS,
)

_MACHINE_METRICS = (
    RECORDINGS,
    AUDIO_SECONDS,
    WINDOWS_INGESTED,
    WINDOWS_SCORED,
    OUTLIER_WINDOWS,
    SILENT_WINDOWS,
    CLIPPED_WINDOWS,
    RATIO_HISTOGRAM,
)

# -- service -----------------------------------------------------------------------------------

HTTP_DURATION = Histogram(
    "humwatch_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
INGEST_REJECTIONS = Counter(
    "humwatch_ingest_rejections",
    "Audio uploads refused with a 4xx answer, by the API's error code.",
    ["reason"],
)
BATCH_OUTCOMES = ("stored", "already_stored", "refused", "failed")
BATCH_UPLOADS = Counter(
    "humwatch_batch_uploads",
    "Recordings sent in batch uploads (POST /v1/recordings/batch), by outcome (stored, "
    "already_stored, refused, failed).",
    ["outcome"],
)
for _outcome in BATCH_OUTCOMES:
    BATCH_UPLOADS.labels(_outcome)
INGEST_LAG = Histogram(
    "humwatch_ingest_lag_seconds",
    "Time from the end of a recording's audio to its windows being stored and scored.",
    buckets=LAG_BUCKETS,
)
INGEST_GROUP = Histogram(
    "humwatch_ingest_group_uploads",
    "Single uploads written per write transaction (group commit; 1: an upload alone).",
    buckets=GROUP_BUCKETS,
)
EMBEDDING_DURATION = Histogram(
    "humwatch_embedding_duration_seconds",
    "Time to embed the windows of one recording, by embedder.",
    ["embedder"],
    buckets=WORK_BUCKETS,
)
SCORING_DURATION = Histogram(
    "humwatch_scoring_duration_seconds",
    "Time to score the windows of one recording against the machine's baseline.",
    buckets=WORK_BUCKETS,
)
EVENT_ACKNOWLEDGE = Histogram(
    "humwatch_event_acknowledge_seconds",
    "Time from an event's opening to its acknowledgement, by event kind.",
    ["kind"],
    buckets=ACK_BUCKETS,
)
BUILD_INFO = Gauge(
    "humwatch_build_info",
    "Always 1; the humwatch version serving.",
    ["version"],
    multiprocess_mode="max",
)

# -- queue (humwatch worker) -------------------------------------------------------------------

QUEUE_OUTCOMES = ("stored", "duplicate", "dead_lettered", "retried")
QUEUE_CHUNKS = Counter(
    "humwatch_queue_chunks",
    "Chunks taken from the JetStream work queue, by outcome (stored, duplicate, "
    "dead_lettered, retried).",
    ["outcome"],
)
QUEUE_DEAD_LETTERS = Counter(
    "humwatch_queue_dead_letters",
    "Chunks sent to the dead-letter subject, by error code.",
    ["reason"],
)
QUEUE_REDELIVERIES = Counter(
    "humwatch_queue_redeliveries", "Chunks delivered to a worker more than once."
)
QUEUE_LATENCY = Histogram(
    "humwatch_queue_latency_seconds",
    "Time from the agent's first publish of a chunk to its windows being stored.",
    buckets=LAG_BUCKETS,
)
QUEUE_PENDING = Gauge(
    "humwatch_queue_pending_messages",
    "Chunks waiting in the work queue for a worker (sampled from the durable consumer).",
    multiprocess_mode="mostrecent",
)
for _outcome in QUEUE_OUTCOMES:
    QUEUE_CHUNKS.labels(_outcome)


def _label(value: str | None, fallback: str = "other") -> str:
    """A bounded label value: lower-case identifiers pass, anything else is ``fallback``."""
    return value if value is not None and _LABEL_VALUE.match(value) else fallback


# -- feeding -------------------------------------------------------------------------------------

_last_window_lock = threading.Lock()
_last_window: dict[str, float] = {}


def touch_machine(machine_id: str) -> None:
    """Create the machine's counters and histogram at 0, so ``rate()`` sees it from the start."""
    for metric in _MACHINE_METRICS:
        metric.labels(machine_id)


def _advance_last_window(machine_id: str, timestamp: float) -> None:
    with _last_window_lock:
        if timestamp >= _last_window.get(machine_id, -math.inf):
            _last_window[machine_id] = timestamp
            LAST_WINDOW_TIMESTAMP.labels(machine_id).set(timestamp)


def window_health(
    waveform: np.ndarray, start_samples: Sequence[int], window_samples: int
) -> tuple[int, int]:
    """Silent and clipped windows of a recording.

    Parameters
    ----------
    waveform : np.ndarray, shape (n_samples,), float in [-1, 1]
    start_samples : sequence of int, shape (n_windows,)
    window_samples : int

    Returns
    -------
    (silent, clipped) : tuple of int
        Windows with RMS below ``SILENCE_RMS``; windows with at least ``CLIPPED_FRACTION`` of
        their samples at ``CLIP_LEVEL`` or above.
    """
    silent = clipped = 0
    x = np.asarray(waveform)
    for start in start_samples:
        window = x[int(start) : int(start) + window_samples]
        if window.size == 0:
            continue
        rms = float(np.linalg.norm(window)) / math.sqrt(window.size)
        silent += rms < SILENCE_RMS
        at_full_scale = np.count_nonzero(np.abs(window) >= CLIP_LEVEL)
        clipped += at_full_scale >= CLIPPED_FRACTION * window.size
    return int(silent), int(clipped)


def audio_levels(waveform: np.ndarray) -> tuple[float, float] | None:
    """``(rms, peak)`` of a recording's waveform (the microphone level gauges), None when
    it holds no sample."""
    x = np.asarray(waveform)
    if not x.size:
        return None
    # max |x| from the max and min (exact, no |x| array); abs() keeps -0.0 out
    peak = abs(max(float(np.max(x)), -float(np.min(x))))
    return float(np.linalg.norm(x)) / math.sqrt(x.size), peak


def observe_recording(
    machine_id: str,
    windows: Sequence[Any],
    *,
    audio_seconds: float,
    waveform: np.ndarray | None,
    start_samples: Sequence[int],
    window_samples: int,
    ended_at: Any | None = None,
    flags: Any | None = None,
    levels: tuple[float, float] | None = None,
) -> None:
    """Account one stored recording: its audio, windows, scores and microphone health.

    ``windows`` are the stored windows in time order (``end_at``, ``score``, ``ratio``,
    ``is_outlier``; score None while enrolling); ``waveform``, ``start_samples`` and
    ``window_samples`` are the audio the windows were cut from; ``ended_at`` (aware
    datetime) is when the recording's audio ended, for the ingest lag; ``flags`` (the
    windows' ``detectors.sensor.WindowFlags``, when the caller has them) saves judging the
    windows' silence and clipping again; ``levels`` (``audio_levels`` of the waveform, when
    the caller has them) stand for the waveform, which may then be None. The recording is
    already stored: a failure here is logged and never fails the upload.
    """
    observe_recordings(
        machine_id,
        [
            (windows, audio_seconds, waveform, start_samples, window_samples, ended_at, flags)
            + (levels,)
        ],
    )


def observe_recordings(machine_id: str, recordings: Sequence[tuple]) -> None:
    """``observe_recording`` for several recordings of one machine stored together, in time
    order, each ``(windows, audio_seconds, waveform, start_samples, window_samples, ended_at,
    flags)`` or the same with ``levels`` last: counters rise once by the sums, histograms
    take every window, gauges end where one recording at a time would leave them (the last
    one's RMS and peak)."""
    try:
        _observe_recordings(machine_id, recordings)
    except Exception:  # noqa: BLE001 - metrics must never fail a stored upload
        log.exception("could not account the recording of %s in the metrics", machine_id)


def _observe_recordings(machine_id: str, recordings: Sequence[tuple]) -> None:
    touch_machine(machine_id)
    audio = n_windows = n_scored = outliers = silent = clipped = 0
    last_scored = last_levels = None
    newest = -math.inf
    now = time.time()
    histogram = RATIO_HISTOGRAM.labels(machine_id)
    for recording in recordings:
        windows, seconds, waveform, start_samples, window_samples, ended_at, flags = recording[:7]
        levels = recording[7] if len(recording) > 7 else None
        audio += max(float(seconds), 0.0)
        n_windows += len(windows)
        scored = [w for w in windows if w.score is not None]
        if scored:
            n_scored += len(scored)
            outliers += sum(1 for w in scored if w.is_outlier)
            for w in scored:
                histogram.observe(_finite_ratio(w.ratio))
            last_scored = scored[-1]
        if windows:
            newest = max(newest, max(w.end_at for w in windows).timestamp())
        if flags is not None:
            silent += int(np.count_nonzero(flags.silent))
            clipped += int(np.count_nonzero(flags.clipped))
        else:
            s, c = window_health(waveform, start_samples, window_samples)
            silent, clipped = silent + s, clipped + c
        if levels is not None or (waveform is not None and np.asarray(waveform).size):
            last_levels = levels, waveform  # the level gauges: the last recording heard
        if ended_at is not None:
            INGEST_LAG.observe(max(now - ended_at.timestamp(), 0.0))
    RECORDINGS.labels(machine_id).inc(len(recordings))
    AUDIO_SECONDS.labels(machine_id).inc(audio)
    WINDOWS_INGESTED.labels(machine_id).inc(n_windows)
    if n_scored:
        WINDOWS_SCORED.labels(machine_id).inc(n_scored)
        OUTLIER_WINDOWS.labels(machine_id).inc(outliers)
        MACHINE_SCORE.labels(machine_id).set(float(last_scored.score))
        MACHINE_SCORE_RATIO.labels(machine_id).set(_finite_ratio(last_scored.ratio))
    if newest > -math.inf:
        _advance_last_window(machine_id, newest)
    SILENT_WINDOWS.labels(machine_id).inc(silent)
    CLIPPED_WINDOWS.labels(machine_id).inc(clipped)
    if last_levels is not None:
        levels, waveform = last_levels
        rms, peak = levels if levels is not None else audio_levels(waveform)
        AUDIO_RMS.labels(machine_id).set(rms)
        AUDIO_PEAK.labels(machine_id).set(peak)


def _finite_ratio(ratio: float | None) -> float:
    if ratio is None or math.isnan(ratio):
        return RATIO_CAP
    return min(float(ratio), RATIO_CAP)


def observe_acknowledgement(kind: str, seconds: float) -> None:
    """An event was acknowledged ``seconds`` after it opened (never fails the request)."""
    try:
        EVENT_ACKNOWLEDGE.labels(_label(kind)).observe(max(float(seconds), 0.0))
    except Exception:  # noqa: BLE001 - metrics must never fail a stored acknowledgement
        log.exception("could not account an acknowledgement")


@contextmanager
def time_embedding(embedder_name: str) -> Iterator[None]:
    """Time one recording's embedding into ``humwatch_embedding_duration_seconds``."""
    with EMBEDDING_DURATION.labels(_label(embedder_name)).time():
        yield


@contextmanager
def time_scoring() -> Iterator[None]:
    """Time one recording's scoring into ``humwatch_scoring_duration_seconds``."""
    with SCORING_DURATION.time():
        yield


def initialise_from_database(db: Database) -> int:
    """Seed the per-machine gauges from the database and start every machine's counters at 0.

    Called once when the process starts; returns the number of machines seen. A database
    that cannot be read only costs the seeding (logged), never the start.
    """
    try:
        with db.session() as session:
            machines = metrics_repo.machine_facts(session)
            for machine in machines:
                touch_machine(machine.id)
                last = metrics_repo.last_window(session, machine.id)
                if last is not None:
                    _advance_last_window(machine.id, last.end_at.timestamp())
                scored = metrics_repo.last_scored_window(session, machine.id)
                if scored is not None:
                    MACHINE_SCORE.labels(machine.id).set(float(scored.score))
                    MACHINE_SCORE_RATIO.labels(machine.id).set(_finite_ratio(scored.ratio))
    except Exception:  # noqa: BLE001 - metrics must never stop the service from starting
        log.exception("could not seed the machine metrics from the database")
        return 0
    return len(machines)


# -- scrape-time facts from the database -------------------------------------------------------


class MachineFactsCollector:
    """Machine info, state and active baseline, read from the database at every scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "humwatch_machine_info",
            "Always 1; a machine's descriptive labels (join on machine).",
            labels=["machine", "site", "area", "machine_type"],
        )
        state = GaugeMetricFamily(
            "humwatch_machine_state",
            "1 for the machine's current state, 0 for the others.",
            labels=["machine", "state"],
        )
        version = GaugeMetricFamily(
            "humwatch_machine_baseline_version",
            "Active baseline version of the machine; 0 when it has none.",
            labels=["machine"],
        )
        vectors = GaugeMetricFamily(
            "humwatch_machine_baseline_vectors",
            "Vectors in the machine's active baseline.",
            labels=["machine"],
        )
        threshold = GaugeMetricFamily(
            "humwatch_machine_baseline_threshold",
            "Score threshold of the machine's active baseline (ratio 1).",
            labels=["machine"],
        )
        created = GaugeMetricFamily(
            "humwatch_machine_baseline_created_timestamp_seconds",
            "When the machine's active baseline was built (Unix time).",
            labels=["machine"],
        )
        up = GaugeMetricFamily(
            "humwatch_database_up", "1 when the service could read its database at this scrape."
        )
        try:
            with self.db.session() as session:
                rows = metrics_repo.machine_facts(session)
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape must still answer
            log.exception("could not read machine facts for /metrics")
            rows = []
            up.add_metric([], 0)
        for row in rows:
            m = row.id
            info.add_metric([m, row.site or "", row.area or "", row.machine_type or ""], 1)
            for name in MACHINE_STATES:
                state.add_metric([m, name], 1 if row.state == name else 0)
            version.add_metric([m], row.baseline_version or 0)
            if row.baseline_version is not None:
                vectors.add_metric([m], row.baseline_vectors)
                threshold.add_metric([m], row.baseline_threshold)
                created.add_metric([m], row.baseline_created_at.timestamp())
        yield from (info, state, version, vectors, threshold, created, up)


class EventsCollector:
    """Machine health, open events and event counts, read from the database at every scrape.

    Every machine gets every health state and every (kind, severity) pair, 0 or 1, so alert
    expressions and dashboards have data before anything happens; the counters are the
    database's counts, so they are exact whichever process answers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        health = GaugeMetricFamily(
            "humwatch_machine_health",
            "1 for the machine's health state, 0 for the others.",
            labels=["machine", "state"],
        )
        open_events = GaugeMetricFamily(
            "humwatch_machine_open_events",
            "1 while the machine has an open event of this kind and severity.",
            labels=["machine", "kind", "severity"],
        )
        opened = CounterMetricFamily(
            "humwatch_events_opened", "Events opened, by kind.", labels=["kind"]
        )
        escalated = CounterMetricFamily(
            "humwatch_events_escalated", "Events escalated to alarm, by kind.", labels=["kind"]
        )
        closed = CounterMetricFamily(
            "humwatch_events_closed",
            "Events closed by a person, by kind and disposition.",
            labels=["kind", "disposition"],
        )
        try:
            with self.db.session() as session:
                machines = metrics_repo.machine_facts(session)
                counts = events_repo.counts(session)
        except Exception:  # noqa: BLE001 - a scrape must still answer (humwatch_database_up)
            log.exception("could not read events for /metrics")
            return
        states = {m: h for m, h in counts["health"]}
        live = {(m, k, s) for m, k, s, _ in counts["open"]}
        for machine in machines:
            current = states.get(machine.id) or (
                "enrolling" if machine.state == "enrolling" else "ok"
            )
            for state in HEALTH_STATES:
                health.add_metric([machine.id, state], 1 if state == current else 0)
            for kind in EVENT_KINDS:
                for severity in EVENT_SEVERITIES:
                    value = 1 if (machine.id, kind, severity) in live else 0
                    open_events.add_metric([machine.id, kind, severity], value)
        by_kind = {k: 0 for k in EVENT_KINDS}
        for kind, _cause, n in counts["opened"]:
            by_kind[kind] += n
        for kind, n in by_kind.items():
            opened.add_metric([kind], n)
        up = dict.fromkeys(EVENT_KINDS, 0) | {k: n for k, n in counts["escalated"]}
        for kind, n in up.items():
            escalated.add_metric([kind], n)
        done = {(k, d): 0 for k in EVENT_KINDS for d in DISPOSITIONS}
        for kind, disposition, n in counts["closed"]:
            done[(kind, disposition)] = n
        for (kind, disposition), n in done.items():
            closed.add_metric([kind, disposition], n)
        yield from (health, open_events, opened, escalated, closed)


class _Forward:
    """Collects another registry (the process-global one) into a per-scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def render(db: Database) -> bytes:
    """The exposition text: this process's (or, in multiprocess mode, every process's)
    metrics plus the machine facts read from ``db``."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(MachineFactsCollector(db))
    registry.register(EventsCollector(db))
    return generate_latest(registry)


# -- HTTP ----------------------------------------------------------------------------------------


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's path template with its router prefixes, or ``unmatched``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    path = scope.get("path", "")
    try:
        concrete = template.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return template
    # Routers that are not flattened give the template without their prefixes: the prefix
    # is what the request path has before the concrete route (static, so bounded).
    if path.endswith(concrete) and len(path) > len(concrete):
        return path[: len(path) - len(concrete)] + template
    return template


class HttpMetricsMiddleware:
    """Pure ASGI middleware: request durations by route template and status, and the reason
    of every refused audio upload (the ``error`` code of the one JSON error shape)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rejection: list[bytes] | None = None

        async def send_and_watch(message) -> None:
            nonlocal status, rejection
            if message["type"] == "http.response.start":
                status = message["status"]
                if 400 <= status < 500 and self._is_ingest(scope):
                    rejection = []
            elif message["type"] == "http.response.body" and rejection is not None:
                rejection.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            method = scope.get("method", "GET")
            HTTP_DURATION.labels(
                method if method in HTTP_METHODS else "other",
                route_template(scope),
                str(status),
            ).observe(time.perf_counter() - start)
            if rejection is not None:
                INGEST_REJECTIONS.labels(_rejection_reason(b"".join(rejection))).inc()

    @staticmethod
    def _is_ingest(scope) -> bool:
        return (scope.get("method"), route_template(scope)) == INGEST_ROUTE


def observe_batch(statuses: Iterable[tuple[int, str | None]]) -> None:
    """A batch upload's items, ``(status, error code)`` each: their outcomes, and the
    refusals (4xx) by reason as the single upload's are counted."""
    counts = dict.fromkeys(BATCH_OUTCOMES, 0)
    for status, code in statuses:
        if status == 201:
            counts["stored"] += 1
        elif status == 200:
            counts["already_stored"] += 1
        elif 400 <= status < 500:
            counts["refused"] += 1
            INGEST_REJECTIONS.labels(_label(code, "unknown")).inc()
        else:
            counts["failed"] += 1
    for outcome, count in counts.items():
        if count:
            BATCH_UPLOADS.labels(outcome).inc(count)


def _rejection_reason(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "unknown"
    return _label(code if isinstance(code, str) else None, "unknown")


def install(app: FastAPI) -> None:
    """Add the HTTP middleware and ``GET /metrics`` to ``app`` (its ``state.runtime.db`` is
    read at every scrape)."""
    directory = multiprocess_dir()
    if directory is not None and not os.path.isdir(directory):
        raise RuntimeError(
            f"{MULTIPROC_ENV}={directory} is not a directory: create it (empty) before the "
            "workers start, or unset it for a single process"
        )
    if directory is None and multiprocessing.parent_process() is not None:
        log.warning(
            "running in a child process without %s: if several workers serve this app, each "
            "reports only its own metrics; start with `humwatch serve --workers N`",
            MULTIPROC_ENV,
        )
    BUILD_INFO.labels(__version__).set(1)
    app.add_middleware(HttpMetricsMiddleware)

    def metrics_endpoint(request: Request) -> Response:
        return Response(render(request.app.state.runtime.db), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, metrics_endpoint, methods=["GET"], include_in_schema=False)
