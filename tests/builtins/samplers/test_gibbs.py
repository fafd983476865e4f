"""The ``gibbs`` sampler: exact on an enumerable target, shapes, info, non-finite flips."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmkit.registry import get_spec
from ebmkit.sampling import run_chain
from ebmkit.types import Sampler

D = 7
NUM_CHAINS = 20_000
SWEEPS = 25


def _gibbs(**fields):
    spec = get_spec("sampler", "gibbs")
    return spec.create(spec.config(**fields), None)


def _target():
    """A fixed 7-bit energy with strong pairwise structure (a random Ising model)."""
    rng = np.random.default_rng(3)
    a = np.triu(rng.normal(0.0, 0.4, (D, D)), 1)
    b = rng.normal(0.0, 0.5, D)
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)

    def energy_fn(x):
        s = 2.0 * x - 1.0
        return -jnp.sum((s @ a) * s, axis=-1) - s @ b

    return energy_fn


def _exact(energy_fn, temperature=1.0):
    codes = np.arange(2**D)[:, None]
    states = ((codes >> np.arange(D - 1, -1, -1)) & 1).astype(np.float32)
    logp = -np.asarray(energy_fn(jnp.asarray(states)), np.float64) / temperature
    p = np.exp(logp - logp.max())
    return p / p.sum()


def _empirical(x):
    idx = (np.asarray(x, np.int64) << np.arange(D - 1, -1, -1)).sum(axis=1)
    return np.bincount(idx, minlength=2**D) / len(idx)


def _tolerance(p, n, delta=1e-4):
    """A bound on the total-variation distance of ``n`` independent exact draws.

    E[TV] = ½ Σ E|p̂_i − p_i| ≤ ½ Σ sqrt(p_i (1 − p_i) / n) (Jensen, binomial
    variance), and TV moves by at most 1/n when one draw changes, so by
    McDiarmid P(TV > E[TV] + t) ≤ exp(−2 n t²): with t = sqrt(ln(1/δ) / (2n))
    an exact sampler fails with probability below δ. The chains are
    independent (one sample per chain, starts uniform), so the effective number
    of samples is the number of chains once the chains have mixed; 25 sweeps of
    a 7-bit target leave a start-dependence far below the tolerance (checked
    by the test's wrong-target control, which the same statistic rejects).
    """
    return 0.5 * np.sum(np.sqrt(p * (1 - p) / n)) + math.sqrt(math.log(1 / delta) / (2 * n))


@pytest.mark.parametrize("scan", ["random", "systematic"])
def test_gibbs_samples_an_enumerable_target_exactly(scan):
    energy_fn = _target()
    sampler = _gibbs(scan=scan, num_steps=SWEEPS)
    x0 = jax.random.bernoulli(jax.random.key(0), 0.5, (NUM_CHAINS, D)).astype(jnp.float32)
    x, _ = jax.jit(lambda k, x0: run_chain(k, sampler, x0, energy_fn, SWEEPS))(jax.random.key(1), x0)
    p = _exact(energy_fn)
    tv = 0.5 * np.abs(_empirical(x) - p).sum()
    tol = _tolerance(p, NUM_CHAINS)
    assert tv < tol, (tv, tol)
    # The statistic has power: the same draws are far from the target at temperature 2.
    wrong = _exact(energy_fn, temperature=2.0)
    assert 0.5 * np.abs(_empirical(x) - wrong).sum() > 3 * tol


def test_gibbs_kernel_shapes_info_and_rounding():
    energy_fn = _target()
    sampler = _gibbs()
    assert isinstance(sampler, Sampler) and sampler.tunables == {} and sampler.num_steps == 1
    x0 = jnp.full((5, D), 0.7)  # starts are rounded to bits
    state = sampler.init(x0, energy_fn)
    assert set(np.unique(np.asarray(state.position))) == {1.0}
    state, info = sampler.kernel(jax.random.key(0), state, energy_fn)
    assert state.position.shape == (5, D) and set(np.unique(np.asarray(state.position))) <= {0.0, 1.0}
    np.testing.assert_allclose(state.energy, energy_fn(state.position), rtol=1e-5, atol=1e-5)
    for field in ("acceptance_rate", "grad_norm", "non_finite", "flip_rate"):
        assert getattr(info, field).shape == (5,)
    np.testing.assert_array_equal(info.acceptance_rate, 1.0)
    assert np.all((info.flip_rate >= 0) & (info.flip_rate <= 1)) and not np.any(info.non_finite)


def test_gibbs_never_moves_to_a_non_finite_energy():
    def energy_fn(x):  # bit 0 set is forbidden (infinite energy)
        return jnp.where(x[:, 0, 0] > 0.5, jnp.inf, -jnp.sum(x, axis=(1, 2)))

    sampler = _gibbs(scan="systematic", num_steps=3)
    x0 = jnp.zeros((64, 2, 3))
    x, _ = run_chain(jax.random.key(0), sampler, x0, energy_fn, 3)
    assert not np.any(np.asarray(x)[:, 0, 0])
    assert np.asarray(x)[:, 1:].mean() > 0.5  # the other bits move (toward 1: lower energy)


class _CountingRBM:
    """An RBM's BlockGibbs face, counting (at trace time) that the sampler used it."""

    def __init__(self, rbm):
        self.rbm, self.num_hidden, self.calls = rbm, rbm.num_hidden, 0

    def hidden_logits(self, x):
        self.calls += 1
        return self.rbm.hidden_logits(x)

    def visible_logits(self, h):
        return self.rbm.visible_logits(h)

    def __call__(self, x):
        return self.rbm(x)


def test_block_gibbs_on_a_bound_rbm_is_exact():
    """The same TV bound as above, on an RBM's 2**7 visible states; the chains
    run on a BoundEnergy, so the sampler takes the block path."""
    from flax import nnx

    from ebmkit.sampling import BoundEnergy
    from ebmkit.types import BlockGibbs, BuildContext, Support

    spec = get_spec("energy", "rbm")
    ctx = BuildContext(event_shape=(D,), support=Support.parse("binary"), rngs=nnx.Rngs(0))
    rbm = spec.create(spec.config(hidden=4, init_scale=1.0), ctx)
    rbm.visible_bias[...] = jnp.linspace(-1.0, 1.0, D)
    counting = _CountingRBM(rbm)
    assert isinstance(counting, BlockGibbs)
    sampler = _gibbs(num_steps=SWEEPS)
    x0 = jax.random.bernoulli(jax.random.key(0), 0.5, (NUM_CHAINS, D)).astype(jnp.float32)
    x, _ = jax.jit(lambda k, x0: run_chain(k, sampler, x0, BoundEnergy(counting), SWEEPS))(jax.random.key(1), x0)
    assert counting.calls > 0  # the block path was traced
    p = _exact(rbm)
    tol = _tolerance(p, NUM_CHAINS)
    assert 0.5 * np.abs(_empirical(x) - p).sum() < tol
    assert 0.5 * np.abs(_empirical(x) - _exact(rbm, temperature=2.0)).sum() > 3 * tol
    # block = false keeps single-site sweeps on the same energy.
    counting.calls = 0
    sweeps = _gibbs(num_steps=1, block=False)
    run_chain(jax.random.key(2), sweeps, x0[:8], BoundEnergy(counting), 1)
    assert counting.calls == 0
