"""The review page under ``/ui``: plant, machine, window (and event) and search pages.

Plain HTML, CSS and vanilla JavaScript modules shipped in the package (``static/``,
``templates/``), nothing fetched from elsewhere at run time. Every page is the same shell
(``templates/page.html``) in which ``static/app.js`` renders the page named by the URL,
from the JSON API. With keys configured the page asks once for a key (kept in the tab's
``sessionStorage``) and sends it as ``Authorization: Bearer`` on every request; it shows
nothing without one. The shell and the static files carry no machine data, so they are
served without a key.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from service import __version__

HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGES = {
    "plant": "Plant",
    "machine": "Machine",
    "window": "Flagged window",
    "event": "Event",
    "search": "Search",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


@lru_cache
def _template() -> str:
    return (HERE / "templates" / "page.html").read_text(encoding="utf-8")


def _page(page: str, **data: str) -> HTMLResponse:
    attrs = " ".join(f'data-{k}="{html.escape(v, quote=True)}"' for k, v in data.items())
    body = (
        _template()
        .replace("{{page}}", page)
        .replace("{{title}}", html.escape(PAGES[page]))
        .replace("{{data}}", attrs)
        .replace("{{version}}", html.escape(__version__))
    )
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
            "media-src 'self' blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


@router.get("")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/")
def plant_page() -> HTMLResponse:
    return _page("plant")


@router.get("/machines/{machine_id}")
def machine_page(machine_id: str) -> HTMLResponse:
    return _page("machine", id=machine_id)


@router.get("/windows/{window_id}")
def window_page(window_id: int) -> HTMLResponse:
    return _page("window", id=str(window_id))


@router.get("/events/{event_id}")
def event_page(event_id: int) -> HTMLResponse:
    return _page("event", id=str(event_id))


@router.get("/search")
def search_page() -> HTMLResponse:
    return _page("search")


@router.get("/config.json")
def ui_config(request: Request) -> JSONResponse:
    """What the page needs before its first API call (no machine data)."""
    runtime = request.app.state.runtime
    paths = {getattr(r, "path", "") for r in request.app.routes}
    return JSONResponse(
        {
            "auth_required": runtime.settings.auth_enabled,
            "events": "/v1/events" in paths,
            "min_enrollment_seconds": runtime.settings.min_enrollment_seconds,
            "version": __version__,
        },
        headers={"Cache-Control": "no-store"},
    )


def install(app: FastAPI) -> None:
    """Mount the pages and their static files on ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
