"""``humwatch evaluate fleet``: the event logic on a simulated fleet (``detectors.fleet``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import fail
from service.cli.evaluate import evaluate_app


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{unit}"
    return f"{value}{unit}"


@evaluate_app.command("fleet")
def evaluate_fleet_command(
    machines: Annotated[int, typer.Option(min=1, max=100, help="simulated machines")] = 5,
    days: Annotated[float, typer.Option(min=0.1, max=60, help="days of operation each")] = 7.0,
    seed: Annotated[int, typer.Option(min=0, help="simulation seed")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the figures as JSON here")
    ] = None,
    clip_interval: Annotated[
        float, typer.Option(min=10, help="seconds between 10 s clips (duty cycle)")
    ] = 60.0,
    pool_clips: Annotated[
        int, typer.Option(min=1, max=100, help="distinct clips simulated per condition")
    ] = 6,
    enroll_runs: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="runs the enrollment audio comes from (HUMWATCH_MIN_ENROLLMENT_RUNS)",
        ),
    ] = 8,
    new_runs: Annotated[
        bool,
        typer.Option(
            help="start a new run every 4-12 h (--no-new-runs: one run per machine, which "
            "measures the event logic on a detector calibrated for the machine's sound)"
        ),
    ] = True,
    params: Annotated[
        str | None,
        typer.Option(help="event parameter overrides as JSON, e.g. '{\"m\": 4}'"),
    ] = None,
) -> None:
    """Simulate a fleet (every machine kind, new runs, faults, microphone faults) and measure
    the events: false events per machine-week, detection, delays. Runs locally (a few minutes
    of CPU per machine-week: --machines 5 --days 7 takes 10-15 minutes on one core)."""
    import torch

    from detectors.events import EventParams
    from detectors.fleet import FleetConfig, evaluate_fleet

    torch.set_num_threads(1)
    try:
        event_params = EventParams.from_dict(json.loads(params) if params else None)
    except (ValueError, TypeError) as exc:
        fail(f"--params: {exc}")
    config = FleetConfig(
        machines=machines,
        days=days,
        seed=seed,
        clip_interval_s=clip_interval,
        pool_clips=pool_clips,
        enroll_runs=enroll_runs,
        run_hours=(4.0, 12.0) if new_runs else (48.0 * days, 48.0 * days),
    )
    out = evaluate_fleet(config, event_params, progress=typer.echo)
    typer.echo("")
    for key in (
        "false_anomaly_events_per_machine_week",
        "healthy_time_in_anomaly_fraction",
        "faults_injected",
        "faults_detected_fraction",
        "faults_detected_fraction_severity_ge_0_3",
        "faults_with_event_already_open",
        "faults_with_event_already_open_escalated_to_alarm",
        "warning_delay_s_median",
        "warning_delay_s_p90",
        "alarm_delay_s_median",
        "alarm_delay_s_p90",
        "sensor_faults_with_sensor_event_fraction",
        "sensor_events_reported_as_anomaly",
    ):
        typer.echo(f"  {key:44s} {_fmt(out[key])}")
    for parameter, rows in (
        (out["tradeoff_parameter"], out["tradeoff"]),
        (out["sustained_parameter"], out["sustained_tradeoff"]),
    ):
        typer.echo(f"\ntrade-off over {parameter}:")
        typer.echo(
            "  value  false/machine-week  healthy time in event  detected  detected(sev>=0.3)"
        )
        for row in rows:
            typer.echo(
                f"  {row[parameter]:<5g}  "
                f"{_fmt(row['false_anomaly_events_per_machine_week']):>18}  "
                f"{_fmt(row['healthy_time_in_anomaly_fraction']):>21}  "
                f"{_fmt(row['faults_detected_fraction']):>8}  "
                f"{_fmt(row['faults_detected_fraction_severity_ge_0_3']):>18}"
            )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, indent=2) + "\n")
        typer.echo(f"\nwrote {json_out}")
