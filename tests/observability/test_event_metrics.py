"""Event metrics through the app: health and open events per machine, events opened,
escalated and closed (counted in the database), time to acknowledgement."""

from __future__ import annotations

from service.models import HEALTH_STATES
from tests.observability.metrics_helpers import scrape, value
from tests.service.audio import wav
from tests.service.conftest import at, enroll, upload

TEST_PARAMS = {"open_ratio": 1.3, "resolve_ratio": 1.2}  # see tests/service/test_events.py


def test_health_open_events_and_counters(client):
    m = "obs-events"
    enroll(client, m)
    client.put(f"/v1/machines/{m}/event-params", json=TEST_PARAMS)
    samples = scrape(client)
    health = {
        s: value(samples, "humwatch_machine_health", machine=m, state=s) for s in HEALTH_STATES
    }
    assert health == {s: (1 if s == "ok" else 0) for s in HEALTH_STATES}
    assert (
        value(samples, "humwatch_machine_open_events", machine=m, kind="anomaly", severity="alarm")
        == 0
    )
    opened_before = value(samples, "humwatch_events_opened_total", kind="anomaly")
    closed_before = value(
        samples, "humwatch_events_closed_total", kind="anomaly", disposition="false_alarm"
    )
    for i in range(2):
        upload(client, m, wav(1.0, seed=50 + i, fault=True), started_at=at(20 + i))
    (event,) = client.get("/v1/events", params={"machine": m}).json()["items"]
    samples = scrape(client)
    severity = event["severity"]
    assert value(samples, "humwatch_machine_health", machine=m, state=severity) == 1
    assert value(samples, "humwatch_machine_health", machine=m, state="ok") == 0
    assert (
        value(samples, "humwatch_machine_open_events", machine=m, kind="anomaly", severity=severity)
        == 1
    )
    assert value(samples, "humwatch_events_opened_total", kind="anomaly") == opened_before + 1
    ack_before = value(samples, "humwatch_event_acknowledge_seconds_count", kind="anomaly") or 0
    client.post(f"/v1/events/{event['id']}/acknowledge", json={"by": "ann"})
    client.post(f"/v1/events/{event['id']}/close", json={"by": "ann", "disposition": "false_alarm"})
    samples = scrape(client)
    assert (
        value(samples, "humwatch_event_acknowledge_seconds_count", kind="anomaly") == ack_before + 1
    )
    assert (
        value(samples, "humwatch_events_closed_total", kind="anomaly", disposition="false_alarm")
        == closed_before + 1
    )
    assert (
        value(samples, "humwatch_machine_open_events", machine=m, kind="anomaly", severity=severity)
        == 0
    )
    assert value(samples, "humwatch_machine_health", machine=m, state="ok") == 1
