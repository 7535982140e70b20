"""The review page in a real headless Chromium against a real uvicorn service.

The plant is seeded with simulated machines (tests/ui/seed.py): a pump with a bearing fault,
a conveyor with a belt squeal, a healthy fan, a compressor whose microphone went quiet two
hours ago and a gearbox still enrolling. Screenshots land in out/ui/ (not committed).
"""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from detectors.simulate import Fault, MachineSimulator
from service.models import Window
from tests.ui.conftest import API_KEY, DESKTOP, PHONE, open_tab, screenshot
from tests.ui.seed import CLIP_SECONDS, FAULT_SEED, PLANT, wav


def _api_requests(tab):
    return [r for r in tab.requests if "/v1/" in r.url]


def _assert_every_api_call_sent_the_key(tab):
    calls = _api_requests(tab)
    assert calls, "the page made no API call"
    for request in calls:
        assert request.headers.get("authorization") == f"Bearer {API_KEY}", request.url


def _no_horizontal_scroll(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, f"page is {width}px wide"


def test_nothing_is_shown_without_a_key_and_a_wrong_key_is_refused(browser, service):
    tab = open_tab(browser, service, key=None)
    page = tab.page
    page.goto(f"{service.url}/ui/")
    dialog = page.locator("#keydialog")
    dialog.wait_for(state="visible")
    assert "Feed pump 1" not in page.content()
    assert not [r for r in _api_requests(tab) if "/v1/plant" in r.url]
    screenshot(page, "key-prompt")

    page.fill("#keyinput", "not-the-right-key-000000")
    page.keyboard.press("Enter")
    page.locator("#keyerror").wait_for(state="visible")
    assert "refused" in page.locator("#keyerror").inner_text()
    assert "Feed pump 1" not in page.locator("main").inner_text()

    page.fill("#keyinput", API_KEY)
    page.keyboard.press("Enter")
    page.locator("tr[data-machine=pump-01]").wait_for()
    assert page.evaluate("sessionStorage.getItem('humwatch.key')") == API_KEY
    # The refused key's 403 is the only error the browser logged.
    assert tab.errors and all("403" in e for e in tab.errors), tab.errors


def test_plant_page_groups_machines_and_tells_sensor_from_machine_trouble(browser, service):
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        tab = open_tab(browser, service, viewport=viewport)
        page = tab.page
        page.goto(f"{service.url}/ui/")
        page.locator("tr[data-machine=gear-01]").wait_for()
        rows = page.locator("tr[data-machine]")
        assert rows.count() == len(PLANT)
        sites = page.locator("section.site > h2").all_inner_texts()
        assert sites == ["north", "south"]
        areas = page.locator("section.site summary h3").all_inner_texts()
        assert areas == ["boiler house", "line 2", "compressors", "line 5"]
        # With events the service's health is shown (warning / alarm and the open event);
        # without, the page derives "ratio > 1" and "no recent audio" itself.
        pump = page.locator("tr[data-machine=pump-01]")
        pump_class = pump.get_attribute("class")
        assert pump_class in ("cond-flagged", "cond-warning", "cond-alarm"), pump_class
        if pump_class == "cond-flagged":
            assert "ratio > 1" in pump.inner_text()
        else:
            assert pump.locator("a[href^='/ui/events/']").count() == 1
        stale = page.locator("tr[data-machine=comp-01]")
        assert stale.get_attribute("class") in ("cond-stale", "cond-sensor_fault")
        assert re.search("no recent audio|sensor", stale.inner_text())
        assert "2 h ago" in stale.inner_text()
        assert "enrolling" in page.locator("tr[data-machine=gear-01]").inner_text()
        # A machine in its learning period is scored: it counts as ok, not as enrolling.
        learning = page.locator("tr[data-machine=fan-02]")
        assert learning.get_attribute("class") == "cond-learning"
        assert "learning" in learning.inner_text()
        summary = page.locator("ul.summary").inner_text().replace("\n", " ")
        ok = page.locator("tr.cond-ok").count() + 1
        assert f"{ok} ok (1 still learning)" in summary, summary
        assert "1 enrolling" in summary, summary
        assert page.locator("tr[data-machine=pump-01] svg.spark circle.hot").count() >= 1
        _no_horizontal_scroll(page)
        if name == "phone":  # a row with two state badges once cut its other cells short
            cut = page.evaluate(
                """[...document.querySelectorAll('table.machines td:not(.trend)')]
                .filter(td => td.scrollWidth > td.clientWidth + 1).map(td => td.innerText)"""
            )
            assert not cut, f"cells cut short on a phone: {cut}"
        screenshot(page, f"plant-{name}")
        _assert_every_api_call_sent_the_key(tab)
        assert not tab.errors, tab.errors

    # Keyboard: the filter narrows the list; "needs attention" keeps flagged and stale ones.
    page.focus("#filter")
    page.keyboard.type("conveyor")
    assert page.locator("tr[data-machine]:visible").count() == 1
    page.fill("#filter", "")
    page.check("#attention")
    visible = {
        r.get_attribute("data-machine") for r in page.locator("tr[data-machine]:visible").all()
    }
    assert {"pump-01", "comp-01"} <= visible
    assert "gear-01" not in visible and "fan-01" not in visible
    # The conveyor's squeal comes and goes: it needs attention exactly when the API says
    # so: its health (an open event) is not ok, or, with health ok, its newest window is
    # above the threshold.
    plant = httpx.get(
        f"{service.url}/v1/plant?hours=1&buckets=1",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    conveyor = next(m for m in plant["machines"] if m["id"] == "conv-01")
    needs = conveyor["health"] not in (None, "ok") or conveyor["last_ratio"] > 1
    assert ("conv-01" in visible) == needs
    # A flagged count above zero stands out (and says why there is no event), zero does not.
    page.uncheck("#attention")
    for machine in ("conv-01", "fan-01"):
        api = next(m for m in plant["machines"] if m["id"] == machine)
        cell = page.locator(f"tr[data-machine={machine}] td[data-label^='Flagged']")
        assert cell.inner_text() == f"{api['outliers']} / {api['windows']}"
        marked = "some-flagged" in (cell.get_attribute("class") or "")
        assert marked == (api["outliers"] > 0), (machine, api["outliers"])
        if marked and not api.get("open_events"):
            assert "not persistent enough" in cell.get_attribute("title")


def test_machine_page_chart_baselines_and_flagged_windows(browser, service):
    tab = open_tab(browser, service)
    page = tab.page
    page.goto(f"{service.url}/ui/machines/pump-01")
    page.locator("svg.ratio-chart rect.bar.hot").first.wait_for()
    assert page.locator("table.baselines tbody tr").count() == 1
    assert "active" in page.locator("table.baselines tr.active").inner_text()
    assert "automatically, at enrollment" in page.locator("table.baselines").inner_text()
    # The detection line says whether the active baseline scores in one space or two, as its
    # threshold_method does.
    baselines = httpx.get(
        f"{service.url}/v1/machines/pump-01/baselines",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    active = next(b for b in baselines if b["active"])
    # Coverage and the learning period, as the machine resource reports them.

    def fact(name: str) -> str:
        return page.locator(f"dt:text-is('{name}') + dd").inner_text()

    assert fact("Runs covered").startswith("8 runs (8 recordings), ")
    assert fact("Learning period").startswith("off")
    detection = fact("Detection")
    two = len(active["threshold_method"].get("spaces", [])) > 1
    assert ("scored in two spaces" in detection) == two, (detection, active["threshold_method"])
    flagged = page.locator("#flagged tbody tr")
    flagged.first.wait_for()
    assert flagged.count() >= len(service.outliers["pump-01"]) or flagged.count() == 20
    screenshot(page, "machine-desktop")

    page.get_by_role("button", name="Last 1 h").click()
    page.locator('[data-range="1 h"][aria-pressed="true"]').wait_for()
    # Keyboard: focus the chart, pick the newest bucket, Enter lists its flagged windows.
    page.focus("svg.ratio-chart")
    page.keyboard.press("ArrowLeft")
    page.locator("svg.ratio-chart rect.cursor").wait_for()
    page.focus("svg.ratio-chart")
    page.keyboard.press("Enter")
    page.locator("#flagged h2", has_text=re.compile("^Flagged windows")).wait_for()
    _assert_every_api_call_sent_the_key(tab)
    assert not tab.errors, tab.errors

    phone = open_tab(browser, service, viewport=PHONE).page
    phone.goto(f"{service.url}/ui/machines/conv-01")
    phone.locator("svg.ratio-chart rect.bar").first.wait_for()
    _no_horizontal_scroll(phone)
    screenshot(phone, "machine-phone")

    # A machine in its learning period says until when normal runs join the baseline.
    page.goto(f"{service.url}/ui/machines/fan-02")
    page.locator("dt:text-is('Learning period')").wait_for()
    assert re.match(
        r"until .+: runs that sound normal join the next baseline", fact("Learning period")
    )
    coverage = httpx.get(
        f"{service.url}/v1/machines/fan-02", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()["coverage"]
    assert coverage["runs"] >= 8  # enrollment's, and any run learning added
    runs = f"{coverage['runs']} runs ({coverage['recordings']} recordings), "
    assert fact("Runs covered").startswith(runs)
    assert not tab.errors, tab.errors


def _flagged(service, machine: str) -> int:
    ids = service.outliers[machine]
    assert ids, f"{machine} has no flagged window to review"
    return ids[len(ids) // 2]


def test_window_page_compares_plays_explains_and_takes_a_label(browser, service):
    window_id = _flagged(service, "conv-01")
    tab = open_tab(browser, service)
    page = tab.page
    page.goto(f"{service.url}/ui/windows/{window_id}")
    page.locator(".neighbour img.spectrogram").nth(2).wait_for()
    page.locator("#explanation ol.regions li, #explanation p.lead").first.wait_for()

    images = page.locator("img.spectrogram")
    assert images.count() == 4  # this window and its three nearest baseline windows
    for i in range(images.count()):
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") > 0

    # Audio: the window's player and each neighbour's load and play.
    players = page.locator("audio")
    assert players.count() >= 2
    for i in (0, 1):
        state = players.nth(i).evaluate(
            """async (a) => {
                if (a.readyState < 1)
                    await new Promise(r => a.addEventListener('loadedmetadata', r, {once: true}));
                await a.play();
                // Playing: the clock moves (within 10 s, however busy the machine is).
                await new Promise(r => {
                    const check = () => (a.currentTime > 0 ? r() : null);
                    a.addEventListener('timeupdate', check);
                    setTimeout(r, 10000);
                });
                const out = {duration: a.duration, time: a.currentTime, paused: a.paused};
                a.pause();
                return out;
            }"""
        )
        assert abs(state["duration"] - 1.0) < 0.05, state
        assert state["time"] > 0 and not state["paused"], state

    # The explanation names the squeal's band in words, in Hz.
    regions = page.locator("#explanation ol.regions li").all_inner_texts()
    assert regions and re.search(r"\d(\.\d+)? k?Hz to \d", regions[0]), regions
    assert "louder" in regions[0]
    assert page.locator("svg.band-chart rect.bar.hot").count() >= 1
    screenshot(page, "window-desktop")

    # Label it through the page; the database has it.
    page.get_by_label("Anomaly: something was wrong").check()
    page.fill("#fb-note", "belt squeal, tensioner replaced")
    page.get_by_role("button", name="Save label").click()
    page.get_by_text("Saved: labelled anomaly").wait_for()
    assert page.locator("#current-label").inner_text() == "anomaly"
    with service.db.session() as session:
        row = session.execute(select(Window).where(Window.id == window_id)).scalar_one()
        assert (row.label, row.label_note) == ("anomaly", "belt squeal, tensioner replaced")
        assert row.labelled_at is not None
    _assert_every_api_call_sent_the_key(tab)
    assert not tab.errors, tab.errors

    phone = open_tab(browser, service, viewport=PHONE).page
    phone.goto(f"{service.url}/ui/windows/{_flagged(service, 'pump-01')}")
    phone.locator(".neighbour img.spectrogram").first.wait_for()
    phone.locator("svg.band-chart").wait_for()
    _no_horizontal_scroll(phone)
    screenshot(phone, "window-phone")


def test_window_page_explanation_matches_the_api(browser, service):
    """The words on the page are the API's, for the bearing fault too."""
    window_id = _flagged(service, "pump-01")
    api = httpx.get(
        f"{service.url}/v1/windows/{window_id}/explanation?bands=32",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    tab = open_tab(browser, service)
    tab.page.goto(f"{service.url}/ui/windows/{window_id}")
    tab.page.locator("#explanation ol.regions li").first.wait_for()
    shown = tab.page.locator("#explanation ol.regions li").all_inner_texts()
    assert shown == [r["text"] for r in api["top"]]


def test_search_from_a_window_with_filters_and_from_an_uploaded_clip(browser, service, tmp_path):
    window_id = _flagged(service, "pump-01")
    tab = open_tab(browser, service)
    page = tab.page
    page.goto(f"{service.url}/ui/search?window={window_id}")
    page.locator("#results li.hit").first.wait_for()
    assert page.locator("#results li.hit").count() == 20
    assert "sharing the logmel embedder" in page.locator("[role=status]").last.inner_text()
    # Text queries say why they are not available with these embedders.
    assert page.locator("input[name=mode][value=text]").is_disabled()
    assert "full CLAP model" in page.locator("#q-text-hint").inner_text()
    page.locator("#results li.hit img").first.wait_for()
    screenshot(page, "search-window-desktop")

    # A machine filter keeps results to that machine.
    page.select_option("#f-machine", "fan-01")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text(re.compile(r"of 1 machine sharing")).wait_for()
    hits = page.locator("#results li.hit")
    assert hits.count() > 0
    assert all("Exhaust fan 1" in text for text in hits.all_inner_texts())

    # A later recording of the same squealing belt finds the conveyor's flagged windows first.
    clip = tmp_path / "squeal.wav"
    sim = MachineSimulator(
        "conveyor", 16000, seed=FAULT_SEED["conv-01"], fault=Fault("belt_squeal", 1.0)
    )
    sim.next_chunk(CLIP_SECONDS)  # what the seeded upload held; the query is what came next
    clip.write_bytes(wav(sim.next_chunk(4.0)))
    page.select_option("#f-machine", "")
    page.check("input[name=mode][value=clip]")
    page.set_input_files("#q-file", str(clip))
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("Sounds like the uploaded clip").wait_for()
    page.locator("#results li.hit").first.wait_for()
    first = page.locator("#results li.hit").first
    assert "Conveyor 1" in first.inner_text()
    assert int(first.get_attribute("data-window")) in service.outliers["conv-01"]
    # Listening to a result loads its audio.
    first.get_by_role("button", name=re.compile("Listen")).click()
    player = first.locator("audio")
    player.wait_for()
    duration = player.evaluate(
        "async a => { if (a.readyState < 1) await new Promise(r => "
        "a.addEventListener('loadedmetadata', r, {once: true})); return a.duration; }"
    )
    assert abs(duration - 1.0) < 0.05
    screenshot(page, "search-clip-desktop")
    _assert_every_api_call_sent_the_key(tab)
    assert not tab.errors, tab.errors

    phone = open_tab(browser, service, viewport=PHONE).page
    phone.goto(f"{service.url}/ui/search?window={window_id}")
    phone.locator("#results li.hit").first.wait_for()
    _no_horizontal_scroll(phone)
    screenshot(phone, "search-phone")


def test_event_page_acknowledge_and_close_through_the_page(browser, service):
    """The pump's event (issue 10): reviewed, acknowledged and closed; the database has it."""
    from service.models import Event

    with service.db.session() as session:
        event = (
            session.execute(select(Event).where(Event.machine_id == "pump-01")).scalars().first()
        )
        assert event is not None, "the bearing fault opened no event"
        event_id = event.id
        evidence = event.history[0]["evidence"]
    tab = open_tab(browser, service)
    page = tab.page
    page.goto(f"{service.url}/ui/events/{event_id}")
    page.locator("#event-review img.spectrogram").first.wait_for()
    # What opened it, in words: the evidence the tracker recorded.
    assert evidence in ("windows", "sustained")
    opened_on = page.locator("dd.evidence").inner_text()
    assert opened_on.startswith(evidence), opened_on
    page.fill("#ack-by", "night shift")
    page.fill("#ack-comment", "on my way")
    page.get_by_role("button", name="Acknowledge").click()
    page.get_by_text("acknowledged by night shift").wait_for()
    page.get_by_label(re.compile("Confirmed fault")).check()
    page.fill("#close-by", "night shift")
    page.fill("#close-reason", "outer race worn, bearing replaced")
    page.get_by_role("button", name="Close event").click()
    page.get_by_text(re.compile("closed by night shift as confirmed fault")).wait_for()
    screenshot(page, "event-desktop")
    with service.db.session() as session:
        row = session.get(Event, event_id)
        assert (row.acknowledged_by, row.closed_by, row.disposition) == (
            "night shift",
            "night shift",
            "confirmed_fault",
        )
    _assert_every_api_call_sent_the_key(tab)
    assert not tab.errors, tab.errors
