"""Which held-out normal clips make the window false alarms of `humwatch evaluate clips`.

    python scripts/far_by_clip.py ../shared/data/machine-audio/manifest.csv [--preset default]

For each group with at least 20 normal clips, scores the same folds as ``detectors.evaluate``
(5-fold, 3 shuffles) and prints, per normal clip, the share of its windows above the fold's
calibrated threshold and its median ratio (score / threshold), worst first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from detectors.evaluate import ClipEmbedder, _folds, group_clips, load_clips, plan_group
from detectors.presets import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--min-normals", type=int, default=20)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    embed = ClipEmbedder(preset)
    for key, members in group_clips(load_clips(args.manifest)).items():
        normals = [c for c in members if c.label == "normal" and c.split != "train"]
        train = [c for c in members if c.label == "normal" and c.split == "train"]
        n_folds, reason = plan_group(members, 5)
        if reason or len(normals) + len(train) < args.min_normals:
            continue
        above: dict[int, list[float]] = {}
        ratio: dict[int, list[float]] = {}
        for repeat in range(3):
            for held in _folds(len(normals), n_folds, repeat):
                kept = train + [c for i, c in enumerate(normals) if i not in set(held.tolist())]
                vectors = [embed(c) for c in kept]
                groups = np.concatenate([np.full(len(v), i) for i, v in enumerate(vectors)])
                model = preset.baseline().fit(np.concatenate(vectors), groups=groups)
                for i in held:
                    scores = model.decision_function(embed(normals[i]))
                    above.setdefault(int(i), []).append(float(np.mean(scores > model.threshold_)))
                    ratio.setdefault(int(i), []).append(float(np.median(scores) / model.threshold_))
        far = np.mean([np.mean(v) for v in above.values()])
        print(f"{' '.join(key)}: window FAR {far:.4f} over {len(above)} held-out normal clips")
        for i in sorted(above, key=lambda i: -np.mean(above[i]))[: args.top]:
            print(
                f"  {normals[i].path.name:60s} above {np.mean(above[i]):.3f}"
                f"  median ratio {np.mean(ratio[i]):.2f}"
            )


if __name__ == "__main__":
    main()
