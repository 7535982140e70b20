"""Concurrent uploads: duplicates stored once, enrollment completes exactly once."""

from __future__ import annotations

import asyncio

import httpx

from tests.service.audio import wav
from tests.service.conftest import ENROLL_CLIPS, FAST_MACHINE, at, table_counts


async def _post_all(app, requests):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await asyncio.gather(
            *(
                http.post(
                    url,
                    content=data,
                    params=params,
                    headers={"Content-Type": "audio/wav"},
                )
                for url, data, params in requests
            )
        )


def test_concurrent_duplicates_are_stored_once(client):
    client.post("/v1/machines", json={"id": "fan-01", **FAST_MACHINE})
    data = wav(1.0, seed=1)
    url = "/v1/machines/fan-01/recordings"
    responses = asyncio.run(_post_all(client.app, [(url, data, {"started_at": at(0)})] * 6))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["recording"]["id"] for r in responses}) == 1
    counts = table_counts(client)
    assert counts["recordings"] == 1 and counts["windows"] == 7


def test_concurrent_enrollment_builds_one_baseline(client):
    client.post("/v1/machines", json={"id": "fan-01", **FAST_MACHINE})
    url = "/v1/machines/fan-01/recordings"
    clips = 2 * ENROLL_CLIPS
    requests = [(url, wav(1.0, seed=200 + i), {"started_at": at(i)}) for i in range(clips)]
    responses = asyncio.run(_post_all(client.app, requests))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    baselines = client.get("/v1/machines/fan-01/baselines").json()
    assert [b["version"] for b in baselines] == [1]
    machine = client.get("/v1/machines/fan-01").json()
    assert machine["state"] == "monitoring"
    # Enrollment stops at the first upload that reaches the minimum; later ones are scored.
    scored = [r.json() for r in responses if r.json()["windows"][0]["score"] is not None]
    enrolled = [r.json() for r in responses if r.json()["recording"]["is_enrollment"]]
    assert len(enrolled) == ENROLL_CLIPS and len(scored) == clips - ENROLL_CLIPS
    assert machine["enrolled_seconds"] == ENROLL_CLIPS
    assert baselines[0]["n_recordings"] == ENROLL_CLIPS
