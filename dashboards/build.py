"""Write the humwatch Grafana dashboards (``dashboards/grafana/dashboards/*.json``).

The JSON files are generated so that the three dashboards share one style, one data source
variable and the same site join; edit this script, not the JSON, then run
``make dashboards`` (or ``python dashboards/build.py``). ``--check`` exits 1 when the
committed files differ from what this script writes (the tests run it).

Every query reads the metrics of ``service/metrics.py`` or the recording rules of
``dashboards/prometheus/rules/recording.yml``; the live test evaluates every one of them
against a real Prometheus scraping a real service.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["humwatch"]
INGEST_ROUTE = "/v1/machines/{machine_id}/recordings"

# Per-machine series carry only `machine`; the site comes from humwatch_machine_info. Joining
# keeps the machines of the selected sites (archived machines have no info series).
SITE_JOIN = (
    " * on (machine) group_left (site)"
    ' max by (machine, site) (humwatch_machine_info{site=~"$site"})'
)
STATE_CODE = (
    'max by (machine) (humwatch_machine_state{state="monitoring"})'
    ' + 2 * max by (machine) (humwatch_machine_state{state="paused"})'
)
STATE_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "enrolling", "color": "blue", "index": 0},
            "1": {"text": "monitoring", "color": "green", "index": 1},
            "2": {"text": "paused", "color": "text", "index": 2},
        },
    }
]
# The service's health (humwatch_machine_health, one state at 1) as one number per machine.
HEALTH_STATES = ("enrolling", "learning", "ok", "warning", "alarm", "sensor_fault")
HEALTH_CODE = " + ".join(
    f'{i} * max by (machine) (humwatch_machine_health{{state="{state}"}})'
    for i, state in enumerate(HEALTH_STATES)
    if i
)
HEALTH_COLORS = ("blue", "blue", "green", "orange", "red", "purple")
HEALTH_MAPPING = [
    {
        "type": "value",
        "options": {
            str(i): {"text": state, "color": HEALTH_COLORS[i], "index": i}
            for i, state in enumerate(HEALTH_STATES)
        },
    }
]
RATIO_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": 1},
        {"color": "red", "value": 1.5},
    ],
}
STALE_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": 120},
        {"color": "red", "value": 600},
    ],
}


# -- building blocks -------------------------------------------------------------------------


def target(
    expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = "time_series"
) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    line_at: float | None = None,
    links: list[dict[str, Any]] | None = None,
    bars: bool = False,
    soft_min: float | None = None,
    soft_max: float | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 40 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": soft_min,
        "axisSoftMax": soft_max,
        "thresholdsStyle": {"mode": "line+area" if line_at is not None else "off"},
    }
    steps = [("transparent", None)] + ([("red", line_at)] if line_at is not None else [])
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {k: v for k, v in custom.items() if v is not None},
        "thresholds": thresholds(*steps),
        "links": links or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    description: str = "",
    legend: str = "",
    steps: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    text_mode: str = "auto",
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": steps or thresholds(("green", None)),
        "mappings": mappings or [],
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def override(name: str, **properties: Any) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k, "value": v} for k, v in properties.items()],
    }


def layout(panels: list[tuple[int, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Place (width, height, panel) left to right, wrapping at 24 columns; number them."""
    out, x, y, row_height = [], 0, 0, 0
    for pid, (w, h, panel) in enumerate(panels, start=1):
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append({"id": pid, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel})
        x += w
        row_height = max(row_height, h)
    return out


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
        "options": [],
    }


def query_variable(
    name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False
) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "regex": "",
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def event_annotation(kind: str, color: str, selector: str) -> dict[str, Any]:
    """The machine's open events of ``kind`` as annotation regions (the service's own state)."""
    return {
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "name": f"{kind.capitalize()} events",
        "expr": "max by (machine, severity) "
        f'(humwatch_machine_open_events{{{selector}, kind="{kind}"}}) == 1',
        "step": "1m",
        "titleFormat": f"{kind} event ({{{{severity}}}})",
        "textFormat": f"open {kind} event: GET /v1/events?machine={{{{machine}}}}&kind={kind}",
        "tagKeys": "severity",
        "useValueForTime": False,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    time_from: str = "now-6h",
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *(annotations or []),
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "title": "humwatch",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": variables},
        "panels": panels,
    }


# -- the dashboards ----------------------------------------------------------------------------


def plant_overview() -> dict[str, Any]:
    detail_link = {
        "title": "Machine detail",
        "url": "/d/humwatch-machine/humwatch-machine-detail?var-machine=${__value.raw}"
        "&${datasource:queryparam}&${__url_time_range}",
    }
    table = {
        "type": "table",
        "title": "Machines, most anomalous first",
        "description": "Median score ratio of the last 5 minutes (above 1: more than half of "
        "the windows are outliers), the latest window's ratio, the outlier fraction, state, "
        "time since the newest audio and the baseline's age. Click a machine for its detail.",
        "datasource": DS,
        "targets": [
            target(
                f"max by (machine) (machine:humwatch_window_score_ratio:p50_rate5m){SITE_JOIN}",
                ref="A",
                instant=True,
                fmt="table",
            ),
            target(
                f"max by (machine) (humwatch_machine_score_ratio){SITE_JOIN}",
                ref="B",
                instant=True,
                fmt="table",
            ),
            target(
                f"max by (machine) (machine:humwatch_outlier_windows:ratio_rate5m){SITE_JOIN}",
                ref="C",
                instant=True,
                fmt="table",
            ),
            target(f"({STATE_CODE}){SITE_JOIN}", ref="D", instant=True, fmt="table"),
            target(f"({HEALTH_CODE}){SITE_JOIN}", ref="G", instant=True, fmt="table"),
            target(
                "time() - max by (machine) (humwatch_machine_last_window_timestamp_seconds)"
                + SITE_JOIN,
                ref="E",
                instant=True,
                fmt="table",
            ),
            target(
                "time() - max by (machine) (humwatch_machine_baseline_created_timestamp_seconds)"
                + SITE_JOIN,
                ref="F",
                instant=True,
                fmt="table",
            ),
        ],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "sortBy", "options": {"sort": [{"field": "Value #A", "desc": True}]}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {
                        "machine": 0,
                        "site": 1,
                        "Value #G": 2,
                        "Value #A": 3,
                        "Value #B": 4,
                        "Value #C": 5,
                        "Value #D": 6,
                        "Value #E": 7,
                        "Value #F": 8,
                    },
                    "renameByName": {
                        "Value #A": "Median ratio (5m)",
                        "Value #B": "Latest ratio",
                        "Value #C": "Outliers (5m)",
                        "Value #D": "State",
                        "Value #G": "Health",
                        "Value #E": "Newest audio",
                        "Value #F": "Baseline age",
                    },
                },
            },
        ],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
            "overrides": [
                override("machine", links=[detail_link]),
                override(
                    "Median ratio (5m)",
                    decimals=2,
                    thresholds=RATIO_THRESHOLDS,
                    **{"custom.cellOptions": {"type": "color-background"}},
                ),
                override(
                    "Latest ratio",
                    decimals=2,
                    thresholds=RATIO_THRESHOLDS,
                    **{"custom.cellOptions": {"type": "color-text"}},
                ),
                override(
                    "Outliers (5m)",
                    unit="percentunit",
                    decimals=1,
                    thresholds=thresholds(("green", None), ("orange", 0.1), ("red", 0.5)),
                    **{"custom.cellOptions": {"type": "color-text"}},
                ),
                override(
                    "State",
                    mappings=STATE_MAPPING,
                    **{"custom.cellOptions": {"type": "color-text"}},
                ),
                override(
                    "Health",
                    mappings=HEALTH_MAPPING,
                    **{"custom.cellOptions": {"type": "color-background"}},
                ),
                override(
                    "Newest audio",
                    unit="s",
                    decimals=0,
                    thresholds=STALE_THRESHOLDS,
                    **{"custom.cellOptions": {"type": "color-text"}},
                ),
                override("Baseline age", unit="s", decimals=0),
            ],
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            "sortBy": [{"displayName": "Median ratio (5m)", "desc": True}],
        },
    }
    alerts_table = {
        "type": "table",
        "title": "Firing humwatch alerts",
        "description": "Alerts firing now (see dashboards/runbook.md for what to do).",
        "datasource": DS,
        "targets": [
            target(
                'max by (alertname, severity, machine, site) (ALERTS{alertname=~"Humwatch.*", '
                'alertstate="firing", site=~"$site"})',
                instant=True,
                fmt="table",
            )
        ],
        "transformations": [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True}},
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": [override("machine", links=[detail_link])]},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }
    panels = [
        (
            6,
            4,
            stat(
                "Machines monitoring",
                'count((max by (machine) (humwatch_machine_state{state="monitoring"}) == 1)'
                f"{SITE_JOIN}) or vector(0)",
                steps=thresholds(("blue", None)),
            ),
        ),
        (
            6,
            4,
            stat(
                "Machines sounding abnormal",
                f"count((machine:humwatch_window_score_ratio:p50_rate5m > 1){SITE_JOIN}) "
                "or vector(0)",
                description="Median score ratio of the last 5 minutes above 1.",
                steps=thresholds(("green", None), ("red", 1)),
            ),
        ),
        (
            6,
            4,
            stat(
                "Machines without audio for 10 minutes",
                "count((time() - max by (machine) "
                f"(humwatch_machine_last_window_timestamp_seconds) > 600){SITE_JOIN}) "
                "or vector(0)",
                steps=thresholds(("green", None), ("orange", 1)),
            ),
        ),
        (
            6,
            4,
            stat(
                "Firing humwatch alerts",
                'count(ALERTS{alertname=~"Humwatch.*", alertstate="firing", site=~"$site"}) '
                "or vector(0)",
                steps=thresholds(("green", None), ("red", 1)),
            ),
        ),
        (24, 10, table),
        (
            12,
            9,
            timeseries(
                "Median score ratio, 10 highest machines (1 = threshold)",
                [
                    target(
                        f"topk(10, machine:humwatch_window_score_ratio:p50_rate5m{SITE_JOIN})",
                        "{{machine}}",
                    )
                ],
                line_at=1,
                soft_min=0,
                soft_max=1.5,
                decimals=2,
            ),
        ),
        (
            12,
            9,
            timeseries(
                "Outlier windows, fraction of windows scored",
                [
                    target(
                        f"machine:humwatch_outlier_windows:ratio_rate5m{SITE_JOIN}",
                        "{{machine}}",
                    )
                ],
                unit="percentunit",
                soft_min=0,
                soft_max=0.1,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Audio received (seconds of audio per second)",
                [
                    target(
                        f"machine:humwatch_audio_ingested_seconds:rate5m{SITE_JOIN}",
                        "{{machine}}",
                    )
                ],
                description="About 1 for a microphone that streams continuously.",
                decimals=2,
            ),
        ),
        (12, 8, alerts_table),
    ]
    return dashboard(
        "humwatch-plant",
        "humwatch / Plant overview",
        "Every machine: how abnormal it sounds, its state and whether its audio still arrives.",
        layout(panels),
        [
            datasource_variable(),
            query_variable(
                "site",
                "Site",
                "label_values(humwatch_machine_info, site)",
                multi=True,
                include_all=True,
            ),
        ],
        time_from="now-6h",
    )


def machine_detail() -> dict[str, Any]:
    m = 'machine="$machine"'
    windows_link = {
        "title": "Windows of $machine up to this time (API)",
        "url": "${api_url}/v1/machines/${machine}/windows?from=${__from}&to=${__value.time}",
        "targetBlank": True,
    }
    outliers_link = {
        "title": "Outlier windows of $machine up to this time (API)",
        "url": "${api_url}/v1/machines/${machine}/windows?from=${__from}&to=${__value.time}"
        "&outliers_only=true",
        "targetBlank": True,
    }
    panels = [
        (
            4,
            4,
            stat("Health", HEALTH_CODE.replace("state=", f"{m}, state="), mappings=HEALTH_MAPPING),
        ),
        (
            4,
            4,
            stat(
                "Median ratio (5m)",
                f"max(machine:humwatch_window_score_ratio:p50_rate5m{{{m}}})",
                steps=RATIO_THRESHOLDS,
                decimals=2,
            ),
        ),
        (
            4,
            4,
            stat(
                "Outlier windows (5m)",
                f"max(machine:humwatch_outlier_windows:ratio_rate5m{{{m}}})",
                unit="percentunit",
                steps=thresholds(("green", None), ("orange", 0.1), ("red", 0.5)),
                decimals=1,
            ),
        ),
        (
            4,
            4,
            stat(
                "Newest audio",
                f"time() - max(humwatch_machine_last_window_timestamp_seconds{{{m}}})",
                unit="s",
                steps=STALE_THRESHOLDS,
                decimals=0,
            ),
        ),
        (
            4,
            4,
            stat(
                "Baseline version",
                f"max(humwatch_machine_baseline_version{{{m}}})",
                steps=thresholds(("red", None), ("blue", 1)),
                description="0: no active baseline.",
                decimals=0,
            ),
        ),
        (
            4,
            4,
            stat(
                "Baseline age",
                f"time() - max(humwatch_machine_baseline_created_timestamp_seconds{{{m}}})",
                unit="s",
                steps=thresholds(("blue", None)),
                decimals=0,
            ),
        ),
        (
            24,
            9,
            timeseries(
                "Score ratio (1 = threshold). Click a point for the windows at that time",
                [
                    target(
                        f"max(machine:humwatch_window_score_ratio:p50_rate5m{{{m}}})",
                        "median (5m)",
                        ref="A",
                    ),
                    target(
                        f"max(machine:humwatch_window_score_ratio:p90_rate5m{{{m}}})",
                        "90th percentile (5m)",
                        ref="B",
                    ),
                    target(f"max(humwatch_machine_score_ratio{{{m}}})", "latest window", ref="C"),
                ],
                description="Ratio of each window's score to the baseline threshold; the red "
                "area is above the threshold. The data links open the API's windows listing "
                "for this machine, newest first, ending at the clicked time.",
                line_at=1,
                links=[windows_link, outliers_link],
                soft_min=0,
                soft_max=1.5,
                decimals=2,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Windows scored and outliers per second",
                [
                    target(
                        f"sum(rate(humwatch_windows_scored_total{{{m}}}[$__rate_interval]))",
                        "scored",
                        ref="A",
                    ),
                    target(
                        f"sum(rate(humwatch_outlier_windows_total{{{m}}}[$__rate_interval]))",
                        "outliers",
                        ref="B",
                    ),
                ],
                unit="ops",
                links=[outliers_link],
                bars=True,
            ),
        ),
        (
            12,
            8,
            {
                "type": "heatmap",
                "title": "Score ratio distribution",
                "description": "Windows per ratio bucket; the buckets are dense around 1.",
                "datasource": DS,
                "targets": [
                    target(
                        "sum by (le) (rate(humwatch_window_score_ratio_bucket"
                        f"{{{m}}}[$__rate_interval]))",
                        "{{le}}",
                        fmt="heatmap",
                    )
                ],
                "fieldConfig": {"defaults": {}, "overrides": []},
                "options": {
                    "calculate": False,
                    "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                    "yAxis": {"axisPlacement": "left", "unit": "short"},
                    "rowsFrame": {"layout": "auto"},
                    "legend": {"show": True},
                    "tooltip": {"show": True, "yHistogram": False},
                },
            },
        ),
        (
            12,
            8,
            timeseries(
                "Audio level (dBFS, as the model hears it)",
                [
                    target(
                        f"20 * log10(max(humwatch_machine_audio_rms_ratio{{{m}}}))",
                        "RMS",
                        ref="A",
                    ),
                    target(
                        f"20 * log10(max(humwatch_machine_audio_peak_ratio{{{m}}}))",
                        "peak",
                        ref="B",
                    ),
                ],
                unit="dB",
                description="Latest recording; below -60 dBFS windows count as silent, "
                "samples at full scale (0 dBFS) as clipped.",
                soft_min=-70,
                soft_max=0,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Microphone health: silent and clipped windows",
                [
                    target(
                        f"max(machine:humwatch_silent_windows:ratio_rate5m{{{m}}})",
                        "silent",
                        ref="A",
                    ),
                    target(
                        f"max(machine:humwatch_clipped_windows:ratio_rate5m{{{m}}})",
                        "clipped",
                        ref="B",
                    ),
                ],
                unit="percentunit",
                soft_min=0,
                soft_max=0.1,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Anomaly score and baseline threshold",
                [
                    target(f"max(humwatch_machine_score{{{m}}})", "latest score", ref="A"),
                    target(
                        f"max(humwatch_machine_baseline_threshold{{{m}}})",
                        "threshold",
                        ref="B",
                    ),
                ],
                description="The threshold moves when a baseline version is activated.",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Baseline version and size",
                [
                    target(f"max(humwatch_machine_baseline_version{{{m}}})", "version", ref="A"),
                    target(f"max(humwatch_machine_baseline_vectors{{{m}}})", "vectors", ref="B"),
                ],
                description="A step in the version is a rebuild or a rollback.",
                decimals=0,
            ),
        ),
    ]
    api_url = {
        "name": "api_url",
        "label": "API URL",
        "type": "textbox",
        "query": "http://127.0.0.1:8000",
        "current": {"text": "http://127.0.0.1:8000", "value": "http://127.0.0.1:8000"},
        "options": [
            {"selected": True, "text": "http://127.0.0.1:8000", "value": "http://127.0.0.1:8000"}
        ],
        "hide": 0,
        "description": "Base URL of the humwatch API, for the data links to its windows.",
    }
    return dashboard(
        "humwatch-machine",
        "humwatch / Machine detail",
        "One machine: health, score ratio over time with the threshold, outliers, audio "
        "level, microphone health and baseline; its events as annotations.",
        layout(panels),
        [
            datasource_variable(),
            query_variable("machine", "Machine", "label_values(humwatch_machine_info, machine)"),
            api_url,
        ],
        time_from="now-3h",
        annotations=[
            event_annotation("anomaly", "red", m),
            event_annotation("sensor", "purple", m),
        ],
    )


def service_health() -> dict[str, Any]:
    j = 'job="$job"'
    ingest = f'{j}, method="POST", route="{INGEST_ROUTE}"'
    panels = [
        (
            4,
            4,
            stat(
                "Targets up",
                f"sum(up{{{j}}}) or vector(0)",
                steps=thresholds(("red", None), ("green", 1)),
                decimals=0,
            ),
        ),
        (
            4,
            4,
            stat(
                "Database readable",
                f"min(humwatch_database_up{{{j}}})",
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "no", "color": "red"},
                            "1": {"text": "yes", "color": "green"},
                        },
                    }
                ],
            ),
        ),
        (
            4,
            4,
            stat(
                "Requests per second",
                f"sum(job:humwatch_http_requests:rate5m{{{j}}})",
                unit="reqps",
                steps=thresholds(("blue", None)),
            ),
        ),
        (
            4,
            4,
            stat(
                "Server errors (5m)",
                f"max(job:humwatch_http_request_errors:ratio_rate5m{{{j}}})",
                unit="percentunit",
                steps=thresholds(("green", None), ("orange", 0.01), ("red", 0.05)),
            ),
        ),
        (
            4,
            4,
            stat(
                "Uploads refused (5m)",
                f"max(job:humwatch_ingest_rejections:ratio_rate5m{{{j}}})",
                unit="percentunit",
                steps=thresholds(("green", None), ("orange", 0.1)),
            ),
        ),
        (
            4,
            4,
            stat(
                "Version",
                f"max by (version) (humwatch_build_info{{{j}}})",
                legend="{{version}}",
                text_mode="name",
                steps=thresholds(("blue", None)),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Requests per second by route and status",
                [
                    target(
                        "sum by (route, status) (rate(humwatch_http_request_duration_seconds_count"
                        f"{{{j}}}[$__rate_interval]))",
                        "{{status}} {{route}}",
                    )
                ],
                unit="reqps",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Latency by route (p50, p99)",
                [
                    target(
                        "histogram_quantile(0.99, sum by (route, le) (rate("
                        f"humwatch_http_request_duration_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "p99 {{route}}",
                        ref="A",
                    ),
                    target(
                        "histogram_quantile(0.5, sum by (route, le) (rate("
                        f"humwatch_http_request_duration_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "p50 {{route}}",
                        ref="B",
                    ),
                ],
                unit="s",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Errors per second by route and status (4xx, 5xx)",
                [
                    target(
                        "sum by (route, status) (rate(humwatch_http_request_duration_seconds_count"
                        f'{{{j}, status=~"[45].."}}[$__rate_interval]))',
                        "{{status}} {{route}}",
                    )
                ],
                unit="reqps",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Audio uploads refused per second, by reason",
                [
                    target(
                        f"sum by (reason) (rate(humwatch_ingest_rejections_total{{{j}}}"
                        "[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                unit="reqps",
                bars=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Ingest lag: end of the audio to its windows stored (p50, p99)",
                [
                    target(
                        "histogram_quantile(0.5, sum by (le) (rate("
                        f"humwatch_ingest_lag_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "p50",
                        ref="A",
                    ),
                    target(
                        "histogram_quantile(0.99, sum by (le) (rate("
                        f"humwatch_ingest_lag_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "p99",
                        ref="B",
                    ),
                ],
                unit="s",
                description="Large when recorders upload late or back-fill old audio.",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Embedding and scoring time per upload (p99)",
                [
                    target(
                        "histogram_quantile(0.99, sum by (embedder, le) (rate("
                        f"humwatch_embedding_duration_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "embed {{embedder}}",
                        ref="A",
                    ),
                    target(
                        "histogram_quantile(0.99, sum by (le) (rate("
                        f"humwatch_scoring_duration_seconds_bucket{{{j}}}[$__rate_interval])))",
                        "score",
                        ref="B",
                    ),
                ],
                unit="s",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Upload rate and audio throughput",
                [
                    target(
                        f"sum(job:humwatch_ingest_requests:rate5m{{{j}}})", "uploads/s", ref="A"
                    ),
                    target(
                        f"sum(rate(humwatch_audio_ingested_seconds_total{{{j}}}[$__rate_interval]))",
                        "audio seconds/s",
                        ref="B",
                    ),
                    target(
                        f"sum(rate(humwatch_windows_scored_total{{{j}}}[$__rate_interval]))",
                        "windows scored/s",
                        ref="C",
                    ),
                ],
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Upload latency (p99) and ingest server errors",
                [
                    target(
                        "histogram_quantile(0.99, sum by (le) (rate("
                        f"humwatch_http_request_duration_seconds_bucket{{{ingest}}}[$__rate_interval])))",
                        "p99 upload latency (s)",
                        ref="A",
                    ),
                    target(
                        f"max(job:humwatch_ingest_server_errors:ratio_rate5m{{{j}}})",
                        "5xx fraction of uploads",
                        ref="B",
                    ),
                ],
            ),
        ),
    ]
    return dashboard(
        "humwatch-service",
        "humwatch / Service health",
        "The humwatch service: requests, latency, errors, refused uploads, ingest lag.",
        layout(panels),
        [
            datasource_variable(),
            query_variable("job", "Job", "label_values(humwatch_build_info, job)"),
        ],
        time_from="now-3h",
    )


DASHBOARDS = {
    "plant-overview.json": plant_overview,
    "machine-detail.json": machine_detail,
    "service-health.json": service_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (run python dashboards/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
