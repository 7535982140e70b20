"""``humwatch evaluate``: detection quality, measured locally (no service needed).

A group of commands: ``clips`` (labelled recordings: AUC, pAUC and the operating point), and
the simulated evaluations registered on ``evaluate_app`` by their own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import app, fail

evaluate_app = typer.Typer(
    help="Measure detection quality. Runs locally, no service needed.", no_args_is_help=True
)
app.add_typer(evaluate_app, name="evaluate")

# The labelled clips, as `evaluate clips` and `evaluate events` take them.
ManifestArgument = Annotated[
    Path,
    typer.Argument(
        help="manifest CSV (path,dataset,machine_type,section,split,label,...) "
        "or a DCASE-style directory"
    ),
]
RootOption = Annotated[
    Path | None,
    typer.Option(help="folder the manifest paths are relative to (default: the manifest's folder)"),
]


@evaluate_app.command("clips")
def evaluate_clips(
    manifest: ManifestArgument,
    root: RootOption = None,
    preset: Annotated[
        list[str] | None,
        typer.Option(help="preset(s) to evaluate: default, reference (repeat to compare)"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results as JSON here")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="folder for ROC / score-histogram PNGs per group")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="write the table as Markdown here (docs/evaluation.md)")
    ] = None,
    folds: Annotated[int, typer.Option(help="k-fold splits over each group's normals")] = 5,
    condition: Annotated[
        str | None,
        typer.Option(
            help="also evaluate each preset within this operating condition "
            "(domain: DCASE source/target; attributes: DCASE attributes such as a valve's "
            "pattern; both from the file names)"
        ),
    ] = None,
) -> None:
    """Evaluate detection quality (AUC, pAUC) on labelled clips. Runs locally, no service needed."""
    from service.cli.evaluate_report import run_evaluation

    try:
        run_evaluation(
            manifest, root, preset or ["default"], json_out, plots, markdown, folds, condition
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@evaluate_app.command("simulated")
def evaluate_simulated(
    preset: Annotated[
        list[str] | None,
        typer.Option(help="preset(s) to evaluate: default, reference (repeat to compare)"),
    ] = None,
    enrollment_runs: Annotated[
        int, typer.Option(min=2, max=100, help="runs each machine enrolls on")
    ] = 8,
    run_seconds: Annotated[float, typer.Option(min=5, max=600, help="length of each run")] = 40.0,
    new_runs: Annotated[int, typer.Option(min=1, max=200, help="new healthy runs scored")] = 20,
    seed: Annotated[
        list[int] | None,
        typer.Option(
            min=0,
            max=10_000,
            help="seed of every run; repeat to average over several enrollment draws",
        ),
    ] = None,
    learning_runs: Annotated[
        int, typer.Option(min=0, max=200, help="healthy runs offered to learning after v1")
    ] = 0,
    learning_rule: Annotated[
        str | None,
        typer.Option(
            help="learning's admission rule: share, share@1.1, median@1.25, p90@1 "
            "(default: the service's)"
        ),
    ] = None,
    learning_fault: Annotated[
        list[str] | None,
        typer.Option(
            help="offer learning a developing fault of this type too (repeat), one run at "
            "severity 0.1 and one at 0.3 each, between the healthy runs"
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results as JSON here")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="write the tables as Markdown here (docs/evaluation.md)")
    ] = None,
) -> None:
    """New-run false alarms and fault detection on simulated machines. Runs locally.

    Every simulated machine kind enrolls on several runs, then a new healthy run (false
    alarms) and the same run with each fault at several severities (detection) are scored.
    """
    from detectors.evaluate_simulated import SimulatedProtocol
    from detectors.learning import DEFAULT_RULE, AdmissionRule
    from detectors.simulate import FAULT_TYPES
    from service.cli.evaluate_report import run_simulated

    try:
        rule = str(AdmissionRule.parse(learning_rule) if learning_rule else DEFAULT_RULE)
    except ValueError as exc:
        fail(str(exc))
    unknown = [f for f in learning_fault or [] if f not in FAULT_TYPES]
    if unknown:
        fail(f"unknown fault type(s) {', '.join(unknown)}; choose from {', '.join(FAULT_TYPES)}")
    protocols = [
        SimulatedProtocol(
            enrollment_runs=enrollment_runs,
            run_seconds=run_seconds,
            new_runs=new_runs,
            seed=s,
            learning_runs=learning_runs,
            learning_rule=rule,
            learning_faults=tuple(dict.fromkeys(learning_fault or [])),
        )
        for s in dict.fromkeys(seed or [0])
    ]
    try:
        run_simulated(preset or ["default"], protocols, json_out, markdown)
    except ValueError as exc:
        fail(str(exc))
