"""Chain diagnostics against known answers: iid draws, AR(1) chains, stuck chains."""

from __future__ import annotations

import numpy as np
import pytest

from ebmkit.evaluate.chains import autocorrelation, chain_diagnostics


def ar1(rho, num_draws, num_chains, dim, seed):
    """Stationary AR(1) chains: x_t = rho x_{t-1} + sqrt(1 - rho^2) z_t."""
    rng = np.random.default_rng(seed)
    x = np.empty((num_draws, num_chains, dim))
    x[0] = rng.normal(size=(num_chains, dim))
    noise = rng.normal(size=x.shape) * np.sqrt(1 - rho**2)
    for t in range(1, num_draws):
        x[t] = rho * x[t - 1] + noise[t]
    return x


def test_iid_draws_have_full_ess_and_unit_rhat():
    x = np.random.default_rng(0).normal(size=(500, 8, 3))
    d = chain_diagnostics(x, num_grad_evals=4000.0, seconds=2.0)
    # ESS of 4000 iid draws: 4000 up to estimator noise (~5 %), min over 3 coordinates.
    assert 3400 < d["ess_bulk"] < 4600 and 3000 < d["ess_tail"] < 4800
    assert d["rhat"] < 1.01
    np.testing.assert_allclose(d["ess_per_1000_grads"], 1000 * d["ess_bulk"] / 4000)
    np.testing.assert_allclose(d["ess_per_second"], d["ess_bulk"] / 2)
    assert abs(d["autocorrelation"][1]) < 0.03


def test_ar1_ess_matches_its_integrated_autocorrelation():
    rho = 0.8
    x = ar1(rho, 2000, 8, 2, seed=1)
    d = chain_diagnostics(x, max_lag=5)
    # ESS = N (1 - rho) / (1 + rho) = 16000 / 9 = 1778; the estimator's error here ~10 %.
    expected = 16000 * (1 - rho) / (1 + rho)
    assert 0.75 * expected < d["ess_bulk"] < 1.25 * expected
    np.testing.assert_allclose(d["autocorrelation"][:4], rho ** np.arange(4), atol=0.03)


def test_rhat_flags_chains_stuck_in_different_modes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4, 1))
    x[:, :2] += 5.0  # half the chains in another mode
    d = chain_diagnostics(x, energy=np.square(x[..., 0]))
    assert d["rhat"] > 1.5 and d["rhat_energy"] > 1.1


def test_large_events_are_subsampled_and_bad_input_is_refused():
    x = np.random.default_rng(3).normal(size=(20, 4, 8, 8))
    d = chain_diagnostics(x, max_coordinates=10)
    assert d["ess_bulk_per_coordinate"].shape == (10,)
    with pytest.raises(ValueError, match="at least 4 draws"):
        chain_diagnostics(x[:3])
    with pytest.raises(ValueError, match="2 chains"):
        chain_diagnostics(x[:, :1])
    bad = x.copy()
    bad[5, 1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        chain_diagnostics(bad)
    with pytest.raises(ValueError, match="energy must be"):
        chain_diagnostics(x, energy=np.zeros((20, 3)))
    assert autocorrelation(np.ones((10, 2)))[1:].size == 9
