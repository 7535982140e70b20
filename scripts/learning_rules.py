"""Compare learning admission rules on the simulated new-run protocol.

For every seed, each machine kind enrolls, is offered healthy learning runs with a
developing fault spread between them, and is measured after learning, once per admission
rule (``detectors.learning.AdmissionRule``); the runs are embedded once per seed and shared
by the rules, so every row is what ``humwatch evaluate simulated --learning-rule RULE`` with
the same options gives. Prints a Markdown table per rule and kind, and one over rules.

    python scripts/learning_rules.py --enrollment-runs 4 --learning-runs 8 \\
        --learning-fault bearing --learning-fault imbalance --seed 0 --seed 1 \\
        --rule share --rule median@1.1 --rule share@1.1
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

from detectors.evaluate_simulated import (
    SimulatedProtocol,
    evaluate_simulated,
    learning_rules_table,
    learning_table,
)
from detectors.learning import AdmissionRule
from detectors.presets import PRESETS
from detectors.simulate import MACHINE_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--enrollment-runs", type=int, default=4)
    parser.add_argument("--learning-runs", type=int, default=8)
    parser.add_argument("--new-runs", type=int, default=20)
    parser.add_argument("--kind", action="append", choices=MACHINE_KINDS)
    parser.add_argument("--learning-fault", action="append", default=[])
    parser.add_argument("--learning-fault-severity", action="append", type=float)
    parser.add_argument("--seed", action="append", type=int)
    parser.add_argument("--rule", action="append", help="share, share@1.1, median@1.25, p90@1")
    parser.add_argument("--json", type=Path, help="write every result as JSON here")
    parser.add_argument(
        "--cache", type=Path, help="keep the embedded runs in this .pkl file (read if there)"
    )
    args = parser.parse_args(argv)
    rules = [str(AdmissionRule.parse(r)) for r in (args.rule or ["share"])]
    base = SimulatedProtocol(
        kinds=tuple(args.kind or MACHINE_KINDS),
        enrollment_runs=args.enrollment_runs,
        new_runs=args.new_runs,
        learning_runs=args.learning_runs,
        learning_faults=tuple(args.learning_fault),
        learning_fault_severities=tuple(args.learning_fault_severity or (0.1, 0.3)),
    )
    preset = PRESETS[args.preset]
    by_rule: dict[str, list] = {rule: [] for rule in rules}
    cache: dict = {}
    if args.cache and args.cache.exists():
        cache = pickle.loads(args.cache.read_bytes())  # a file this script wrote
    for seed in dict.fromkeys(args.seed or [0]):
        for rule in rules:
            protocol = replace(base, seed=seed, learning_rule=rule)
            result = evaluate_simulated(preset, protocol, cache=cache)
            by_rule[rule].append(result)
            print(f"seed {seed}, rule {rule}:\n{learning_table([result])}\n", flush=True)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(cache))
    print(learning_rules_table(by_rule))
    if args.json:
        doc = [r.to_dict() for results in by_rule.values() for r in results]
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
