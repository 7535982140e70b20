import numpy as np
import pytest

from detectors.baseline import KNNBaseline
from detectors.ensemble import EnsembleBaseline
from detectors.errors import NotFittedError


def normal_data(n_groups=8, per_group=30, seed=0):
    """Two feature blocks on very different scales (like log-mel dB vs CNN activations)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 10.0, (n_groups * per_group, 6))
    b = rng.normal(0.0, 0.01, (n_groups * per_group, 4))
    groups = np.repeat(np.arange(n_groups), per_group)
    return np.hstack([a, b]).astype(np.float32), groups


def ensemble(normalize="threshold"):
    members = [KNNBaseline(k=3, standardize=False), KNNBaseline(k=3, standardize=False)]
    return EnsembleBaseline(members, [6, 4], normalize=normalize)


@pytest.mark.parametrize("normalize", ["threshold", "zscore"])
def test_combines_normalised_member_scores(normalize):
    x, groups = normal_data()
    model = ensemble(normalize).fit(x, groups)
    test, _ = normal_data(n_groups=2, seed=1)
    a, b = model.members
    sa, sb = a.decision_function(test[:, :6]), b.decision_function(test[:, 6:])
    if normalize == "threshold":
        expected = (sa / a.threshold_ + sb / b.threshold_) / 2
    else:
        expected = (
            (sa - a.loo_scores_.mean()) / a.loo_scores_.std()
            + (sb - b.loo_scores_.mean()) / b.loo_scores_.std()
        ) / 2
    np.testing.assert_allclose(model.decision_function(test), expected, rtol=1e-5, atol=1e-6)
    assert model.loo_scores_.shape == a.loo_scores_.shape
    assert model.threshold_ == pytest.approx(np.quantile(model.loo_scores_, 0.99, method="higher"))
    assert model.threshold_method_["rule"] == "ensemble_quantile"
    assert len(model.threshold_method_["members"]) == 2


def test_max_combination():
    x, groups = normal_data()
    members = [KNNBaseline(k=3, standardize=False), KNNBaseline(k=3, standardize=False)]
    model = EnsembleBaseline(members, [6, 4], combine="max").fit(x, groups)
    test, _ = normal_data(n_groups=2, seed=1)
    a, b = model.members
    ratios = np.stack(
        [
            a.decision_function(test[:, :6]) / a.threshold_,
            b.decision_function(test[:, 6:]) / b.threshold_,
        ]
    )
    np.testing.assert_allclose(model.decision_function(test), ratios.max(axis=0), rtol=1e-5)


def test_a_fault_in_the_small_scale_block_is_not_drowned():
    """Raw distances would be dominated by the large block; normalised ones are not."""
    x, groups = normal_data()
    model = ensemble().fit(x, groups)
    test, _ = normal_data(n_groups=2, seed=2)
    faulty = test.copy()
    faulty[:, 6:] += 0.05  # 5 sigma in the small block, nothing in the large one
    assert model.predict(faulty).mean() > 0.9
    assert model.predict(test).mean() < 0.1
    raw = KNNBaseline(k=3, standardize=False).fit(x, groups)
    assert raw.predict(faulty).mean() < 0.2  # the same fault, unnoticed without normalisation


def test_errors():
    x, groups = normal_data()
    with pytest.raises(ValueError, match="one dims entry per member"):
        EnsembleBaseline([KNNBaseline()], [6, 4])
    with pytest.raises(ValueError, match="normalize"):
        EnsembleBaseline([KNNBaseline()], [10], normalize="rank")
    with pytest.raises(ValueError, match="combine"):
        EnsembleBaseline([KNNBaseline()], [10], combine="median")
    with pytest.raises(ValueError, match=r"\(n, 10\)"):
        ensemble().fit(x[:, :8], groups)
    with pytest.raises(NotFittedError):
        ensemble().decision_function(x)
    model = ensemble().fit(x, groups)
    with pytest.raises(ValueError, match=r"\(m, 10\)"):
        model.decision_function(x[:, :9])
