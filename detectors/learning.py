"""The learning period's admission rule: may an ended run join the next baseline version?

A run offered to learning has two sets of window ratios (score / threshold, so 1 is the
threshold): against the **active** version, which scored it, and against the **enrollment**
version (v1), which knew nothing of learned material. Both must look normal: a developing
fault then cannot creep into the baseline one small step at a time, since every admitted run
is also held against the baseline of enrollment alone.

A rule is a statistic of the ratios and a margin, applied to both sets:

- ``share`` (``share@M``): at most ``MAX_OUTLIER_FRACTION`` of the windows above ``M`` times
  the threshold (``share`` alone is ``M = 1``, the first rule of the service);
- ``median@M``, ``p90@M``: the run's median (90th percentile) ratio at most ``M``.

``DEFAULT_RULE`` (``share``) is the rule of the service's learning period
(``service/services/learning.py``, which also asks that every window was scored and none is
labelled anomaly); the simulated evaluation and the fleet simulation use this module to
mirror it. The other rules are the ones the simulated evaluation compared with it
(docs/evaluation.md, "Learning: admission rules and developing faults"): none was better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_OUTLIER_FRACTION = 0.05
ENROLLMENT_VERSION = 1
STATISTICS = ("share", "median", "p90")


@dataclass(frozen=True)
class AdmissionRule:
    """A statistic of a run's window ratios and the margin it must stay within."""

    statistic: str = "share"
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"unknown admission statistic {self.statistic!r}; choose one of "
                f"{', '.join(STATISTICS)}"
            )
        if not self.margin > 0:
            raise ValueError(f"the admission margin must be positive, got {self.margin}")

    @classmethod
    def parse(cls, text: str) -> AdmissionRule:
        """``"share"``, ``"share@1.1"``, ``"median@1.25"``, ``"p90@1.0"``."""
        statistic, _, margin = text.strip().partition("@")
        try:
            return cls(statistic, float(margin) if margin else 1.0)
        except ValueError as exc:
            raise ValueError(f"bad admission rule {text!r}: {exc}") from None

    def __str__(self) -> str:
        return self.statistic if self.margin == 1.0 else f"{self.statistic}@{self.margin:g}"

    def value(self, ratios: np.ndarray) -> float:
        """The statistic of one set of ratios (for ``share``: the share above the margin)."""
        ratios = np.asarray(ratios, dtype=np.float64)
        if self.statistic == "share":
            return float(np.mean(ratios > self.margin))
        return float(np.quantile(ratios, 0.5 if self.statistic == "median" else 0.9))

    def passes(self, ratios: np.ndarray) -> bool:
        value = self.value(ratios)
        if self.statistic == "share":
            return value <= MAX_OUTLIER_FRACTION
        return value <= self.margin

    def describe(self, ratios: np.ndarray, against: str) -> str:
        """Why ``ratios`` fail the rule, in words."""
        value = self.value(ratios)
        if self.statistic == "share":
            return f"{value:.1%} of its windows are above {self.margin:g} x the {against} threshold"
        name = "median" if self.statistic == "median" else "90th-percentile"
        return f"its {name} ratio to the {against} threshold is {value:.2f} > {self.margin:g}"


DEFAULT_RULE = AdmissionRule("share", 1.0)


def refusal(
    ratios_active: np.ndarray, ratios_v1: np.ndarray, rule: AdmissionRule = DEFAULT_RULE
) -> str | None:
    """None when a run with these window ratios may join the baseline, else why not."""
    ratios_active = np.asarray(ratios_active, dtype=np.float64).ravel()
    ratios_v1 = np.asarray(ratios_v1, dtype=np.float64).ravel()
    if ratios_active.size == 0 or ratios_v1.size == 0:
        return "no windows"
    if not (np.all(np.isfinite(ratios_active)) and np.all(np.isfinite(ratios_v1))):
        return "some windows have no finite score"
    if not rule.passes(ratios_active):
        return rule.describe(ratios_active, "active")
    if not rule.passes(ratios_v1):
        return rule.describe(ratios_v1, "enrollment version's")
    return None


def admit_run(
    ratios_active: np.ndarray, ratios_v1: np.ndarray, rule: AdmissionRule = DEFAULT_RULE
) -> bool:
    """True when a run whose windows have these ratios to the active and to the enrollment
    version's threshold may join the next baseline version."""
    return refusal(ratios_active, ratios_v1, rule) is None
