"""Detection quality on labelled clips: AUC and pAUC per machine group.

Protocol (small real sets):

- Clips are grouped by ``(dataset, machine_type, section)``.
- The group's test normals (every normal clip not in the official ``train`` split) are split
  into k folds. For each fold the baseline is built from the windows of the other folds'
  normals plus the official train normals, and tested on the held-out normals and all of
  the group's anomalies. The windows of one clip never straddle baseline and test.
- A clip's score aggregates its window scores (``Preset.aggregate``).
- AUC and pAUC (``roc_auc_score(..., max_fpr=0.1)``, McClish-standardised as scikit-learn
  returns it) are computed per fold, on scores of one model, and averaged over the folds of
  ``repeats`` different shuffles of the normals (repeated k-fold: with four normals per fold
  two odd clips landing together swing one split's AUC by 0.2). Pooling raw scores across
  folds instead would compare scores of different baselines, whose scales differ when the
  baselines hold only two or three clips.
- Groups without anomalies, or with fewer than 2 test normals per fold, are skipped and
  listed with the reason.

The operating point, what a machine will see, is measured on the same folds per window:

- ``far``: the share of held-out normal windows above the fold's calibrated threshold (the
  service's rule: each clip is a run of its own and is held out of everything fitted);
- ``det_window`` and ``det_clip``: the share of anomalous windows, and of anomalous clips
  (clip score = the aggregate of its windows), above that threshold;
- ``best_det_at_1pct``: the share of anomalous windows above the 99th percentile of the
  held-out normal windows' scores, the best any threshold could do at 1 % window false
  alarms (separability apart from calibration).

With ``condition`` (a name in ``CONDITIONS``, e.g. ``"domain"``: DCASE's source and target
domains, read from the file names), each fold's baseline is a ``ConditionalBaseline``: one
baseline per condition value, each clip scored within its own condition, scores as ratios to
that condition's threshold.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from detectors.conditions import ConditionalBaseline
from detectors.embedders import build_embedder
from detectors.pipeline import embed_audio
from detectors.presets import DEFAULT_PRESET, PRESETS, REFERENCE_PRESET, Preset

__all__ = ["DEFAULT_PRESET", "PRESETS", "REFERENCE_PRESET", "Preset", "evaluate", "load_clips"]

MAX_FPR = 0.1
MIN_NORMALS_PER_FOLD = 2


@dataclass(frozen=True)
class Clip:
    """One labelled recording."""

    path: Path
    dataset: str
    machine_type: str
    section: str
    split: str  # "train", "test", "unknown", "unsplit"
    label: str  # "normal" or "anomaly"

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.dataset, self.machine_type, self.section)


_DOMAIN = re.compile(r"_(source|target)_")


def clip_domain(clip: Clip) -> str:
    """DCASE 2021+ domain of a clip (``source`` / ``target``, from its file name), else "all"."""
    m = _DOMAIN.search(clip.path.name)
    return m.group(1) if m else "all"


_ATTRIBUTES = re.compile(r"_(?:normal|anomaly)_\d+_(.+)\.wav$")


def clip_attributes(clip: Clip) -> str:
    """DCASE 2022+ attributes of a clip from its file name (``pat_02`` for a valve's pattern,
    ``car_A1_spd_28V_mic_1`` for a toy car), else "all"."""
    m = _ATTRIBUTES.search(clip.path.name)
    return m.group(1) if m else "all"


# Operating conditions a clip can be evaluated within: name -> clip -> condition value.
CONDITIONS: dict[str, Callable[[Clip], str]] = {
    "domain": clip_domain,
    "attributes": clip_attributes,
}


# -- reading clip lists --------------------------------------------------------------------


def read_manifest(csv_path: str | Path, root: str | Path | None = None) -> list[Clip]:
    """Clips listed in a manifest CSV with columns path, dataset, machine_type, section, split,
    label (as ``shared/data/machine-audio/manifest.csv``); paths are relative to ``root``
    (default: the manifest's folder)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest {csv_path} does not exist")
    root = Path(root) if root is not None else csv_path.parent
    required = {"path", "dataset", "machine_type", "section", "split", "label"}
    clips = []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"manifest {csv_path} lacks column(s): {', '.join(sorted(missing))}")
        for row in reader:
            label = "anomaly" if row["label"] in ("anomaly", "abnormal") else row["label"]
            if label not in ("normal", "anomaly"):
                raise ValueError(f"manifest row {row['path']}: label must be normal or anomaly")
            clips.append(
                Clip(
                    root / row["path"],
                    row["dataset"],
                    row["machine_type"],
                    row["section"],
                    row["split"],
                    label,
                )
            )
    return clips


_DCASE_NAME = re.compile(
    r"^(?:(?P<section>section_\d+)_(?:\w+?_)?(?P<split>train|test)_(?P<label>normal|anomaly)"
    r"|(?P<label2>normal|anomaly)_(?P<id>id_\d+))_"
)


def read_dcase_tree(directory: str | Path, dataset: str | None = None) -> list[Clip]:
    """Clips of a DCASE-style tree ``<machine_type>/<train|test>/<name>.wav``.

    Labels and sections come from DCASE file names: ``section_00_source_test_anomaly_...``
    (2021+) or ``anomaly_id_00_...`` (2020).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    dataset = dataset or directory.name
    clips = []
    for wav in sorted(directory.glob("*/*/*.wav")):
        m = _DCASE_NAME.match(wav.name)
        if not m:
            continue
        machine_type, split = wav.parent.parent.name, wav.parent.name
        section = m.group("section") or m.group("id")
        label = m.group("label") or m.group("label2")
        clips.append(Clip(wav, dataset, machine_type, section, split, label))
    if not clips:
        raise ValueError(f"no DCASE-named .wav files under {directory}/<machine_type>/<split>/")
    return clips


def load_clips(source: str | Path, root: str | Path | None = None) -> list[Clip]:
    """A manifest CSV or a DCASE-style directory."""
    source = Path(source)
    return read_dcase_tree(source) if source.is_dir() else read_manifest(source, root)


# -- scoring ---------------------------------------------------------------------------------


def aggregate_scores(window_scores: np.ndarray, how: str) -> float:
    """One clip score from ``(n_windows,)`` window scores: mean, max or pNN."""
    if how == "mean":
        return float(window_scores.mean())
    if how == "max":
        return float(window_scores.max())
    if how.startswith("p") and how[1:].isdigit():
        return float(np.percentile(window_scores, int(how[1:])))
    raise ValueError(f"aggregate must be mean, max or pNN, not {how!r}")


class ClipEmbedder:
    """Embeds clips with a preset's front end, each clip once (cached by path)."""

    def __init__(self, preset: Preset):
        self.preset = preset
        self.embedder = build_embedder(preset.embedder)
        self._cache: dict[Path, np.ndarray] = {}

    def __call__(self, clip: Clip) -> np.ndarray:
        """``(n_windows, dim)`` vectors of one clip."""
        if clip.path not in self._cache:
            p = self.preset
            out = embed_audio(clip.path, self.embedder, p.window_seconds, p.hop_seconds, p.channel)
            self._cache[clip.path] = out.vectors
        return self._cache[clip.path]


@dataclass
class FoldResult:
    auc: float
    pauc: float
    normal_scores: list[float]
    anomaly_scores: list[float]
    threshold: float
    far: float = float("nan")
    det_window: float = float("nan")
    det_clip: float = float("nan")
    best_det_at_1pct: float = float("nan")
    threshold_rule: str = ""


@dataclass
class GroupResult:
    dataset: str
    machine_type: str
    section: str
    normals: int
    anomalies: int
    train_normals: int
    n_folds: int
    repeats: int
    folds: list[FoldResult] = field(default_factory=list)
    condition_values: int = 1  # distinct operating conditions among its clips (with condition)

    @property
    def split_by_condition(self) -> bool:
        """Whether an evaluation within a condition differed from a pooled one here."""
        return self.condition_values > 1

    @property
    def auc(self) -> float:
        return float(np.mean([f.auc for f in self.folds]))

    @property
    def pauc(self) -> float:
        return float(np.mean([f.pauc for f in self.folds]))

    def mean_of(self, name: str) -> float:
        """Fold average of one operating-point figure (``FoldResult`` attribute)."""
        return float(np.mean([getattr(f, name) for f in self.folds]))

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "machine_type": self.machine_type,
            "section": self.section,
            "normals": self.normals,
            "anomalies": self.anomalies,
            "train_normals": self.train_normals,
            "folds": self.n_folds,
            "repeats": self.repeats,
            "auc": round(self.auc, 4),
            "pauc": round(self.pauc, 4),
            "far": round(self.mean_of("far"), 4),
            "det_window": round(self.mean_of("det_window"), 4),
            "det_clip": round(self.mean_of("det_clip"), 4),
            "best_det_at_1pct": round(self.mean_of("best_det_at_1pct"), 4),
            "threshold_rules": sorted({f.threshold_rule for f in self.folds}),
        }


@dataclass
class EvaluationResult:
    preset: Preset
    groups: list[GroupResult]
    skipped: list[dict[str, str]]
    condition: str | None = None

    @property
    def mean_auc(self) -> float:
        return float(np.mean([g.auc for g in self.groups])) if self.groups else float("nan")

    @property
    def mean_pauc(self) -> float:
        return float(np.mean([g.pauc for g in self.groups])) if self.groups else float("nan")

    def mean_of(self, name: str) -> float:
        """Mean over groups of a fold-averaged operating-point figure."""
        return float(np.mean([g.mean_of(name) for g in self.groups])) if self.groups else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": asdict(self.preset),
            "groups": [g.summary() for g in self.groups],
            "skipped": self.skipped,
            "mean_auc": round(self.mean_auc, 4),
            "mean_pauc": round(self.mean_pauc, 4),
            "mean_far": round(self.mean_of("far"), 4),
            "mean_det_window": round(self.mean_of("det_window"), 4),
            "mean_best_det_at_1pct": round(self.mean_of("best_det_at_1pct"), 4),
        }


def _folds(n: int, n_folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, n_folds)]


def plan_group(clips: list[Clip], folds: int) -> tuple[int, str | None]:
    """Number of folds for a group, or 0 and the reason it is skipped."""
    normals = [c for c in clips if c.label == "normal" and c.split != "train"]
    train = [c for c in clips if c.label == "normal" and c.split == "train"]
    anomalies = [c for c in clips if c.label == "anomaly"]
    if not anomalies:
        return 0, "no anomalies"
    n_folds = min(folds, len(normals) // MIN_NORMALS_PER_FOLD)
    if n_folds >= 2:
        return n_folds, None
    if n_folds == 1 and train:
        return 1, None  # one fold: the official train clips are the whole baseline
    if train:
        return (
            0,
            f"{len(normals)} test normal(s): needs {MIN_NORMALS_PER_FOLD} beside train clips",
        )
    return 0, (
        f"{len(normals)} test normal(s) and no train clips: needs {2 * MIN_NORMALS_PER_FOLD} "
        f"for 2 folds of {MIN_NORMALS_PER_FOLD}"
    )


def evaluate_group(
    clips: list[Clip],
    embed: Callable[[Clip], np.ndarray],
    preset: Preset,
    n_folds: int,
    seed: int = 0,
    repeats: int = 3,
    condition: str | None = None,
) -> GroupResult:
    """Repeated k-fold evaluation of one group (see the module docstring)."""
    condition_of = CONDITIONS[condition] if condition else None
    normals = [c for c in clips if c.label == "normal" and c.split != "train"]
    train = [c for c in clips if c.label == "normal" and c.split == "train"]
    anomalies = [c for c in clips if c.label == "anomaly"]
    first = clips[0]
    repeats = repeats if n_folds > 1 else 1  # one fold holds every normal out: nothing to shuffle
    result = GroupResult(
        first.dataset,
        first.machine_type,
        first.section,
        len(normals),
        len(anomalies),
        len(train),
        n_folds,
        repeats,
    )
    if condition_of is not None:
        result.condition_values = len({condition_of(c) for c in clips})
    anomaly_vectors = [embed(c) for c in anomalies]
    splits = [held for r in range(repeats) for held in _folds(len(normals), n_folds, seed + r)]
    for held in splits:
        held_set = set(held.tolist())
        members = train + [c for i, c in enumerate(normals) if i not in held_set]
        vectors = [embed(c) for c in members]
        groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(vectors)])
        if condition_of is None:
            model = preset.baseline().fit(np.concatenate(vectors), groups=groups)
            threshold, rule = model.threshold_, str(model.threshold_method_.get("rule", ""))

            def score(clip: Clip, v: np.ndarray, model=model) -> np.ndarray:
                return model.decision_function(v)
        else:
            conditions = np.concatenate(
                [np.full(len(v), condition_of(c)) for c, v in zip(members, vectors, strict=True)]
            )
            model = ConditionalBaseline(preset.baseline).fit(
                np.concatenate(vectors), groups, conditions
            )
            threshold = model.threshold_
            rule = (
                "within "
                + condition
                + ": "
                + ", ".join(
                    sorted(
                        {str(m.threshold_method_.get("rule", "")) for m in model.models_.values()}
                    )
                )
            )

            def score(clip: Clip, v: np.ndarray, model=model) -> np.ndarray:
                return model.decision_function(v, condition_of(clip))

        normal_windows = [score(normals[i], embed(normals[i])) for i in held]
        anomaly_windows = [score(c, v) for c, v in zip(anomalies, anomaly_vectors, strict=True)]
        normal_scores = [aggregate_scores(w, preset.aggregate) for w in normal_windows]
        anomaly_scores = [aggregate_scores(w, preset.aggregate) for w in anomaly_windows]
        y = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomaly_scores))]
        s = np.r_[normal_scores, anomaly_scores]
        normal_all, anomaly_all = np.concatenate(normal_windows), np.concatenate(anomaly_windows)
        best = float(np.quantile(normal_all, 0.99))
        result.folds.append(
            FoldResult(
                auc=float(roc_auc_score(y, s)),
                pauc=float(roc_auc_score(y, s, max_fpr=MAX_FPR)),
                normal_scores=normal_scores,
                anomaly_scores=anomaly_scores,
                threshold=threshold,
                far=float(np.mean(normal_all > threshold)),
                det_window=float(np.mean(anomaly_all > threshold)),
                det_clip=float(np.mean(np.array(anomaly_scores) > threshold)),
                best_det_at_1pct=float(np.mean(anomaly_all > best)),
                threshold_rule=rule,
            )
        )
    return result


def group_clips(clips: Iterable[Clip]) -> dict[tuple[str, str, str], list[Clip]]:
    groups: dict[tuple[str, str, str], list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    return dict(sorted(groups.items()))


def evaluate(
    clips: list[Clip],
    preset: Preset,
    folds: int = 5,
    seed: int = 0,
    repeats: int = 3,
    embed: Callable[[Clip], np.ndarray] | None = None,
    on_group: Callable[[tuple[str, str, str]], None] | None = None,
    condition: str | None = None,
) -> EvaluationResult:
    """Evaluate ``preset`` on every group of ``clips``.

    ``embed`` (clip -> ``(n_windows, dim)``) defaults to a cached ``ClipEmbedder(preset)``;
    ``on_group`` is called after each group (progress reporting); ``condition`` (a name in
    ``CONDITIONS``) scores each clip within its operating condition, and the result's preset
    is named ``"<preset> by <condition>"``.
    """
    if condition is not None and condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    embed = embed or ClipEmbedder(preset)
    results, skipped = [], []
    for key, members in group_clips(clips).items():
        n_folds, reason = plan_group(members, folds)
        if reason:
            skipped.append(
                {"dataset": key[0], "machine_type": key[1], "section": key[2], "reason": reason}
            )
        else:
            results.append(
                evaluate_group(members, embed, preset, n_folds, seed, repeats, condition)
            )
        if on_group:
            on_group(key)
    if condition is not None:
        preset = replace(preset, name=f"{preset.name} by {condition}")
    return EvaluationResult(preset, results, skipped, condition)


# -- reporting -------------------------------------------------------------------------------


def markdown_table(results: list[EvaluationResult]) -> str:
    """One row per group, AUC and pAUC of each preset side by side, means last."""
    head = "| dataset | machine | section | normals | anomalies | folds x repeats |"
    rule = "|---|---|---|---:|---:|---:|"
    for r in results:
        head += f" AUC {r.preset.name} | pAUC {r.preset.name} |"
        rule += "---:|---:|"
    lines = [head, rule]
    for i, g in enumerate(results[0].groups):
        row = (
            f"| {g.dataset} | {g.machine_type} | {g.section} | {g.normals}"
            f"{f' (+{g.train_normals} train)' if g.train_normals else ''} | {g.anomalies} "
            f"| {g.n_folds}x{g.repeats} |"
        )
        for r in results:
            row += f" {r.groups[i].auc:.3f} | {r.groups[i].pauc:.3f} |"
        lines.append(row)
    mean = "| **mean** | | | | | |"
    for r in results:
        mean += f" **{r.mean_auc:.3f}** | **{r.mean_pauc:.3f}** |"
    lines.append(mean)
    return "\n".join(lines)


def operating_point_table(results: list[EvaluationResult]) -> str:
    """Per group and preset: false alarms and detections at the calibrated threshold, and the
    best detection any threshold reaches at 1 % window false alarms."""
    lines = [
        "| dataset | machine | section | preset | target FAR | window FAR | window det "
        "| clip det | best det @1% FAR | rule |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for i in range(len(results[0].groups)):
        for r in results:
            h = r.groups[i]
            if r.condition and not h.split_by_condition:
                continue  # one condition only: the same figures as the pooled row
            lines.append(
                f"| {h.dataset} | {h.machine_type} | {h.section} | {r.preset.name} "
                f"| {r.preset.baseline().false_alarm_rate:.3f} | {h.mean_of('far'):.3f} "
                f"| {h.mean_of('det_window'):.3f} | {h.mean_of('det_clip'):.3f} "
                f"| {h.mean_of('best_det_at_1pct'):.3f} "
                f"| {', '.join(sorted({f.threshold_rule for f in h.folds}))} |"
            )
    return "\n".join(lines)


def plot_group(group: GroupResult, path: str | Path, title_suffix: str = "") -> None:
    """ROC curve per fold and a histogram of clip scores (relative to each fold's threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(10, 4))
    normal_ratio, anomaly_ratio = [], []
    for i, fold in enumerate(group.folds):
        y = np.r_[np.zeros(len(fold.normal_scores)), np.ones(len(fold.anomaly_scores))]
        fpr, tpr, _ = roc_curve(y, np.r_[fold.normal_scores, fold.anomaly_scores])
        label = f"fold {i + 1} (AUC {fold.auc:.2f})" if len(group.folds) <= 6 else None
        ax_roc.plot(fpr, tpr, alpha=0.5, label=label)
        normal_ratio += [s / fold.threshold for s in fold.normal_scores]
        anomaly_ratio += [s / fold.threshold for s in fold.anomaly_scores]
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.axvline(MAX_FPR, color="grey", lw=0.8, ls="--")
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC  AUC {group.auc:.3f}  pAUC {group.pauc:.3f}",
    )
    if len(group.folds) <= 6:
        ax_roc.legend(fontsize=7, loc="lower right")
    bins = np.linspace(min(normal_ratio + anomaly_ratio), max(normal_ratio + anomaly_ratio), 30)
    ax_hist.hist(normal_ratio, bins=bins, alpha=0.6, label="normal")
    ax_hist.hist(anomaly_ratio, bins=bins, alpha=0.6, label="anomaly")
    ax_hist.axvline(1.0, color="k", lw=1, ls="--", label="threshold")
    ax_hist.set(xlabel="clip score / fold threshold", ylabel="clips", title="clip scores")
    ax_hist.legend(fontsize=8)
    fig.suptitle(f"{group.dataset} {group.machine_type} {group.section}{title_suffix}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
