"""``humwatch demo``: serve the API in this process and stream the demo plant to it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import typer

from service.cli.demo_plant import REPLAY_DIR, DemoFeed, EventWatcher, demo_plant, summarize
from service.config import Settings


def _start_server(settings: Settings, port: int):
    import uvicorn

    from service.app import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="humwatch-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the service did not start on 127.0.0.1:{port} (port in use?)")
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not start within 60 s")
        time.sleep(0.1)
    return server, thread


def _where_to_look(base: str) -> str:
    return f"""
humwatch demo is running against {base}
  review page         {base}/ui  (the plant, each machine's windows and events)
  API docs            {base}/docs
  machines            {base}/v1/machines
  metrics             {base}/metrics
  events              {base}/v1/events  (acknowledge / close: see the README)
  faulty machine      {base}/ui/machines/pump-01  (in the API: /v1/machines/pump-01)
  Prometheus/Grafana  dashboards/README.md: scrape this service with
                      dashboards/prometheus/prometheus.yml, load the alert rules, and
                      provision Grafana with dashboards/grafana/
Ctrl-C stops the feed and the service; running `make run` again continues the same database.
"""


def run_demo(
    settings: Settings | None,
    url: str | None,
    port: int,
    recordings: Path | None,
    fault_after: float,
    fast: bool,
    steps: int | None,
) -> None:
    server = thread = None
    headers = {}
    if url is None:
        server, thread = _start_server(settings, port)
        url = f"http://127.0.0.1:{port}"
        key = settings.api_keys[0] if settings.api_keys else None
    else:
        key = os.environ.get("HUMWATCH_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    replay_dir = recordings if recordings is not None else REPLAY_DIR
    if recordings is not None and not recordings.is_dir():
        raise ValueError(f"--recordings {recordings} is not a folder")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            feed = DemoFeed(
                http, demo_plant(replay_dir), fault_after_seconds=fault_after, log=typer.echo
            )
            feed.register()
            typer.echo("enrolling the machines on backdated normal audio ...")
            feed.enroll()
            typer.echo(_where_to_look(url))
            typer.echo(
                "events as they happen (one status line a minute: highest window ratio per "
                "machine):"
            )
            watcher = EventWatcher(http)

            def on_step(windows) -> None:
                for line in watcher.poll():
                    typer.echo(line)
                if feed.steps % 6 == 0:
                    typer.echo(f"  {summarize(windows, flags=False)}")

            feed.run(realtime=not fast, max_steps=steps, on_step=on_step)
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the service at {url}: {exc}") from exc
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(timeout=10)
    typer.echo("demo stopped")
