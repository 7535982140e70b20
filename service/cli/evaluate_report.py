"""``humwatch evaluate``: runs detectors.evaluate with progress, prints and writes the results."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from detectors.evaluate import (
    CONDITIONS,
    PRESETS,
    ClipEmbedder,
    EvaluationResult,
    evaluate,
    load_clips,
    markdown_table,
    operating_point_table,
    plot_group,
)
from detectors.evaluate_simulated import (
    SimulatedProtocol,
    SimulatedResult,
    evaluate_simulated,
    fault_table,
    learning_table,
    seeds_table,
    simulated_table,
)


def _print_table(console: Console, results: list[EvaluationResult]) -> None:
    table = Table(
        title="Detection quality (AUC / pAUC at FPR <= 0.1, mean over folds of repeated k-fold)"
    )
    for col in ("dataset", "machine", "section", "normals", "anomalies", "folds x repeats"):
        table.add_column(
            col, justify="right" if col in ("normals", "anomalies", "folds x repeats") else "left"
        )
    for r in results:
        table.add_column(f"AUC {r.preset.name}", justify="right")
        table.add_column(f"pAUC {r.preset.name}", justify="right")
    for i, g in enumerate(results[0].groups):
        row = [
            g.dataset,
            g.machine_type,
            g.section,
            str(g.normals),
            str(g.anomalies),
            f"{g.n_folds}x{g.repeats}",
        ]
        for r in results:
            row += [f"{r.groups[i].auc:.3f}", f"{r.groups[i].pauc:.3f}"]
        table.add_row(*row)
    mean = ["mean", "", "", "", "", ""]
    for r in results:
        mean += [f"{r.mean_auc:.3f}", f"{r.mean_pauc:.3f}"]
    table.add_row(*mean, style="bold")
    console.print(table)
    op = Table(title="Operating point (mean over folds): at the calibrated threshold, and best")
    for col in ("group", "preset", "window FAR", "window det", "clip det", "best det @1%"):
        op.add_column(col, justify="left" if col in ("group", "preset") else "right")
    for i, g in enumerate(results[0].groups):
        for r in results:
            h = r.groups[i]
            if r.condition and not h.split_by_condition:
                continue  # one condition only: the same figures as the pooled row
            op.add_row(
                f"{g.dataset} {g.machine_type} {g.section}",
                r.preset.name,
                f"{h.mean_of('far'):.3f}",
                f"{h.mean_of('det_window'):.3f}",
                f"{h.mean_of('det_clip'):.3f}",
                f"{h.mean_of('best_det_at_1pct'):.3f}",
            )
    console.print(op)
    for s in results[0].skipped:
        console.print(
            f"skipped {s['dataset']} {s['machine_type']} {s['section']}: {s['reason']}",
            soft_wrap=True,
        )


def run_evaluation(
    manifest: Path,
    root: Path | None,
    preset_names: list[str],
    json_out: Path | None,
    plots: Path | None,
    markdown: Path | None,
    folds: int,
    condition: str | None = None,
) -> list[EvaluationResult]:
    unknown = [p for p in preset_names if p not in PRESETS]
    if unknown:
        raise ValueError(
            f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}"
        )
    if condition is not None and condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    clips = load_clips(manifest, root)
    console = Console(width=None if sys.stdout.isatty() else 160)
    n_groups = len({c.group for c in clips})
    results = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        for name in preset_names:
            embed = ClipEmbedder(PRESETS[name])  # shared by the pooled and conditional runs
            for within in (None, condition) if condition else (None,):
                label = f"preset {name}" + (f" by {within}" if within else "")
                task = progress.add_task(label, total=n_groups)
                results.append(
                    evaluate(
                        clips,
                        PRESETS[name],
                        folds=folds,
                        embed=embed,
                        on_group=lambda _k, t=task: progress.advance(t),
                        condition=within,
                    )
                )
    if not results[0].groups:
        raise ValueError("no group could be evaluated: every group lacks anomalies or normals")
    _print_table(console, results)

    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = results[0].to_dict()
        if len(results) > 1:
            doc["presets"] = [r.to_dict() for r in results]
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        for r in results:
            stem = r.preset.name.replace(" ", "_")
            for g in r.groups:
                plot_group(
                    g,
                    plots / f"{stem}_{g.dataset}_{g.machine_type}_{g.section}.png",
                    f" ({r.preset.name})",
                )
    if markdown:
        command = (
            "humwatch " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "humwatch evaluate clips"
        )
        _write_markdown(markdown, results, command)
    return results


def _write_markdown(
    path: Path,
    results: list[EvaluationResult],
    command: str,
    marker: str = "evaluate",
    body: str | None = None,
) -> None:
    """Replace the generated block of ``path`` (between markers), keeping the hand-written rest."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if body is not None:
        _replace_block(path, begin, end, f"{begin}\nGenerated by `{command}`.\n\n{body}\n{end}")
        return
    skipped = "\n".join(
        f"- {s['dataset']} {s['machine_type']} {s['section']}: {s['reason']}"
        for s in results[0].skipped
    )
    block = (
        f"{begin}\nGenerated by `{command}`.\n\n{markdown_table(results)}\n\n"
        f"Operating point (fold means; target false-alarm rate 1 % per window):\n\n"
        f"{operating_point_table(results)}\n\n"
        f"Skipped groups:\n\n{skipped or '- none'}\n{end}"
    )
    _replace_block(path, begin, end, block)


def _replace_block(path: Path, begin: str, end: str, block: str) -> None:
    text = path.read_text() if path.exists() else "# Evaluation\n\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_simulated(
    preset_names: list[str],
    protocols: list[SimulatedProtocol],
    json_out: Path | None,
    markdown: Path | None,
) -> list[list[SimulatedResult]]:
    """The new-run protocol on simulated machines for each preset and seed (one protocol per
    seed); prints and writes tables. Returns ``[seed][preset]`` results."""
    unknown = [p for p in preset_names if p not in PRESETS]
    if unknown:
        raise ValueError(
            f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}"
        )
    console = Console(width=None if sys.stdout.isatty() else 160)
    protocol = protocols[0]
    seeds = ", ".join(str(p.seed) for p in protocols)
    console.print(
        f"simulated machines {', '.join(protocol.kinds)}: {protocol.enrollment_runs} enrollment "
        f"runs of {protocol.run_seconds:g} s, {protocol.new_runs} new runs of "
        f"{protocol.new_run_seconds:g} s, faults {protocol.fault_seconds:g} s, "
        f"{protocol.learning_runs} learning runs offered; seed(s) {seeds}"
    )
    by_seed = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        for proto in protocols:
            results = []
            for name in preset_names:
                task = progress.add_task(f"preset {name} seed {proto.seed}", total=len(proto.kinds))
                results.append(
                    evaluate_simulated(
                        PRESETS[name], proto, on_kind=lambda _k, t=task: progress.advance(t)
                    )
                )
            console.print(f"seed {proto.seed}:")
            console.print(simulated_table(results))
            if proto.learning_runs or proto.learning_faults:
                console.print(f"learning (rule {proto.learning_rule}):")
                console.print(learning_table(results))
            by_seed.append(results)
    if len(by_seed) > 1:
        console.print("over seeds:")
        console.print(seeds_table(by_seed))
    console.print(f"detection at severity 0.3 per fault type ({by_seed[0][0].preset.name}):")
    console.print(fault_table(by_seed[0][0]))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = [r.to_dict() for results in by_seed for r in results]
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if markdown:
        command = "humwatch " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "humwatch evaluate"
        first = by_seed[0]
        body = (
            f"Seed(s) {seeds}: {protocol.enrollment_runs} enrollment runs of "
            f"{protocol.run_seconds:g} s per machine ({protocol.learning_runs} more healthy runs "
            f"offered to learning), {protocol.new_runs} new healthy runs of "
            f"{protocol.new_run_seconds:g} s, each fault {protocol.fault_seconds:g} s on a new "
            f"run.\n\n"
        )
        if len(by_seed) > 1:
            body += f"Over seeds (all kinds):\n\n{seeds_table(by_seed)}\n\nPer kind, "
        else:
            body += "Per kind, "
        body += (
            f"seed {protocols[0].seed}:\n\n{simulated_table(first)}\n\nDetection at severity "
            f"0.3 per fault type ({first[0].preset.name}, seed {protocols[0].seed}):\n\n"
            f"{fault_table(first[0])}\n"
        )
        _write_markdown(markdown, [], command, marker="simulated", body=body)
    return by_seed
