"""The plant page with 200 machines: one request, every row, no layout that breaks."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.config import Settings
from tests.service.conftest import free_port, fresh_database
from tests.ui.conftest import DESKTOP, PHONE, Service, open_tab, screenshot
from tests.ui.seed import SETTINGS

SITES = ("north", "south", "east", "west", "harbour")
AREAS = ("boilers", "line 1", "line 2", "packing")
N = 200


@pytest.fixture(scope="module")
def big_plant(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("big-db")) as url:
        settings = Settings(database_url=url, **SETTINGS)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as client:
            for i in range(N):
                client.post(
                    "/v1/machines",
                    json={
                        "id": f"m-{i:03d}",
                        "name": f"Machine {i:03d} with a rather long descriptive name",
                        "site": SITES[i % len(SITES)],
                        "area": AREAS[(i // len(SITES)) % len(AREAS)],
                        "machine_type": ("pump", "fan", "compressor")[i % 3],
                    },
                ).raise_for_status()
        try:
            yield Service(base, None, {})
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_two_hundred_machines(browser, big_plant):
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        tab = open_tab(browser, big_plant, viewport=viewport, key=None)
        page = tab.page
        page.goto(f"{big_plant.url}/ui/")
        page.locator("tr[data-machine=m-199]").wait_for(state="attached")
        assert page.locator("tr[data-machine]").count() == N
        assert page.locator("section.site > h2").all_inner_texts() == sorted(SITES)
        plant_calls = [r for r in tab.requests if "/v1/plant" in r.url]
        assert len(plant_calls) == 1  # one request for the whole plant, not one per machine
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, f"page is {width}px wide"
        page.fill("#filter", "m-123")
        assert page.locator("tr[data-machine]:visible").count() == 1
        page.fill("#filter", "")
        screenshot(page, f"plant-200-{name}")
        assert not tab.errors, tab.errors
