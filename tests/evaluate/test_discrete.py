"""Likelihoods on bits: exact RBM sums, AIS brackets, coupling RMSE, evaluate_binary."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ebmkit.evaluate.discrete import (
    all_bit_strings,
    bernoulli_base,
    binary_ais_log_z,
    block_gibbs_log_z,
    coupling_rmse,
    evaluate_binary,
    exact_log_z,
    rbm_ais_log_z,
)
from ebmkit.registry import get_spec
from ebmkit.types import BuildContext, Support


def _rbm(d, hidden, scale=1.0, seed=0):
    spec = get_spec("energy", "rbm")
    ctx = BuildContext(event_shape=(d,), support=Support.parse("binary"), rngs=nnx.Rngs(seed))
    rbm = spec.create(spec.config(hidden=hidden, init_scale=scale), ctx)
    keys = jax.random.split(jax.random.key(seed + 1))
    rbm.visible_bias[...] = 0.5 * jax.random.normal(keys[0], (d,))
    rbm.hidden_bias[...] = 0.5 * jax.random.normal(keys[1], (hidden,))
    return rbm


def _brute_log_z(rbm, d, hidden):
    """log Σ_x Σ_h exp(b·x + c·h + xᵀWh): both layers enumerated, float64."""
    w, b, c = (np.asarray(v[...], np.float64) for v in (rbm.weights, rbm.visible_bias, rbm.hidden_bias))
    v = np.array(list(itertools.product((0.0, 1.0), repeat=d)))
    h = np.array(list(itertools.product((0.0, 1.0), repeat=hidden)))
    neg = (v @ b)[:, None] + (h @ c)[None, :] + v @ w @ h.T
    m = neg.max()
    return float(m + np.log(np.exp(neg - m).sum()))


@pytest.mark.parametrize(("d", "hidden"), [(9, 4), (4, 9)])
def test_exact_rbm_log_z_against_both_layers_enumerated(d, hidden):
    """d > H sums over hidden states; d <= H over visible states."""
    rbm = _rbm(d, hidden)
    want = _brute_log_z(rbm, d, hidden)
    assert block_gibbs_log_z(rbm, (d,)) == pytest.approx(want, abs=1e-4)
    assert exact_log_z(rbm, (d,)) == pytest.approx(want, abs=1e-4)


def test_exact_log_z_refuses_what_it_cannot_enumerate():
    with pytest.raises(ValueError, match="use rbm_ais_log_z"):
        block_gibbs_log_z(_rbm(21, 21, scale=0.01), (21,))
    with pytest.raises(ValueError, match="AIS"):
        exact_log_z(lambda x: jnp.zeros(x.shape[0]), (25,))
    np.testing.assert_array_equal(all_bit_strings(2), [[0, 0], [0, 1], [1, 0], [1, 1]])


def _exact_samples(energy_fn, d, n, seed=0):
    states = all_bit_strings(d)
    logp = -np.asarray(energy_fn(jnp.asarray(states)), np.float64)
    p = np.exp(logp - logp.max())
    return states[np.random.default_rng(seed).choice(len(states), n, p=p / p.sum())]


def test_rbm_ais_brackets_the_exact_log_z():
    """Forward AIS is a stochastic lower bound and reverse AIS (from exact
    samples) an upper one: each is allowed 3 of its own standard errors on the
    wrong side of the exact value, and both must be within 0.1 nats of it."""
    d, hidden = 12, 10
    rbm = _rbm(d, hidden, scale=0.8)
    exact = block_gibbs_log_z(rbm, (d,))
    samples = _exact_samples(rbm, d, 200)
    result = rbm_ais_log_z(
        jax.random.key(0), rbm, (d,), base_probs=bernoulli_base(samples), num_chains=200,
        num_temperatures=500, reverse_samples=samples,
    )
    lower, upper = result, result.reverse
    assert lower.direction == "forward" and upper.direction == "reverse"
    assert lower.log_z <= exact + 3 * lower.stderr and upper.log_z >= exact - 3 * upper.stderr
    assert abs(lower.log_z - exact) < 0.1 and abs(upper.log_z - exact) < 0.1


def test_binary_ais_of_a_neural_energy_is_close_to_the_exact_value():
    spec = get_spec("energy", "mlp")
    ctx = BuildContext(event_shape=(10,), support=Support.parse("binary"), rngs=nnx.Rngs(0))
    mlp = spec.create(spec.config(hidden_dims=[16]), ctx)
    mlp.eval()
    exact = exact_log_z(mlp, (10,))
    samples = _exact_samples(mlp, 10, 64)
    result = binary_ais_log_z(jax.random.key(0), mlp, (10,), num_chains=64, num_temperatures=100,
                              reverse_samples=samples)
    assert result.log_z <= exact + 3 * result.stderr and result.reverse.log_z >= exact - 3 * result.reverse.stderr
    assert abs(result.log_z - exact) < 0.1 and abs(result.reverse.log_z - exact) < 0.1


def test_coupling_rmse():
    true = np.zeros((4, 4))
    true[0, 1] = true[1, 0] = 0.5
    learned = true.copy()
    learned[2, 3] = learned[3, 2] = 0.3
    out = coupling_rmse(learned, true)
    assert out["coupling_rmse"] == pytest.approx(np.sqrt(0.09 / 6))
    assert out["coupling_log_rmse"] == pytest.approx(np.log(np.sqrt(0.09 / 6)))
    with pytest.raises(ValueError, match="one shape"):
        coupling_rmse(np.zeros((3, 3)), true)


class _Bits:
    """A tiny binary data set for evaluate_binary."""

    support = "binary"
    event_shape = (12,)

    def __init__(self, data):
        self.data = data

    def sample(self, rng, n):
        return self.data[rng.integers(0, len(self.data), n)]

    def held_out(self, n=None):
        return self.data


def test_evaluate_binary_is_exact_for_small_rbms_and_ais_otherwise():
    rbm = _rbm(12, 10, scale=0.8)
    data = _exact_samples(rbm, 12, 300)
    exact = evaluate_binary(rbm, _Bits(data), energy_module=rbm)
    assert exact["nll_exact"] == 1.0 and exact["log_likelihood"] == -exact["nll"]
    want = float(np.mean(np.asarray(rbm(jnp.asarray(data)))) + block_gibbs_log_z(rbm, (12,)))
    assert exact["nll"] == pytest.approx(want, abs=1e-4)
    # Without the module, 12 bits are still enumerated; an RBM over more bits
    # than MAX_EXACT_LAYER in both layers goes to AIS.
    assert evaluate_binary(rbm, _Bits(data))["nll"] == pytest.approx(want, abs=1e-4)


def test_evaluate_binary_scores_ising_couplings_against_the_truth():
    spec = get_spec("energy", "ising")
    ctx = BuildContext(event_shape=(4, 4, 1), support=Support.parse("binary"), rngs=nnx.Rngs(0))
    model = spec.create(spec.config(init_scale=0.1), ctx)
    data = np.asarray(np.random.default_rng(0).integers(0, 2, (50, 4, 4, 1)), np.float32)

    class Lattice(_Bits):
        event_shape = (4, 4, 1)

        def true_couplings(self):
            j = np.zeros((16, 16), np.float32)
            j[0, 1] = j[1, 0] = 0.25
            return j

    out = evaluate_binary(model, Lattice(data), energy_module=model)
    assert out["nll_exact"] == 1.0  # 16 bits: enumerated
    want = coupling_rmse(model.couplings(), Lattice(data).true_couplings())
    assert out["coupling_rmse"] == pytest.approx(want["coupling_rmse"]) and out["coupling_rmse"] > 0
    assert out["coupling_log_rmse"] == pytest.approx(want["coupling_log_rmse"])
