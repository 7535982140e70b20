"""``humwatch evaluate events``: the event logic on real clips (``detectors.evaluate_events``):
streams of held-out normal clips followed by anomalous clips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import fail
from service.cli.evaluate import ManifestArgument, RootOption, evaluate_app


@evaluate_app.command("events")
def evaluate_events_command(
    manifest: ManifestArgument,
    root: RootOption = None,
    preset: Annotated[str, typer.Option(help="preset: default, previous, reference")] = "default",
    folds: Annotated[int, typer.Option(min=2, max=20, help="k-fold splits of each group")] = 5,
    repeats: Annotated[int, typer.Option(min=1, max=10, help="shuffles of the folds")] = 3,
    seed: Annotated[int, typer.Option(min=0, help="seed of the first shuffle")] = 0,
    min_clips: Annotated[
        int,
        typer.Option(
            min=2, help="groups need at least this many test normals and as many anomalies"
        ),
    ] = 20,
    clip_interval: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="seconds from one clip's start to the next (default: consecutive, each "
            "clip starts where the previous one ended)",
        ),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(help="event parameter overrides as JSON, e.g. '{\"m\": 4}'"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the figures as JSON here")
    ] = None,
) -> None:
    """Event figures on real clips: for every group with enough clips, streams of held-out
    normal clips then anomalous clips (the folds of `evaluate clips`), scored as the service
    scores them and fed to the event logic. Reports false anomaly events per machine-week of
    normal audio, the fraction of anomalous stretches that opened an event and the delays.
    Runs locally (about a minute of CPU per 100 clips to embed)."""
    import torch

    from detectors.evaluate import PRESETS, load_clips
    from detectors.evaluate_events import (
        RealStreamConfig,
        evaluate_real_streams,
        markdown_table,
        tradeoff_table,
    )
    from detectors.events import EventParams

    torch.set_num_threads(1)
    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    try:
        event_params = EventParams.from_dict(json.loads(params) if params else None)
    except (ValueError, TypeError) as exc:
        fail(f"--params: {exc}")
    try:
        config = RealStreamConfig(
            folds=folds,
            repeats=repeats,
            seed=seed,
            min_normals=min_clips,
            min_anomalies=min_clips,
            clip_interval_s=clip_interval,
        )
        clips = load_clips(manifest, root)
        out = evaluate_real_streams(
            clips, PRESETS[preset], event_params, config, progress=typer.echo
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo("")
    typer.echo(markdown_table(out))
    typer.echo(f"trade-off over {out['tradeoff_parameter']} (pooled):")
    typer.echo(tradeoff_table(out))
    if out["skipped"]:
        typer.echo(
            f"{len(out['skipped'])} group(s) skipped, too few clips for streams "
            "(listed under `skipped` in the JSON)"
        )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, indent=2) + "\n")
        typer.echo(f"\nwrote {json_out}")
