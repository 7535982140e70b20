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


@evaluate_app.command("clips")
def evaluate_clips(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="manifest CSV (path,dataset,machine_type,section,split,label,...) "
            "or a DCASE-style directory"
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option(
            help="folder the manifest paths are relative to (default: the manifest's folder)"
        ),
    ] = None,
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
) -> None:
    """Evaluate detection quality (AUC, pAUC) on labelled clips. Runs locally, no service needed."""
    from service.cli.evaluate_report import run_evaluation

    try:
        run_evaluation(manifest, root, preset or ["default"], json_out, plots, markdown, folds)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
