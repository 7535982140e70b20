"""Write the humwatch Grafana dashboards (``dashboards/grafana/dashboards/*.json``).

The dashboards are built with ``grafana-foundation-sdk``, the Grafana project's typed Python
SDK (the version pinned in ``pyproject.toml``; its builders target Grafana 11.6), so that
the three dashboards share one style, one data source variable and the same site join; edit
this script, not the JSON, then run ``make dashboards`` (or ``python dashboards/build.py``).
``--check`` exits 1 when the committed files differ from what this script writes (the tests
run it).

Every query reads the metrics of ``service/metrics.py`` or the recording rules of
``dashboards/prometheus/rules/recording.yml``; the live test evaluates every one of them,
annotations included, against a real Prometheus scraping a real service.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import typing
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import (
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"

DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["humwatch"]
INGEST_ROUTE = "/v1/machines/{machine_id}/recordings"
BATCH_ROUTE = "/v1/recordings/batch"

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
STATES = (("enrolling", "blue"), ("monitoring", "green"), ("paused", "text"))
# The service's health (humwatch_machine_health, one state at 1) as one number per machine.
HEALTH = (
    ("enrolling", "blue"),
    ("learning", "blue"),
    ("ok", "green"),
    ("warning", "orange"),
    ("alarm", "red"),
    ("sensor_fault", "purple"),
)


def health_code(selector: str = "") -> str:
    """0..5 per machine: the index in HEALTH of the machine's health state."""
    sel = f"{selector}, " if selector else ""
    return " + ".join(
        f'{i} * max by (machine) (humwatch_machine_health{{{sel}state="{state}"}})'
        for i, (state, _) in enumerate(HEALTH)
        if i
    )


Steps = typing.Sequence[tuple[str, float | None]]
RATIO_STEPS: Steps = (("green", None), ("orange", 1), ("red", 1.5))
OUTLIER_STEPS: Steps = (("green", None), ("orange", 0.1), ("red", 0.5))
STALE_STEPS: Steps = (("green", None), ("orange", 120), ("red", 600))


# -- building blocks -------------------------------------------------------------------------


def query(
    expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = "time_series"
) -> prometheus.Dataquery:
    q = (
        prometheus.Dataquery()
        .ref_id(ref)
        .datasource(DS)
        .editor_mode(QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend)
        .format(PromQueryFormat(fmt))
    )
    return q.instant() if instant else q.range()


def thresholds(steps: Steps) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for c, v in steps])
    )


def value_map(states: typing.Sequence[tuple[str, str]]) -> list[model.ValueMap]:
    """Value i -> (text, colour) of ``states[i]``."""
    return [
        model.ValueMap(
            options={
                str(i): model.ValueMappingResult(text=text, color=color, index=i)
                for i, (text, color) in enumerate(states)
            }
        )
    ]


def link(title: str, url: str, *, new_tab: bool = False) -> dash.DashboardLink:
    return dash.DashboardLink(title).url(url).target_blank(new_tab)


def prop(name: str, value: object) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val=name, value=value)


def cells(kind: str) -> object:
    """Table cell options: coloured background or coloured text."""
    if kind == "background":
        return common.TableColoredBackgroundCellOptions()
    return common.TableColorTextCellOptions()


def transformation(kind: str, options: dict[str, object]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=kind, options=options)


def _panel(builder, title: str, w: int, h: int, description: str):
    return builder.title(title).description(description).datasource(DS).span(w).height(h)


def timeseries_panel(
    title: str,
    targets: list[prometheus.Dataquery],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    description: str = "",
    line_at: float | None = None,
    links: list[dash.DashboardLink] | None = None,
    bars: bool = False,
    soft_min: float | None = None,
    soft_max: float | None = None,
    decimals: int | None = None,
) -> timeseries.Panel:
    panel = (
        _panel(timeseries.Panel(), title, w, h, description)
        .targets(targets)
        .unit(unit)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(40 if bars else 10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
                if line_at is not None
                else common.GraphThresholdsStyleMode.OFF
            )
        )
        .thresholds(
            thresholds(
                [("transparent", None)] + ([("red", line_at)] if line_at is not None else [])
            )
        )
        .data_links(links or [])
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if soft_min is not None:
        panel.axis_soft_min(soft_min)
    if soft_max is not None:
        panel.axis_soft_max(soft_max)
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def stat_panel(
    title: str,
    expr: str,
    *,
    w: int = 4,
    h: int = 4,
    unit: str = "short",
    description: str = "",
    legend: str = "",
    steps: Steps = (("green", None),),
    mappings: list[model.ValueMap] | None = None,
    decimals: int | None = None,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
) -> stat.Panel:
    panel = (
        _panel(stat.Panel(), title, w, h, description)
        .with_target(query(expr, legend, instant=True))
        .unit(unit)
        .thresholds(thresholds(steps))
        .mappings(mappings or [])
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .reduce_options(
            common_b.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        )
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(text_mode)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
    )
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def health_timeline(title: str, expr: str, *, description: str) -> statetimeline.Panel:
    """Health state over time, one lane per machine, coloured as the API names it."""
    return (
        _panel(statetimeline.Panel(), title, 24, 8, description)
        .with_target(query(expr, "{{machine}}"))
        .mappings(value_map(HEALTH))
        .thresholds(thresholds((("text", None),)))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(80)
        .line_width(0)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )


class PrometheusAnnotationQuery(model.AnnotationQuery):
    """An annotation read from Prometheus: the SDK's AnnotationQuery keeps only ``expr``; the
    Prometheus data source also reads the title, text, tags and step below."""

    def __init__(self) -> None:
        super().__init__()
        self.step = "1m"
        self.title_format = ""
        self.text_format = ""
        self.tag_keys = ""
        self.use_value_for_time = False

    def to_json(self) -> dict[str, object]:
        return super().to_json() | {
            "step": self.step,
            "titleFormat": self.title_format,
            "textFormat": self.text_format,
            "tagKeys": self.tag_keys,
            "useValueForTime": self.use_value_for_time,
        }


class PrometheusAnnotation(dash.AnnotationQuery):
    """Builder of a PrometheusAnnotationQuery, in the SDK's builder style."""

    _internal: PrometheusAnnotationQuery

    def __init__(self) -> None:
        self._internal = PrometheusAnnotationQuery()

    def step(self, step: str) -> typing.Self:
        self._internal.step = step
        return self

    def title_format(self, title_format: str) -> typing.Self:
        self._internal.title_format = title_format
        return self

    def text_format(self, text_format: str) -> typing.Self:
        self._internal.text_format = text_format
        return self

    def tag_keys(self, tag_keys: str) -> typing.Self:
        self._internal.tag_keys = tag_keys
        return self


def event_annotation(kind: str, color: str, selector: str) -> PrometheusAnnotation:
    """The machine's open events of ``kind`` as annotation regions: the service's own event
    state (``humwatch_machine_open_events`` is 1 while an event of that kind and severity is
    open), so a warning that escalates shows as a warning region followed by an alarm one."""
    return (
        PrometheusAnnotation()
        .name(f"{kind.capitalize()} events")
        .datasource(DS)
        .enable(True)
        .hide(False)
        .icon_color(color)
        .expr(
            "max by (machine, severity) "
            f'(humwatch_machine_open_events{{{selector}, kind="{kind}"}}) == 1'
        )
        .step("1m")
        .title_format(f"{kind} event ({{{{severity}}}})")
        .text_format(f"open {kind} event: GET /v1/events?machine={{{{machine}}}}&kind={kind}")
        .tag_keys("severity")
    )


def datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .hide(model.VariableHide.DONT_HIDE)
        .include_all(False)
        .multi(False)
    )


def query_variable(
    name: str, label: str, expr: str, *, multi: bool = False, include_all: bool = False
) -> dash.QueryVariable:
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": expr, "refId": f"{name}-variable"})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .hide(model.VariableHide.DONT_HIDE)
        .include_all(include_all)
        .multi(multi)
    )
    return variable.all_value(".*") if include_all else variable


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list,
    variables: list,
    *,
    time_from: str,
    annotations: list[dash.AnnotationQuery] = (),
) -> model.Dashboard:
    builder = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .version(1)
        .time(time_from, "now")
        .fiscal_year_start_month(0)
        .live_now(False)
        .annotation(
            dash.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .link(
            dash.DashboardLink("humwatch")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(False)
            .target_blank(False)
            .icon("external link")
        )
        .variables(variables)
    )
    for annotation in annotations:
        builder.annotation(annotation)
    # The SDK lays panels out left to right, wrapping at 24 columns; ids number them.
    for pid, panel in enumerate(panels, start=1):
        builder.with_panel(panel.id(pid))
    return builder.build()


# -- the dashboards ----------------------------------------------------------------------------


def plant_overview() -> model.Dashboard:
    detail_link = link(
        "Machine detail",
        "/d/humwatch-machine/humwatch-machine-detail?var-machine=${__value.raw}"
        "&${datasource:queryparam}&${__url_time_range}",
    )

    def instant(expr: str, ref: str) -> prometheus.Dataquery:
        return query(expr + SITE_JOIN, ref=ref, instant=True, fmt="table")

    columns = {  # refId: (column name, position)
        "A": ("Median ratio (5m)", 3),
        "B": ("Latest ratio", 4),
        "C": ("Outliers (5m)", 5),
        "D": ("State", 6),
        "G": ("Health", 2),
        "E": ("Newest audio", 7),
        "F": ("Baseline age", 8),
    }
    machines = (
        _panel(
            table.Panel(),
            "Machines, most anomalous first",
            24,
            10,
            "Health (as the API and the alert rules have it), median score ratio of the last "
            "5 minutes (above 1: more than half of the windows are outliers), the latest "
            "window's ratio, the outlier fraction, state, time since the newest audio and the "
            "baseline's age. Click a machine for its detail.",
        )
        .targets(
            [
                instant("max by (machine) (machine:humwatch_window_score_ratio:p50_rate5m)", "A"),
                instant("max by (machine) (humwatch_machine_score_ratio)", "B"),
                instant("max by (machine) (machine:humwatch_outlier_windows:ratio_rate5m)", "C"),
                instant(f"({STATE_CODE})", "D"),
                instant(f"({health_code()})", "G"),
                instant(
                    "time() - max by (machine) (humwatch_machine_last_window_timestamp_seconds)",
                    "E",
                ),
                instant(
                    "time() - max by (machine) "
                    "(humwatch_machine_baseline_created_timestamp_seconds)",
                    "F",
                ),
            ]
        )
        .transformations(
            [
                transformation("merge", {}),
                transformation("sortBy", {"sort": [{"field": "Value #A", "desc": True}]}),
                transformation(
                    "organize",
                    {
                        "excludeByName": {"Time": True},
                        "indexByName": {
                            "machine": 0,
                            "site": 1,
                            **{f"Value #{ref}": pos for ref, (_, pos) in columns.items()},
                        },
                        "renameByName": {
                            f"Value #{ref}": name for ref, (name, _) in columns.items()
                        },
                    },
                ),
            ]
        )
        .align(common.FieldTextAlignment.AUTO)
        .cell_options(common.TableAutoCellOptions())
        .override_by_name("machine", [prop("links", [detail_link.build()])])
        .override_by_name(
            "Median ratio (5m)",
            [
                prop("decimals", 2),
                prop("thresholds", thresholds(RATIO_STEPS).build()),
                prop("custom.cellOptions", cells("background")),
            ],
        )
        .override_by_name(
            "Latest ratio",
            [
                prop("decimals", 2),
                prop("thresholds", thresholds(RATIO_STEPS).build()),
                prop("custom.cellOptions", cells("text")),
            ],
        )
        .override_by_name(
            "Outliers (5m)",
            [
                prop("unit", "percentunit"),
                prop("decimals", 1),
                prop("thresholds", thresholds(OUTLIER_STEPS).build()),
                prop("custom.cellOptions", cells("text")),
            ],
        )
        .override_by_name(
            "State",
            [prop("mappings", value_map(STATES)), prop("custom.cellOptions", cells("text"))],
        )
        .override_by_name(
            "Health",
            [prop("mappings", value_map(HEALTH)), prop("custom.cellOptions", cells("background"))],
        )
        .override_by_name(
            "Newest audio",
            [
                prop("unit", "s"),
                prop("decimals", 0),
                prop("thresholds", thresholds(STALE_STEPS).build()),
                prop("custom.cellOptions", cells("text")),
            ],
        )
        .override_by_name("Baseline age", [prop("unit", "s"), prop("decimals", 0)])
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
        .footer(common_b.TableFooterOptions().show(False).reducer(["sum"]))
        .sort_by([common_b.TableSortByFieldState().display_name("Median ratio (5m)").desc(True)])
    )
    alerts = (
        _panel(
            table.Panel(),
            "Firing humwatch alerts",
            12,
            8,
            "Alerts firing now (see dashboards/runbook.md for what to do).",
        )
        .with_target(
            query(
                'max by (alertname, severity, machine, site) (ALERTS{alertname=~"Humwatch.*", '
                'alertstate="firing", site=~"$site"})',
                instant=True,
                fmt="table",
            )
        )
        .with_transformation(
            transformation("organize", {"excludeByName": {"Time": True, "Value": True}})
        )
        .align(common.FieldTextAlignment.AUTO)
        .override_by_name("machine", [prop("links", [detail_link.build()])])
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
    )
    panels = [
        stat_panel(
            "Machines monitoring",
            'count((max by (machine) (humwatch_machine_state{state="monitoring"}) == 1)'
            f"{SITE_JOIN}) or vector(0)",
            steps=(("blue", None),),
        ),
        stat_panel(
            "Machines sounding abnormal",
            f"count((machine:humwatch_window_score_ratio:p50_rate5m > 1){SITE_JOIN}) or vector(0)",
            description="Median score ratio of the last 5 minutes above 1.",
            steps=(("green", None), ("red", 1)),
        ),
        stat_panel(
            "Open anomaly events",
            "count((max by (machine) "
            f'(humwatch_machine_open_events{{kind="anomaly"}}) == 1){SITE_JOIN}) or vector(0)',
            description="Machines with an open anomaly event (warning or alarm): what people "
            "are paged for. GET /v1/events?state=open lists them.",
            steps=(("green", None), ("red", 1)),
        ),
        stat_panel(
            "Sensor faults",
            'count((max by (machine) (humwatch_machine_health{state="sensor_fault"}) == 1)'
            f"{SITE_JOIN}) or vector(0)",
            description="Machines whose microphone is silent, clipped or stale; never counted "
            "as machine anomalies.",
            steps=(("green", None), ("purple", 1)),
        ),
        stat_panel(
            "Machines without audio for 10 minutes",
            "count((time() - max by (machine) "
            f"(humwatch_machine_last_window_timestamp_seconds) > 600){SITE_JOIN}) "
            "or vector(0)",
            steps=(("green", None), ("orange", 1)),
        ),
        stat_panel(
            "Firing humwatch alerts",
            'count(ALERTS{alertname=~"Humwatch.*", alertstate="firing", site=~"$site"}) '
            "or vector(0)",
            steps=(("green", None), ("red", 1)),
        ),
        machines,
        health_timeline(
            "Health over time",
            f"({health_code()}){SITE_JOIN}",
            description="Each machine's health as the service reports it "
            "(humwatch_machine_health): enrolling, learning, ok, warning, alarm, sensor_fault.",
        ),
        timeseries_panel(
            "Median score ratio, 10 highest machines (1 = threshold)",
            [
                query(
                    f"topk(10, machine:humwatch_window_score_ratio:p50_rate5m{SITE_JOIN})",
                    "{{machine}}",
                )
            ],
            h=9,
            line_at=1,
            soft_min=0,
            soft_max=1.5,
            decimals=2,
        ),
        timeseries_panel(
            "Outlier windows, fraction of windows scored",
            [query(f"machine:humwatch_outlier_windows:ratio_rate5m{SITE_JOIN}", "{{machine}}")],
            h=9,
            unit="percentunit",
            soft_min=0,
            soft_max=0.1,
        ),
        timeseries_panel(
            "Events opened and closed (whole service)",
            [
                query(
                    "sum by (kind) (increase(humwatch_events_opened_total[$__rate_interval]))",
                    "opened {{kind}}",
                    ref="A",
                ),
                query(
                    "sum by (kind) (increase(humwatch_events_escalated_total[$__rate_interval]))",
                    "escalated {{kind}}",
                    ref="B",
                ),
                query(
                    "sum by (disposition) "
                    "(increase(humwatch_events_closed_total[$__rate_interval]))",
                    "closed {{disposition}}",
                    ref="C",
                ),
            ],
            description="Events per interval; closes by disposition (false_alarm feeds the "
            "next baseline). Not filtered by site: these counters carry no machine label.",
            bars=True,
            decimals=0,
        ),
        timeseries_panel(
            "Audio received (seconds of audio per second)",
            [query(f"machine:humwatch_audio_ingested_seconds:rate5m{SITE_JOIN}", "{{machine}}")],
            description="About 1 for a microphone that streams continuously.",
            decimals=2,
        ),
        alerts,
    ]
    return dashboard(
        "humwatch-plant",
        "humwatch / Plant overview",
        "Every machine: its health and open events, how abnormal it sounds, its state and "
        "whether its audio still arrives.",
        panels,
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


def machine_detail() -> model.Dashboard:
    m = 'machine="$machine"'
    windows_url = "${api_url}/v1/machines/${machine}/windows?from=${__from}&to=${__value.time}"
    windows_link = link("Windows of $machine up to this time (API)", windows_url, new_tab=True)
    outliers_link = link(
        "Outlier windows of $machine up to this time (API)",
        windows_url + "&outliers_only=true",
        new_tab=True,
    )
    panels = [
        stat_panel("Health", health_code(m), mappings=value_map(HEALTH)),
        stat_panel(
            "Median ratio (5m)",
            f"max(machine:humwatch_window_score_ratio:p50_rate5m{{{m}}})",
            steps=RATIO_STEPS,
            decimals=2,
        ),
        stat_panel(
            "Outlier windows (5m)",
            f"max(machine:humwatch_outlier_windows:ratio_rate5m{{{m}}})",
            unit="percentunit",
            steps=OUTLIER_STEPS,
            decimals=1,
        ),
        stat_panel(
            "Newest audio",
            f"time() - max(humwatch_machine_last_window_timestamp_seconds{{{m}}})",
            unit="s",
            steps=STALE_STEPS,
            decimals=0,
        ),
        stat_panel(
            "Baseline version",
            f"max(humwatch_machine_baseline_version{{{m}}})",
            steps=(("red", None), ("blue", 1)),
            description="0: no active baseline.",
            decimals=0,
        ),
        stat_panel(
            "Baseline age",
            f"time() - max(humwatch_machine_baseline_created_timestamp_seconds{{{m}}})",
            unit="s",
            steps=(("blue", None),),
            decimals=0,
        ),
        timeseries_panel(
            "Score ratio (1 = threshold). Click a point for the windows at that time",
            [
                query(
                    f"max(machine:humwatch_window_score_ratio:p50_rate5m{{{m}}})",
                    "median (5m)",
                    ref="A",
                ),
                query(
                    f"max(machine:humwatch_window_score_ratio:p90_rate5m{{{m}}})",
                    "90th percentile (5m)",
                    ref="B",
                ),
                query(f"max(humwatch_machine_score_ratio{{{m}}})", "latest window", ref="C"),
            ],
            w=24,
            h=9,
            description="Ratio of each window's score to the baseline threshold; the red "
            "area is above the threshold. The machine's open events are annotation regions "
            "(anomaly in red, sensor in purple, tagged with their severity). The data links "
            "open the API's windows listing for this machine, newest first, ending at the "
            "clicked time.",
            line_at=1,
            links=[windows_link, outliers_link],
            soft_min=0,
            soft_max=1.5,
            decimals=2,
        ),
        timeseries_panel(
            "Windows scored and outliers per second",
            [
                query(
                    f"sum(rate(humwatch_windows_scored_total{{{m}}}[$__rate_interval]))",
                    "scored",
                    ref="A",
                ),
                query(
                    f"sum(rate(humwatch_outlier_windows_total{{{m}}}[$__rate_interval]))",
                    "outliers",
                    ref="B",
                ),
            ],
            unit="ops",
            links=[outliers_link],
            bars=True,
        ),
        _panel(
            heatmap.Panel(),
            "Score ratio distribution",
            12,
            8,
            "Windows per ratio bucket; the buckets are dense around 1.",
        )
        .with_target(
            query(
                f"sum by (le) (rate(humwatch_window_score_ratio_bucket{{{m}}}[$__rate_interval]))",
                "{{le}}",
                fmt="heatmap",
            )
        )
        .calculate(False)
        .cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges").steps(64)
        )
        .y_axis(heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT).unit("short"))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
        .show_legend()
        .hide_y_histogram(),
        timeseries_panel(
            "Audio level (dBFS, as the model hears it)",
            [
                query(f"20 * log10(max(humwatch_machine_audio_rms_ratio{{{m}}}))", "RMS", ref="A"),
                query(
                    f"20 * log10(max(humwatch_machine_audio_peak_ratio{{{m}}}))", "peak", ref="B"
                ),
            ],
            unit="dB",
            description="Latest recording; below -60 dBFS windows count as silent, "
            "samples at full scale (0 dBFS) as clipped.",
            soft_min=-70,
            soft_max=0,
        ),
        timeseries_panel(
            "Microphone health: silent and clipped windows",
            [
                query(
                    f"max(machine:humwatch_silent_windows:ratio_rate5m{{{m}}})", "silent", ref="A"
                ),
                query(
                    f"max(machine:humwatch_clipped_windows:ratio_rate5m{{{m}}})",
                    "clipped",
                    ref="B",
                ),
            ],
            unit="percentunit",
            soft_min=0,
            soft_max=0.1,
        ),
        timeseries_panel(
            "Anomaly score and baseline threshold",
            [
                query(f"max(humwatch_machine_score{{{m}}})", "latest score", ref="A"),
                query(f"max(humwatch_machine_baseline_threshold{{{m}}})", "threshold", ref="B"),
            ],
            description="The threshold moves when a baseline version is activated.",
        ),
        timeseries_panel(
            "Baseline version and size",
            [
                query(f"max(humwatch_machine_baseline_version{{{m}}})", "version", ref="A"),
                query(f"max(humwatch_machine_baseline_vectors{{{m}}})", "vectors", ref="B"),
            ],
            description="A step in the version is a rebuild or a rollback.",
            decimals=0,
        ),
    ]
    api = "http://127.0.0.1:8000"
    api_url = (
        dash.TextBoxVariable("api_url")
        .label("API URL")
        .description("Base URL of the humwatch API, for the data links to its windows.")
        .default_value(api)
        .current(model.VariableOption(selected=True, text=api, value=api))
        .hide(model.VariableHide.DONT_HIDE)
    )
    return dashboard(
        "humwatch-machine",
        "humwatch / Machine detail",
        "One machine: health, score ratio over time with the threshold, outliers, audio "
        "level, microphone health and baseline; its events as annotations.",
        panels,
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


def service_health() -> model.Dashboard:
    j = 'job="$job"'
    ingest = f'{j}, method="POST", route="{INGEST_ROUTE}"'
    batch = f'{j}, method="POST", route="{BATCH_ROUTE}"'

    def quantile(q: float, by: str, metric: str, selector: str = j) -> str:
        return (
            f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{selector}}}"
            "[$__rate_interval])))"
        )

    panels = [
        stat_panel(
            "Targets up",
            f"sum(up{{{j}}}) or vector(0)",
            steps=(("red", None), ("green", 1)),
            decimals=0,
        ),
        stat_panel(
            "Database readable",
            f"min(humwatch_database_up{{{j}}})",
            mappings=value_map((("no", "red"), ("yes", "green"))),
        ),
        stat_panel(
            "Requests per second",
            f"sum(job:humwatch_http_requests:rate5m{{{j}}})",
            unit="reqps",
            steps=(("blue", None),),
        ),
        stat_panel(
            "Server errors (5m)",
            f"max(job:humwatch_http_request_errors:ratio_rate5m{{{j}}})",
            unit="percentunit",
            steps=(("green", None), ("orange", 0.01), ("red", 0.05)),
        ),
        stat_panel(
            "Uploads refused (5m)",
            f"max(job:humwatch_ingest_rejections:ratio_rate5m{{{j}}})",
            unit="percentunit",
            steps=(("green", None), ("orange", 0.1)),
        ),
        stat_panel(
            "Version",
            f"max by (version) (humwatch_build_info{{{j}}})",
            legend="{{version}}",
            text_mode=common.BigValueTextMode.NAME,
            steps=(("blue", None),),
        ),
        timeseries_panel(
            "Requests per second by route and status",
            [
                query(
                    "sum by (route, status) (rate(humwatch_http_request_duration_seconds_count"
                    f"{{{j}}}[$__rate_interval]))",
                    "{{status}} {{route}}",
                )
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Latency by route (p50, p99)",
            [
                query(
                    quantile(0.99, "route, le", "humwatch_http_request_duration_seconds"),
                    "p99 {{route}}",
                    ref="A",
                ),
                query(
                    quantile(0.5, "route, le", "humwatch_http_request_duration_seconds"),
                    "p50 {{route}}",
                    ref="B",
                ),
            ],
            unit="s",
        ),
        timeseries_panel(
            "Errors per second by route and status (4xx, 5xx)",
            [
                query(
                    "sum by (route, status) (rate(humwatch_http_request_duration_seconds_count"
                    f'{{{j}, status=~"[45].."}}[$__rate_interval]))',
                    "{{status}} {{route}}",
                )
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Audio uploads refused per second, by reason",
            [
                query(
                    f"sum by (reason) (rate(humwatch_ingest_rejections_total{{{j}}}"
                    "[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            unit="reqps",
            bars=True,
        ),
        timeseries_panel(
            "Ingest lag: end of the audio to its windows stored (p50, p99)",
            [
                query(quantile(0.5, "le", "humwatch_ingest_lag_seconds"), "p50", ref="A"),
                query(quantile(0.99, "le", "humwatch_ingest_lag_seconds"), "p99", ref="B"),
            ],
            unit="s",
            description="Large when recorders upload late or back-fill old audio.",
        ),
        timeseries_panel(
            "Embedding and scoring time per upload (p99)",
            [
                query(
                    quantile(0.99, "embedder, le", "humwatch_embedding_duration_seconds"),
                    "embed {{embedder}}",
                    ref="A",
                ),
                query(quantile(0.99, "le", "humwatch_scoring_duration_seconds"), "score", ref="B"),
            ],
            unit="s",
        ),
        timeseries_panel(
            "Write transactions of single uploads (group commit)",
            [
                query(
                    f"sum(rate(humwatch_ingest_group_uploads_sum{{{j}}}[$__rate_interval])) / "
                    f"sum(rate(humwatch_ingest_group_uploads_count{{{j}}}[$__rate_interval]))",
                    "uploads per transaction",
                    ref="A",
                ),
                query(
                    f"sum(rate(humwatch_ingest_group_uploads_count{{{j}}}[$__rate_interval]))",
                    "transactions/s",
                    ref="B",
                ),
            ],
            description="Single uploads that wait for their write transaction together share "
            "one (HUMWATCH_GROUP_COMMIT). Near 1 with few concurrent clients; it grows with "
            "load, and Postgres then commits that many times less often. Enrollment uploads and, "
            "in the learning period, an upload that starts a run keep their own transactions "
            "and are not counted.",
        ),
        timeseries_panel(
            "Upload rate and audio throughput",
            [
                query(f"sum(job:humwatch_ingest_requests:rate5m{{{j}}})", "uploads/s", ref="A"),
                query(
                    f"sum(rate(humwatch_audio_ingested_seconds_total{{{j}}}[$__rate_interval]))",
                    "audio seconds/s",
                    ref="B",
                ),
                query(
                    f"sum(rate(humwatch_windows_scored_total{{{j}}}[$__rate_interval]))",
                    "windows scored/s",
                    ref="C",
                ),
            ],
        ),
        timeseries_panel(
            "Upload latency (p99) and ingest server errors",
            [
                query(
                    quantile(0.99, "le", "humwatch_http_request_duration_seconds", ingest),
                    "p99 upload latency (s)",
                    ref="A",
                ),
                query(
                    f"max(job:humwatch_ingest_server_errors:ratio_rate5m{{{j}}})",
                    "5xx fraction of uploads",
                    ref="B",
                ),
                query(
                    quantile(0.99, "le", "humwatch_http_request_duration_seconds", batch),
                    "p99 batch upload latency (s)",
                    ref="C",
                ),
            ],
        ),
    ]
    return dashboard(
        "humwatch-service",
        "humwatch / Service health",
        "The humwatch service: requests, latency, errors, refused uploads, ingest lag.",
        panels,
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
    return {
        name: json.dumps(build(), cls=JSONEncoder, indent=2) + "\n"
        for name, build in DASHBOARDS.items()
    }


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
        sdk = importlib.metadata.version("grafana-foundation-sdk")
        print(
            "stale (run python dashboards/build.py with the grafana-foundation-sdk version "
            f"pinned in pyproject.toml; this one is {sdk}): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
