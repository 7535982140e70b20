"""Which frequency bands of a window deviate from the baseline, in Hz and in words.

A log-mel embedding is ``len(pooling)`` statistics per mel band, concatenated statistic by
statistic (``detectors.embedders.logmel``): ``vector[s * n_mels + b]`` is statistic ``s`` of
band ``b``. Standardised with the baseline's per-dimension mean and scale, each entry is a
z-score: how many baseline standard deviations the window's statistic lies from the
baseline's average. Per band, the deviation is the root mean square of its statistics'
z-scores; bands are grouped into ``n_groups`` contiguous groups for display (a group's
deviation is that of its most deviant band, so a narrow tone is not averaged away), and the
most deviant regions (adjacent groups merged) are described in words.

Band edges follow torchaudio's HTK mel scale: band ``b``'s triangle spans mel points
``b .. b + 2`` peaking at ``b + 1``; a band is reported from the midpoint between its lower
edge and its peak to the midpoint between its peak and its upper edge, so that the reported
ranges tile the spectrum without overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.errors import DetectorError

# A region is worth naming from this many baseline standard deviations on; below it a band is
# within the baseline's own variation (for a normal window most bands are below 2).
NOTABLE_DEVIATION = 3.0
MAX_REGIONS = 3
_STAT_WORDS = {
    "mean": ("louder", "quieter", "level"),
    "std": ("more variable", "steadier", "variation"),
    "max": ("higher peaks", "lower peaks", "peaks"),
    "min": ("higher floor", "lower floor", "floor"),
    "dstd": ("more transient", "smoother", "transients"),
}


class ExplanationError(DetectorError):
    """The vector or the embedder spec cannot be explained band by band."""


@dataclass(frozen=True)
class Band:
    """One displayed band: its range in Hz, deviation and per-statistic z-scores."""

    index: int
    low_hz: float
    high_hz: float
    deviation: float
    z: dict[str, float]


@dataclass(frozen=True)
class Region:
    """Adjacent deviating bands merged, described in words."""

    low_hz: float
    high_hz: float
    deviation: float
    z: dict[str, float]
    text: str


@dataclass(frozen=True)
class Explanation:
    bands: list[Band]
    top: list[Region]
    summary: str
    stats: list[str] = field(default_factory=list)


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_band_ranges(
    n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Non-overlapping ``(n_mels, 2)`` [low, high] Hz of torchaudio's HTK mel bands."""
    if n_mels < 1:
        raise ExplanationError(f"n_mels must be at least 1, got {n_mels}")
    top = sample_rate / 2.0 if f_max is None else float(f_max)
    points = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(top), n_mels + 2))
    low = (points[:-2] + points[1:-1]) / 2.0
    high = (points[1:-1] + points[2:]) / 2.0
    low[0], high[-1] = float(f_min), top
    return np.stack([low, high], axis=1)


def format_hz(hz: float) -> str:
    """``2150.3`` -> ``"2.15 kHz"``, ``87.4`` -> ``"87 Hz"``."""
    if hz >= 1000.0:
        return f"{hz / 1000.0:.3g} kHz"
    return f"{hz:.0f} Hz"


def _stat_phrase(stat: str, z: float) -> str:
    up, down, noun = _STAT_WORDS.get(stat, (f"higher {stat}", f"lower {stat}", stat))
    return f"{up if z > 0 else down} ({noun} {z:+.1f}σ)"


def describe(low_hz: float, high_hz: float, deviation: float, z: dict[str, float]) -> str:
    """One region in words, e.g. ``"2.05-2.3 kHz: 14σ from normal: louder (level +9.0σ) ..."``."""
    ranked = sorted(z.items(), key=lambda kv: -abs(kv[1]))
    phrases = [_stat_phrase(s, v) for s, v in ranked if abs(v) >= 2.0][:3]
    rng = f"{format_hz(low_hz)} to {format_hz(high_hz)}"
    head = f"{rng}: {deviation:.1f}σ from normal"
    return f"{head}: {', '.join(phrases)}" if phrases else head


def _regions(bands: list[Band], threshold: float) -> list[Region]:
    order = sorted(range(len(bands)), key=lambda i: -bands[i].deviation)
    spans: list[list[int]] = []  # [lo, hi, peak index]
    for i in order:
        dev = bands[i].deviation
        if dev < threshold:
            break
        if any(lo <= i <= hi for lo, hi, _ in spans):
            continue
        joined = False
        for span in spans:
            lo, hi, peak = span
            if (i == lo - 1 or i == hi + 1) and dev >= 0.5 * bands[peak].deviation:
                span[0], span[1] = min(lo, i), max(hi, i)
                joined = True
                break
        if not joined:
            if len(spans) == MAX_REGIONS:
                continue
            spans.append([i, i, i])
    regions = []
    for lo, hi, peak in spans:
        b = bands[peak]
        low, high = bands[lo].low_hz, bands[hi].high_hz
        regions.append(Region(low, high, b.deviation, b.z, describe(low, high, b.deviation, b.z)))
    return regions


def explain_bands(
    vector: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    *,
    pooling: list[str] | tuple[str, ...],
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    n_groups: int | None = None,
    threshold: float = NOTABLE_DEVIATION,
) -> Explanation:
    """Band-by-band deviation of one log-mel embedding from a baseline.

    Parameters
    ----------
    vector, mean, scale : np.ndarray, shape (len(pooling) * n_mels,)
        The window's embedding and the baseline's per-dimension mean and scale (> 0).
    pooling : the embedder's statistics, in the order they were concatenated
    n_mels, sample_rate, f_min, f_max : the embedder's mel filterbank
    n_groups : int, optional
        Display bands (contiguous groups of mel bands, 1..n_mels); None: one per mel band.
    threshold : float
        Deviation (in baseline standard deviations) from which a region is named.

    Returns
    -------
    Explanation
        ``bands``: ``n_groups`` bands low to high; ``top``: up to three regions, most deviant
        first; ``summary``: one sentence.
    """
    pooling = list(pooling)
    dim = len(pooling) * n_mels
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (vector, mean, scale)]
    if any(a.size != dim for a in arrays):
        raise ExplanationError(
            f"expected vectors of {dim} values ({len(pooling)} statistics x {n_mels} mel "
            f"bands), got {[a.size for a in arrays]}"
        )
    vec, mu, sd = arrays
    if not (sd > 0).all():
        raise ExplanationError("baseline scale must be positive everywhere")
    z = ((vec - mu) / sd).reshape(len(pooling), n_mels)
    z = np.nan_to_num(z, nan=0.0, posinf=1e6, neginf=-1e6)
    per_band = np.sqrt(np.mean(z * z, axis=0))  # (n_mels,)
    ranges = mel_band_ranges(n_mels, sample_rate, f_min, f_max)
    groups = n_mels if n_groups is None else int(n_groups)
    if not 1 <= groups <= n_mels:
        raise ExplanationError(f"bands must be between 1 and {n_mels}, got {groups}")
    bands = []
    for g, members in enumerate(np.array_split(np.arange(n_mels), groups)):
        peak = int(members[np.argmax(per_band[members])])
        bands.append(
            Band(
                index=g,
                low_hz=float(ranges[members[0], 0]),
                high_hz=float(ranges[members[-1], 1]),
                deviation=float(per_band[peak]),
                z={stat: float(z[s, peak]) for s, stat in enumerate(pooling)},
            )
        )
    top = _regions(bands, threshold)
    if top:
        summary = f"Most unusual: {top[0].text}."
    else:
        worst = max(bands, key=lambda b: b.deviation)
        summary = (
            f"No band lies {threshold:g}σ or more from normal (largest: {worst.deviation:.1f}σ "
            f"at {format_hz(worst.low_hz)} to {format_hz(worst.high_hz)})."
        )
    return Explanation(bands=bands, top=top, summary=summary, stats=pooling)
