"""API commands: ``machines add|list|show``, ``enroll`` and ``score`` (see ``api_client``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import (
    DEFAULT_URL,
    ConditionOption,
    JsonOption,
    MachineOption,
    StartedAtOption,
    UrlOption,
    app,
    one_line_errors,
)

machines_app = typer.Typer(
    help="Register and inspect machines. Talk to the API (--url, HUMWATCH_API_KEY).",
    no_args_is_help=True,
)
app.add_typer(machines_app, name="machines")


@machines_app.command("add")
def machines_add(
    machine_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="slug: lowercase letters, digits, '-', '_' (1-64)"),
    ],
    name: Annotated[str | None, typer.Option(help="display name (default: the id)")] = None,
    site: Annotated[str | None, typer.Option(help="plant or site")] = None,
    area: Annotated[str | None, typer.Option(help="hall, line or area")] = None,
    machine_type: Annotated[
        str | None, typer.Option("--type", help="kind of machine, e.g. pump")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="free label (repeat)")
    ] = None,
    window_seconds: Annotated[
        float | None, typer.Option(help="window length in seconds (default: the service's)")
    ] = None,
    hop_seconds: Annotated[
        float | None, typer.Option(help="seconds between window starts (default: the service's)")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="'mix' averages the microphones; 0, 1, ... picks one")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Register a machine; it starts enrolling. Talks to the API."""
    from service.cli import api_client as cc

    with one_line_errors(), cc.connect(url) as api:
        cc.machines_add(
            api,
            machine_id,
            name=name,
            site=site,
            area=area,
            machine_type=machine_type,
            labels=label,
            window_seconds=window_seconds,
            hop_seconds=hop_seconds,
            channel=channel,
            as_json=as_json,
        )


@machines_app.command("list")
def machines_list(
    site: Annotated[str | None, typer.Option(help="only machines of this site")] = None,
    state: Annotated[
        str | None, typer.Option(help="only machines in this state: enrolling, monitoring, paused")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """List the machines with their state and active baseline. Talks to the API."""
    from service.cli import api_client as cc

    with one_line_errors(), cc.connect(url) as api:
        cc.machines_list(api, site, state, as_json)


@machines_app.command("show")
def machines_show(
    machine_id: Annotated[str, typer.Argument(metavar="ID", help="the machine's id")],
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """One machine's settings and state, and its baseline versions. Talks to the API."""
    from service.cli import api_client as cc

    with one_line_errors(), cc.connect(url) as api:
        cc.machines_show(api, machine_id, as_json)


@app.command()
def enroll(
    machine: MachineOption,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILES_OR_FOLDERS...",
            help=".wav, .flac or .ogg files; folders are searched recursively",
        ),
    ],
    started_at: StartedAtOption = "auto",
    condition: ConditionOption = None,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            max=1000,
            help="files per request (POST /v1/recordings/batch, up to the service's "
            "HUMWATCH_MAX_BATCH_ITEMS); 1: one request per file",
        ),
    ] = 1,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Enroll a machine on normal recordings (folders walked). Talks to the API.

    Sends each file with a progress bar; the machine starts monitoring once it has enough.
    Files the service refuses are listed and skipped (exit status 1).
    """
    from service.cli import api_client as cc

    with one_line_errors(), cc.connect(url) as api:
        cc.enroll(api, machine, paths, started_at, condition, batch)


@app.command()
def score(
    machine: MachineOption,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a .wav, .flac or .ogg file")],
    started_at: StartedAtOption = "auto",
    condition: ConditionOption = None,
    outliers_only: Annotated[
        bool, typer.Option("--outliers-only", help="list only the outlier windows")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Score one recording and print its windows. Talks to the API.

    Prints each window's start, end, score, ratio (score / threshold) and whether it is an
    outlier. The machine must be monitoring; the recording is stored like any other.
    """
    from service.cli import api_client as cc

    with one_line_errors(), cc.connect(url) as api:
        cc.score(api, machine, file, started_at, condition, outliers_only, as_json)
