"""The learning period's admission rule (detectors.learning), on ratios made to measure."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.learning import (
    DEFAULT_RULE,
    MAX_OUTLIER_FRACTION,
    AdmissionRule,
    admit_run,
    refusal,
)


def ratios(n: int, level: float, above: int = 0, high: float = 2.0) -> np.ndarray:
    """``n`` window ratios at ``level``, the last ``above`` of them at ``high``."""
    out = np.full(n, level)
    out[n - above :] = high if above else level
    return out


def test_share_rule_admits_up_to_five_percent_above_the_threshold_of_both_versions():
    rule = AdmissionRule("share", 1.0)
    calm = ratios(100, 0.6)
    assert admit_run(calm, calm, rule)
    assert admit_run(ratios(100, 0.6, above=5), calm, rule)  # exactly 5 %
    assert not admit_run(ratios(100, 0.6, above=6), calm, rule)
    # Normal to the active version, but not to the enrollment one: refused.
    assert not admit_run(calm, ratios(100, 0.6, above=6), rule)
    assert "enrollment" in refusal(calm, ratios(100, 0.6, above=6), rule)
    assert "active" in refusal(ratios(100, 0.6, above=6), calm, rule)


def test_a_margin_moves_the_line_the_windows_are_counted_above():
    run = ratios(100, 0.6, above=20, high=1.05)  # 20 % of windows just above the threshold
    assert not admit_run(run, run, AdmissionRule("share", 1.0))
    assert admit_run(run, run, AdmissionRule("share", 1.1))
    assert not admit_run(ratios(100, 0.6, above=20, high=1.2), run, AdmissionRule("share", 1.1))


def test_median_and_p90_rules_bound_a_quantile_of_the_ratios():
    run = np.linspace(0.5, 1.5, 101)  # median 1.0, 90th percentile 1.4
    assert admit_run(run, run, AdmissionRule("median", 1.0))
    assert not admit_run(run + 0.01, run, AdmissionRule("median", 1.0))
    assert not admit_run(run, run, AdmissionRule("p90", 1.25))
    assert admit_run(run, run, AdmissionRule("p90", 1.4))
    assert "median ratio" in refusal(run, run + 0.2, AdmissionRule("median", 1.1))


def test_rules_parse_and_print_by_name():
    assert AdmissionRule.parse("share") == AdmissionRule("share", 1.0)
    assert AdmissionRule.parse("median@1.25") == AdmissionRule("median", 1.25)
    assert str(AdmissionRule.parse("p90@1.1")) == "p90@1.1"
    assert str(AdmissionRule("share", 1.0)) == "share"
    for bad in ("mean@1", "share@x", "p90@0", "p90@-1"):
        with pytest.raises(ValueError):
            AdmissionRule.parse(bad)


def test_no_windows_or_non_finite_ratios_are_refused():
    calm = ratios(10, 0.5)
    assert refusal(np.array([]), calm) == "no windows"
    assert not admit_run(calm, np.array([0.5, np.nan]))
    assert not admit_run(np.array([0.5, np.inf]), calm)


def test_the_default_rule_is_a_rule_and_the_limit_a_share():
    assert isinstance(DEFAULT_RULE, AdmissionRule)
    assert 0 < MAX_OUTLIER_FRACTION < 0.5
    assert admit_run(ratios(40, 0.5), ratios(40, 0.5))
    assert not admit_run(ratios(40, 3.0), ratios(40, 3.0))
