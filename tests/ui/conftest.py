"""Page-test fixtures: a real uvicorn service with API keys on a seeded plant, and Debian's
Chromium driven by Playwright (``executable_path=/usr/bin/chromium``: never a browser
download; ``make test`` and ``.ci/run`` install the package when it is missing)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from service.app import create_app
from service.config import Settings
from service.db import Database
from tests.service.conftest import free_port, fresh_database
from tests.ui.seed import SETTINGS, seed

CHROMIUM = os.environ.get("HUMWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
API_KEY = "ui-test-api-key-0123456789"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "ui"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class Service:
    url: str
    db: Database
    outliers: dict[str, list[int]]


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> Iterator[Service]:
    """The app under uvicorn on a free loopback port, keys on, plant seeded over HTTP."""
    with fresh_database(tmp_path_factory.mktemp("ui-db")) as url:
        settings = Settings(database_url=url, api_keys=[API_KEY], **SETTINGS)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="ui-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        db = Database(url)
        try:
            outliers = seed(base, {"Authorization": f"Bearer {API_KEY}"})
            yield Service(base, db, outliers)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            db.dispose()


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (make test and .ci/run do)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    page: object
    requests: list
    errors: list


def open_tab(browser, service: Service, viewport=DESKTOP, key: str | None = API_KEY) -> Tab:
    """A fresh browser context (own sessionStorage); with ``key`` it is signed in already."""
    context = browser.new_context(viewport=viewport)
    if key is not None:
        context.add_init_script(f"sessionStorage.setItem('humwatch.key', {key!r})")
    page = context.new_page()
    page.set_default_timeout(20_000)
    tab = Tab(page, [], [])
    page.on("request", lambda r: tab.requests.append(r))
    page.on("pageerror", lambda e: tab.errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
    return tab


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
