"""Local commands (no service): ``simulate`` and ``bench`` (see ``local_runner``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import app, one_line_errors


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(metavar="OUT.wav", help="file to write (.wav/.flac/.ogg)")],
    kind: Annotated[str, typer.Option(help="fan, pump, compressor, conveyor or gearbox")] = "pump",
    rpm: Annotated[float | None, typer.Option(help="shaft speed (default: the kind's)")] = None,
    seconds: Annotated[float, typer.Option(help="length of each file")] = 10.0,
    fault: Annotated[
        str | None,
        typer.Option(
            help="bearing, imbalance, looseness, cavitation, valve_click or belt_squeal "
            "(default: a healthy machine)"
        ),
    ] = None,
    severity: Annotated[float, typer.Option(help="fault severity, 0 to 1")] = 0.5,
    snr_db: Annotated[float, typer.Option(help="machine over factory background, in dB")] = 12.0,
    seed: Annotated[int, typer.Option(help="another seed is another run of the machine")] = 0,
    sample_rate: Annotated[int, typer.Option(help="samples per second")] = 16000,
    count: Annotated[
        int,
        typer.Option(
            help="write this many consecutive files (OUT-001.wav, ...) of one continuous run"
        ),
    ] = 1,
) -> None:
    """Write a synthetic machine recording, healthy or faulty. Runs locally.

    A machine in a factory (shaft, blades, flow, background) from detectors/simulate.py, to
    try humwatch without microphones.
    """
    from service.cli.local_runner import simulate_recording

    with one_line_errors():
        paths = simulate_recording(
            out, kind, rpm, seconds, fault, severity, snr_db, seed, sample_rate, count
        )
    what = f"{kind}" + (f" with a {fault} fault (severity {severity:g})" if fault else ", healthy")
    first = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1].name}"
    typer.echo(f"wrote {first}: {len(paths)} x {seconds:g} s of a {what}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    which: Annotated[
        list[str] | None,
        typer.Option(
            help="end-to-end, knn, service-ingest, embedders-gpu, stream-ingest, "
            "ingest-stages, search, learning-batch, worker-cost, group-commit or all (repeat; "
            "default: end-to-end and knn, the README's table)"
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="a short smoke run of each benchmark")] = False,
    out: Annotated[
        Path | None, typer.Option(help="also write <OUT>/<name>.json per benchmark")
    ] = None,
) -> None:
    """Run the benchmark scripts and print their JSON. Runs locally.

    Runs benchmarks/*.py one after the other; arguments after -- go to the script (with one
    --which). service-ingest needs Postgres (HUMWATCH_BENCH_DATABASE_URL).
    """
    from service.cli.local_runner import run_benchmarks

    with one_line_errors():
        run_benchmarks(which, quick, list(ctx.args), out)
