"""Tests of the binary-data samplers gwg (Gibbs-with-Gradients) and dmala (DMALA / DULA).

**Exactness.** The target is a random 8-bit Ising energy ``E(x) = −xᵀWx − bᵀx``
whose 256 states are enumerated, so its law ``p`` is exact. ``N`` independent
chains start at uniform random bits and run long enough to forget their starts
(GWG flips one bit per step: 150 steps is ~19 proposals per bit; the measured
distance stops falling well before); their final states are then ``N``
independent draws, so the effective sample size is ``N`` itself (no
autocorrelation to estimate). For ``N`` exact draws the total variation
``TV = ½ Σ_s |p̂_s − p_s|`` satisfies ``E TV ≤ ½ Σ_s sqrt(p_s (1 − p_s) / N)``
(Jensen on each cell's binomial count), and one draw moves TV by at most
``1/N``, so ``P(TV > E TV + sqrt(log(1/δ) / 2N)) ≤ δ`` (McDiarmid).
:func:`~ebmkit.testing.conformance.discrete_sampler.total_variation_bound`
computes that bound; with ``δ = 10⁻⁶`` an exact sampler fails with
probability below 10⁻⁶ (for ``N = 8192`` the bound is ≈ 0.09, the typical TV
of exact draws ≈ 0.05). The bound can fail: the same test rejects GWG without
its Metropolis–Hastings correction and DULA (the unadjusted proposal) at a
large step, both run the same way.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmkit.config import SamplerConfig, structure
from ebmkit.errors import ConfigError
from ebmkit.registry import get_spec
from ebmkit.sampling import per_chain_diagnostics, per_row_energy_and_grad, run_chain, warmup
from ebmkit.testing.conformance.discrete_sampler import total_variation_bound
from ebmkit.types import Adaptive, SamplerInfo, SamplerState

D = 8
N = 8192
STEPS = 150


def make(name: str, **fields):
    spec = get_spec("sampler", name)
    return spec.create(spec.config(**fields))


def _ising(d: int, seed: int, scale: float = 0.5):
    rng = np.random.default_rng(seed)
    w = np.triu(rng.normal(0.0, scale, (d, d)), 1)
    return ((w + w.T) / 2).astype(np.float32), rng.normal(0.0, scale, d).astype(np.float32)


W, B = _ising(D, seed=0)
STATES = np.array(list(itertools.product((0.0, 1.0), repeat=D)), np.float32)


def ising_energy(x):
    """``−xᵀWx − bᵀx`` on ``x[B, 8]``."""
    return -jnp.einsum("bi,ij,bj->b", x, jnp.asarray(W), x) - x @ jnp.asarray(B)


def _exact_law() -> np.ndarray:
    s = STATES.astype(np.float64)
    e = -np.einsum("si,ij,sj->s", s, W.astype(np.float64), s) - s @ B.astype(np.float64)
    p = np.exp(-(e - e.min()))
    return p / p.sum()


P = _exact_law()


def total_variation(x) -> float:
    index = (np.asarray(x) @ (2 ** np.arange(D)[::-1])).round().astype(int)
    empirical = np.bincount(index, minlength=len(P)) / len(index)
    return 0.5 * float(np.abs(empirical - P).sum())


def final_states(sampler, seed: int = 1, num_steps: int = STEPS, **tunables):
    x0 = (jax.random.uniform(jax.random.key(seed), (N, D)) < 0.5).astype(jnp.float32)
    fn = jax.jit(lambda k, x: run_chain(k, sampler, x, ising_energy, num_steps, **tunables))
    return fn(jax.random.key(seed + 100), x0)


BOUND = total_variation_bound(P, N)


# -- exactness on an enumerable target --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields"),
    [("gwg", {}), ("dmala", {"step_size": 0.2}), ("dmala", {"step_size": 1.0})],
    ids=["gwg", "dmala-0.2", "dmala-1.0"],
)
def test_adjusted_samplers_are_exact_on_an_enumerated_ising_target(name, fields):
    final, summary = final_states(make(name, **fields))
    tv = total_variation(final)
    assert tv <= BOUND, f"{name} {fields}: TV {tv:.4f} > bound {BOUND:.4f}"
    assert 0.3 < float(jnp.mean(summary.acceptance_rate)) <= 1.0
    assert not bool(jnp.any(summary.non_finite))


def test_unadjusted_dula_is_detectably_biased_at_a_large_step():
    # DULA flips each bit independently with no correction; at α = 1 about a
    # third of the bits flip per step and the chain's law is far from p.
    final, summary = final_states(make("dmala", step_size=1.0, adjusted=False))
    tv = total_variation(final)
    assert tv > 2 * BOUND, f"DULA at α = 1: TV {tv:.4f}, not detectably above the bound {BOUND:.4f}"
    assert float(jnp.mean(summary.acceptance_rate)) == 1.0
    # ... while DMALA at the same step passes (previous test): the correction is what matters.


class _UncorrectedGWG:
    """GWG's proposal taken every time (no Metropolis–Hastings correction):
    a wrong variant the exactness bound must reject."""

    num_steps, tunables = 1, {}

    def init(self, x, energy_fn):
        e, g = per_row_energy_and_grad(energy_fn, x)
        return SamplerState(x, e, g)

    def kernel(self, rng_key, state, energy_fn):
        from ebmkit_builtins.samplers.gwg import flip_logits

        x = state.position
        site = jax.random.categorical(rng_key, flip_logits(x, state.grad), axis=-1)
        x = x + jax.nn.one_hot(site, x.shape[-1], dtype=x.dtype) * (1 - 2 * x)
        new = self.init(x, energy_fn)
        grad_norm, non_finite = per_chain_diagnostics(new.position, new.energy, new.grad)
        return new, SamplerInfo(jnp.ones(x.shape[0]), grad_norm, non_finite)


def test_gwg_without_its_correction_fails_the_same_bound():
    final, _ = final_states(_UncorrectedGWG())
    tv = total_variation(final)
    assert tv > BOUND, f"uncorrected GWG: TV {tv:.4f}, not detectably above the bound {BOUND:.4f}"


# -- the kernels' contract -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["gwg", "dmala"])
def test_kernel_keeps_bits_dtype_and_reports_per_chain_info(name):
    sampler = make(name)

    def energy(x):  # an event of shape [3, 4]: bits are flattened inside the kernel
        return ising_energy(x.reshape(x.shape[0], -1)[:, :D]) + 0.3 * jnp.sum(x[:, 2], axis=-1)

    x = (jax.random.uniform(jax.random.key(0), (16, 3, 4)) < 0.5).astype(jnp.float32)
    state = sampler.init(x, energy)
    new, info = jax.jit(lambda k, s: sampler.kernel(k, s, energy))(jax.random.key(1), state)
    assert new.position.shape == x.shape and new.position.dtype == x.dtype
    assert set(np.unique(np.asarray(new.position))) <= {0.0, 1.0}
    for field in ("acceptance_rate", "grad_norm", "non_finite", "is_accepted", "num_flips", "num_grad_evals"):
        assert getattr(info, field).shape == (16,), field
    changed = np.sum(np.asarray(new.position != x).reshape(16, -1), axis=1)
    np.testing.assert_array_equal(changed, np.asarray(info.num_flips))
    np.testing.assert_allclose(new.energy, energy(new.position), rtol=1e-6)
    if name == "gwg":
        assert changed.max() <= 1
    else:
        assert changed.max() > 1  # α = 0.2 flips several of 12 bits at once


def test_gwg_proposal_favours_flips_that_lower_the_energy():
    # E = Σ_i c_i x_i from x = 0: flipping bit i changes E by c_i exactly, so
    # q(i | 0) ∝ exp(−c_i / 2).
    from ebmkit_builtins.samplers.gwg import flip_logits

    c = jnp.array([-2.0, 0.0, 1.0, 3.0])
    x = jnp.zeros((1, 4))
    e, g = per_row_energy_and_grad(lambda x_: x_ @ c, x)
    q = jax.nn.softmax(flip_logits(x, g), axis=-1)[0]
    expected = jax.nn.softmax(-c / 2)
    np.testing.assert_allclose(q, expected, rtol=1e-6)


def test_dmala_flip_probability_follows_the_langevin_proposal():
    # At x = 0 with E = Σ c_i x_i, bit i flips with probability sigmoid(−c_i/2 − 1/(2α)).
    from ebmkit_builtins.samplers.dmala import flip_logits

    c = jnp.array([[-2.0, 0.0, 1.0]])
    x = jnp.zeros((1, 3))
    alpha = jnp.array([0.5])
    logits = flip_logits(x, jnp.broadcast_to(c, x.shape), alpha)
    np.testing.assert_allclose(jax.nn.sigmoid(logits), jax.nn.sigmoid(-c / 2 - 1.0), rtol=1e-6)
    # From x = 1 the flip moves by −1: the gradient term changes sign.
    logits = flip_logits(jnp.ones((1, 3)), jnp.broadcast_to(c, x.shape), alpha)
    np.testing.assert_allclose(jax.nn.sigmoid(logits), jax.nn.sigmoid(c / 2 - 1.0), rtol=1e-6)


def test_dmala_step_size_per_chain():
    sampler = make("dmala")
    x = jnp.zeros((2, 64))
    alpha = jnp.array([0.01, 10.0])
    state = sampler.init(x, lambda x_: jnp.zeros(x_.shape[0]))
    new, info = sampler.kernel(jax.random.key(0), state, lambda x_: jnp.zeros(x_.shape[0]), step_size=alpha)
    np.testing.assert_allclose(info.step_size, alpha)
    flips = np.asarray(jnp.sum(new.position, axis=1))
    # sigmoid(−50) ≈ 0 for the first chain; sigmoid(−0.05) ≈ 0.49 for the second.
    assert flips[0] == 0 and 16 < flips[1] < 48


@pytest.mark.parametrize(("name", "fields"), [("gwg", {}), ("dmala", {}), ("dmala", {"adjusted": False})])
def test_a_non_finite_proposal_is_rejected(name, fields):
    # The energy is infinite wherever bit 0 is set and NaN wherever bit 2 is:
    # no chain may go there.
    def energy(x):
        e = jnp.where(x[:, 0] > 0.5, jnp.inf, ising_energy(x))
        return jnp.where(x[:, 2] > 0.5, jnp.nan, e)

    sampler = make(name, **fields)
    x0 = jnp.zeros((64, D)).at[:, 1::2].set(1.0)
    final, summary = jax.jit(lambda k, x: run_chain(k, sampler, x, energy, 40))(jax.random.key(0), x0)
    assert not bool(jnp.any(final[:, 0] > 0.5)) and not bool(jnp.any(final[:, 2] > 0.5))
    assert not bool(jnp.any(summary.non_finite))
    assert bool(jnp.all(jnp.isfinite(summary.final_energy)))
    assert bool(jnp.any(final != x0))  # the other bits still move
    if name == "dmala":
        state = sampler.init(x0, energy)
        _, info = sampler.kernel(jax.random.key(1), state, energy, step_size=5.0)
        assert bool(jnp.any(info.rejected_non_finite))


@pytest.mark.parametrize("name", ["gwg", "dmala"])
def test_starts_that_are_not_bits_are_refused(name):
    sampler = make(name)
    with pytest.raises(ValueError, match="only 0 and 1"):
        sampler.init(jnp.full((2, 3), 0.5), lambda x: jnp.sum(x, axis=-1))


def test_dmala_config_errors():
    with pytest.raises(ConfigError, match="warmup_steps"):
        structure({"name": "dmala", "adjusted": False, "warmup_steps": 10}, SamplerConfig)
    with pytest.raises(ConfigError, match="step_size"):
        structure({"name": "dmala", "step_size": 0.0}, SamplerConfig)
    assert get_spec("sampler", "gwg").supported() == get_spec("sampler", "dmala").supported() == ("binary",)


def test_dmala_adaptation_reaches_its_target_and_freezes():
    sampler = make("dmala", step_size=0.05, warmup_steps=200, target_acceptance=0.6)
    assert isinstance(sampler, Adaptive)
    x0 = (jax.random.uniform(jax.random.key(0), (256, D)) < 0.5).astype(jnp.float32)
    x, adaptation = jax.jit(lambda k, x_: warmup(k, sampler, x_, ising_energy))(jax.random.key(1), x0)
    steps = jnp.exp(adaptation.log_step)
    assert steps.shape == (256,) and float(jnp.median(steps)) > 0.1  # grew from 0.05
    # Adapting on past the phase's end changes nothing: the kernel is a fixed, exact DMALA.
    _, summary = jax.jit(
        lambda k, x_, a: run_chain(k, sampler, x_, ising_energy, 100, adaptation=a, adapt=True)
    )(jax.random.key(2), x, adaptation)
    assert abs(float(jnp.mean(summary.acceptance_rate)) - 0.6) < 0.1
    np.testing.assert_array_equal(summary.adaptation.log_step, adaptation.log_step)
