"""Grafana dashboards and provisioning: generated files are current, the structure a stock
Grafana imports, the panels the issue asks for, the data link into the API, and every
metric name the dashboards and rules use exists in ``/metrics``."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timedelta

import pytest
import yaml

from tests.observability.metrics_helpers import scrape
from tests.observability.promql import (
    DASHBOARDS,
    PROMETHEUS_SERIES,
    dashboard_expressions,
    load_dashboards,
    metric_names,
    recorded_names,
    rule_expressions,
    substitute_grafana,
)
from tests.service.audio import wav
from tests.service.conftest import T0, at, enroll, upload

PROVISIONING = DASHBOARDS / "grafana" / "provisioning"


def _build_module():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _panels(board: dict) -> list[dict]:
    return board["panels"]


def _links(panel: dict) -> list[dict]:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    return defaults.get("links", [])


def test_committed_dashboards_are_generated():
    assert _build_module().main(["--check"]) == 0, "run: python dashboards/build.py"


def test_regenerating_gives_no_diff(tmp_path, monkeypatch):
    """Writing the dashboards into an empty directory gives the committed files byte for byte
    (and --check notices a hand edit)."""
    build = _build_module()
    monkeypatch.setattr(build, "OUT", tmp_path)
    assert build.main([]) == 0
    written = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in (DASHBOARDS / "grafana" / "dashboards").glob("*")}
    assert written == committed
    edited = tmp_path / "machine-detail.json"
    edited.write_text(edited.read_text().replace('"refresh": "30s"', '"refresh": "1m"'))
    assert build.main(["--check"]) == 1


def test_committed_json_is_what_the_sdk_models_read():
    """Decoded into the SDK's typed models and encoded again, each dashboard is unchanged: no
    field the Grafana 11.6 schema lacks, except the Prometheus annotation fields that the SDK's
    AnnotationQuery does not model (build.py adds them)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    prometheus_only = {"step", "titleFormat", "textFormat", "tagKeys", "useValueForTime"}
    for name, board in load_dashboards().items():
        again = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
        for annotation in board["annotations"]["list"]:
            if annotation["datasource"]["type"] == "prometheus":
                assert prometheus_only <= set(annotation), (name, annotation["name"])
                for key in prometheus_only:
                    del annotation[key]
        assert again == board, name


def test_dashboards_are_importable_as_is():
    boards = load_dashboards()
    assert set(boards) == {"plant-overview.json", "machine-detail.json", "service-health.json"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["title"].startswith("humwatch / ") and "humwatch" in board["tags"], name
        assert "id" not in board, "an id would clash on import; the uid identifies it"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in _panels(board)]
        assert len(set(ids)) == len(ids), name
        for panel in _panels(board):
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert target["expr"].strip()


def test_plant_overview():
    board = load_dashboards()["plant-overview.json"]
    site = {v["name"]: v for v in board["templating"]["list"]}["site"]
    assert site["multi"] and site["includeAll"] and site["allValue"] == ".*"
    table = next(p for p in _panels(board) if p["type"] == "table")
    exprs = " ".join(t["expr"] for t in table["targets"])
    for needed in (
        "p50_rate5m",  # latest ratio and median
        "humwatch_machine_score_ratio",
        "humwatch_outlier_windows:ratio_rate5m",  # outlier rate
        "humwatch_machine_state",  # state
        "humwatch_machine_last_window_timestamp_seconds",  # staleness
    ):
        assert needed in exprs
    assert all('site=~"$site"' in t["expr"] for t in table["targets"])
    # Machines in trouble first.
    assert table["options"]["sortBy"] == [{"displayName": "Median ratio (5m)", "desc": True}]
    sort = next(t for t in table["transformations"] if t["id"] == "sortBy")
    assert sort["options"]["sort"] == [{"field": "Value #A", "desc": True}]


def test_machine_detail():
    board = load_dashboards()["machine-detail.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["machine"]["query"]["query"] == "label_values(humwatch_machine_info, machine)"
    ratio = next(p for p in _panels(board) if p["title"].startswith("Score ratio"))
    steps = ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 1} in steps  # the threshold line at 1
    assert ratio["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    urls = [link["url"] for link in _links(ratio)]
    assert "${api_url}/v1/machines/${machine}/windows?from=${__from}&to=${__value.time}" in urls
    titles = " ".join(p["title"] for p in _panels(board))
    for needed in ("Outlier", "Audio level", "Microphone health", "Baseline version", "Baseline"):
        assert needed in titles


def test_service_health():
    board = load_dashboards()["service-health.json"]
    exprs = " ".join(t["expr"] for p in _panels(board) for t in p["targets"])
    for needed in (
        "humwatch_http_request_duration_seconds_count",  # request rate
        "humwatch_http_request_duration_seconds_bucket",  # latency
        'status=~"[45].."',  # errors
        "humwatch_ingest_rejections_total",  # rejections
        "humwatch_ingest_lag_seconds_bucket",  # ingest lag
        "up{",
    ):
        assert needed in exprs


def test_provisioning_files():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "humwatch.yaml").read_text())
    (source,) = datasources["datasources"]
    assert datasources["apiVersion"] == 1 and source["type"] == "prometheus"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "humwatch.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_data_link_opens_the_windows_at_that_time(client):
    """The machine-detail data link, filled in as Grafana does (epoch milliseconds), is a
    working API request for the windows of that machine up to the clicked time."""
    enroll(client, "obs-link")
    upload(client, "obs-link", wav(1.0, seed=3, fault=True), started_at=at(10))
    board = load_dashboards()["machine-detail.json"]
    ratio = next(p for p in _panels(board) if p["title"].startswith("Score ratio"))
    clicked = T0 + timedelta(seconds=10.5)
    values = {
        "api_url": "",
        "machine": "obs-link",
        "__from": str(int(T0.timestamp() * 1000)),
        "__value": None,
    }
    for link in _links(ratio):
        url = link["url"].replace("${__value.time}", str(int(clicked.timestamp() * 1000)))
        url = substitute_grafana(url, {k: v for k, v in values.items() if v is not None})
        resp = client.get(url)
        assert resp.status_code == 200, (url, resp.text)
        items = resp.json()["items"]
        assert items, url
        starts = [datetime.fromisoformat(w["start_at"]) for w in items]
        assert all(T0 <= s < clicked for s in starts)
        assert max(starts) == T0 + timedelta(seconds=10.5 - 0.125)  # newest first, up to the click
        if "outliers_only=true" in url:
            assert all(w["is_outlier"] for w in items)


@pytest.fixture
def exposed_names(client) -> set[str]:
    """Sample names in /metrics after traffic that feeds every metric."""
    enroll(client, "obs-names")
    upload(client, "obs-names", wav(1.0, seed=5, fault=True), started_at=at(20))
    upload(client, "obs-names", b"not audio")  # a rejection
    return {name for name, _ in scrape(client)}


def test_every_metric_the_dashboards_and_rules_use_exists(exposed_names):
    recorded = recorded_names()
    missing = {}
    for expression in dashboard_expressions() + rule_expressions():
        for name in metric_names(expression.expr):
            if name in PROMETHEUS_SERIES:
                continue
            known = recorded if ":" in name else exposed_names
            if name not in known:
                missing.setdefault(name, []).append(expression.source)
    assert missing == {}


def test_metric_name_extraction():
    assert metric_names(
        'sum by (machine) (rate(a_total{x="y:z"}[5m])) / on (machine) group_left (site) '
        'max by (machine, site) (b_info{site=~"$site"}) > bool 1 and c:d:e unless absent(f)'
    ) == {"a_total", "b_info", "c:d:e", "f"}
    assert metric_names("label_values(humwatch_machine_info, site)") == {"humwatch_machine_info"}
    assert metric_names("time() - max(x_timestamp_seconds) > 600 or vector(0)") == {
        "x_timestamp_seconds"
    }
