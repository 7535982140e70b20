"""Band explanation on simulated faults whose frequencies are known."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.embedders.logmel import LogMelEmbedder
from detectors.explain import ExplanationError, explain_bands, mel_band_ranges
from detectors.presets import DEFAULT_PRESET
from detectors.simulate import Fault, MachineSimulator, simulate
from detectors.windows import frame

RATE = 16000
SPEC = dict(DEFAULT_PRESET.embedder)


def _embedder() -> LogMelEmbedder:
    params = {k: v for k, v in SPEC.items() if k != "name"}
    return LogMelEmbedder(**params)


def _windows(audio: np.ndarray) -> np.ndarray:
    return frame(audio, RATE, 5.0, 1.0).samples


@pytest.fixture(scope="module")
def conveyor_baseline():
    """A conveyor's baseline from six healthy runs (seeds) of 12 s."""
    emb = _embedder()
    vectors, groups = [], []
    for seed in range(6):
        v = emb.embed(_windows(simulate("conveyor", 12.0, RATE, seed=seed)))
        vectors.append(v)
        groups += [seed] * len(v)
    model = KNNBaseline(k=5).fit(np.concatenate(vectors), np.array(groups))
    return emb, model


def _explain(emb, model, audio, **kwargs):
    vectors = emb.embed(_windows(audio))
    worst = int(np.argmax(model.decision_function(vectors)))
    return explain_bands(
        vectors[worst],
        model.mean_,
        model.scale_,
        pooling=SPEC["pooling"],
        n_mels=SPEC["n_mels"],
        sample_rate=RATE,
        **kwargs,
    )


def _faulty(fault: str, seed: int = 11) -> tuple[np.ndarray, MachineSimulator]:
    sim = MachineSimulator("conveyor", RATE, seed=seed, fault=Fault(fault, 0.8))
    return sim.next_chunk(8.0), sim


@pytest.mark.parametrize("n_groups", [None, 32])
def test_belt_squeal_puts_its_tone_on_top(conveyor_baseline, n_groups):
    emb, model = conveyor_baseline
    audio, sim = _faulty("belt_squeal")
    f0 = sim._faults[0].source.f0  # the squeal's fundamental, drawn per run in 1-3 kHz
    result = _explain(emb, model, audio, n_groups=n_groups)
    top = result.top[0]
    assert top.low_hz * 0.98 <= f0 <= top.high_hz * 1.02, (f0, result.top)
    assert top.deviation > 10
    assert top.z["mean"] > 0 and "louder" in top.text
    assert "kHz" in top.text


def test_bearing_fault_puts_the_resonance_on_top(conveyor_baseline):
    emb, model = conveyor_baseline
    audio, sim = _faulty("bearing")
    resonance = sim.spec.resonance_hz
    result = _explain(emb, model, audio, n_groups=32)
    top = result.top[0]
    assert top.low_hz <= resonance <= top.high_hz, (resonance, result.top)
    assert top.deviation > 5


def test_healthy_window_names_no_region(conveyor_baseline):
    emb, model = conveyor_baseline
    result = _explain(emb, model, simulate("conveyor", 8.0, RATE, seed=3), n_groups=32)
    assert result.top == [] or result.top[0].deviation < 6
    assert len(result.bands) == 32


def test_band_ranges_tile_the_spectrum():
    ranges = mel_band_ranges(128, RATE)
    assert ranges[0, 0] == 0.0 and ranges[-1, 1] == pytest.approx(RATE / 2)
    assert np.allclose(ranges[1:, 0], ranges[:-1, 1])
    assert (np.diff(ranges, axis=1) > 0).all()


def test_bad_shapes_and_group_counts_are_refused():
    with pytest.raises(ExplanationError, match="expected vectors of 8 values"):
        explain_bands(
            np.zeros(5), np.zeros(5), np.ones(5), pooling=["mean"], n_mels=8, sample_rate=RATE
        )
    with pytest.raises(ExplanationError, match="between 1 and 8"):
        explain_bands(
            np.zeros(8),
            np.zeros(8),
            np.ones(8),
            pooling=["mean"],
            n_mels=8,
            sample_rate=RATE,
            n_groups=9,
        )
