"""The dashboards show the service's event state: health on the plant overview and the
machine detail, open events as annotations on the machine detail."""

from __future__ import annotations

from tests.observability.promql import load_dashboards


def _panels(board):
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_plant_overview_shows_health():
    board = load_dashboards()["plant-overview.json"]
    table = next(p for p in _panels(board) if p["type"] == "table")
    health = [t for t in table["targets"] if "humwatch_machine_health" in t["expr"]]
    assert len(health) == 1 and 'site=~"$site"' in health[0]["expr"]
    rename = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    assert rename["renameByName"][f"Value #{health[0]['refId']}"] == "Health"
    mapping = next(
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Health"
    )
    texts = {
        v["text"]
        for p in mapping["properties"]
        if p["id"] == "mappings"
        for m in p["value"]
        for v in m["options"].values()
    }
    assert texts == {"enrolling", "learning", "ok", "warning", "alarm", "sensor_fault"}


def test_machine_detail_has_event_annotations_and_health():
    board = load_dashboards()["machine-detail.json"]
    annotations = {a["name"]: a for a in board["annotations"]["list"]}
    for kind in ("Anomaly", "Sensor"):
        expr = annotations[f"{kind} events"]["expr"]
        assert "humwatch_machine_open_events" in expr and 'machine="$machine"' in expr
        assert f'kind="{kind.lower()}"' in expr
    assert any(p["title"] == "Health" for p in _panels(board))
