"""``humwatch demo``: the live demo plant (serves the API and streams simulated machines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import app, fail, load_settings
from service.cli.serve import prepare_to_serve


@app.command()
def demo(
    url: Annotated[
        str | None,
        typer.Option(help="feed a service already running there instead of starting one"),
    ] = None,
    port: Annotated[int, typer.Option(help="port of the service the demo starts")] = 8000,
    recordings: Annotated[
        Path | None,
        typer.Option(
            help="folder of real recordings to replay as one more machine "
            "(normal/*.wav, abnormal/*.wav); default: MIMII fan clips in ../shared"
        ),
    ] = None,
    fault_after: Annotated[
        float, typer.Option(help="seconds of monitoring before pump-01 develops a fault")
    ] = 180.0,
    fast: Annotated[
        bool, typer.Option(help="send audio as fast as it is scored (simulated time)")
    ] = False,
    steps: Annotated[int | None, typer.Option(help="stop after this many chunks")] = None,
) -> None:
    """Start the service on 127.0.0.1 (SQLite by default) and stream a simulated plant to it:
    machines enroll, then stream in real time, and one develops a fault. Talks to the API."""
    from service.cli.demo_runner import run_demo

    if url is None:
        settings = load_settings()
        prepare_to_serve(settings, "127.0.0.1")
    else:
        settings = None
    try:
        run_demo(settings, url, port, recordings, fault_after, fast, steps)
    except (ValueError, OSError, RuntimeError) as exc:
        fail(str(exc))
