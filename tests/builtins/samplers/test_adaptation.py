"""Adaptation (mala, hmc), HMC's mass matrix and divergences, recorded
traces, and replica exchange over other base kernels.

Tolerances are derived next to each assertion from the number of effectively
independent draws; keys are fixed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from ebmkit.errors import ConfigError, UnknownComponentError
from ebmkit.registry import get_spec
from ebmkit.sampling import trace_chain, warmup
from ebmkit.sampling.adaptation import window_schedule
from ebmkit.types import Adaptive

#: A 5-d anisotropic Gaussian: variances 0.01 ... 1 (condition number 100).
VAR = jnp.geomspace(0.01, 1.0, 5)


def aniso_energy(x):
    return 0.5 * jnp.sum(x**2 / VAR, axis=-1)


def make(name, **fields):
    spec = get_spec("sampler", name)
    return spec.create(spec.config(**fields))


def warm_then_trace(sampler, x0, energy_fn, num_steps, thin=1, seed=0):
    @jax.jit
    def go(key, x):
        k1, k2 = jax.random.split(key)
        x, adaptation = warmup(k1, sampler, x, energy_fn)
        out = trace_chain(k2, sampler, x, energy_fn, num_steps, thin=thin, adaptation=adaptation)
        return adaptation, out

    return go(jax.random.key(seed), x0)


def test_window_schedule_is_stans():
    flags = window_schedule(1000)
    ends = np.flatnonzero(flags[:, 1])
    # fast 75, slow 25, 50, 100, 200, 500 (the last takes the rest), fast 50
    np.testing.assert_array_equal(ends + 1, [100, 150, 250, 450, 950])
    assert flags[75:950, 0].all()
    assert flags[950:].sum() == 0 and flags[:75].sum() == 0
    assert window_schedule(10).sum() == 0  # too short for a slow window
    short = window_schedule(100)  # 15 % / 75 % / 10 %
    assert short[:15].sum() == 0 and short[90:, 0].sum() == 0 and short[15:90, 0].all()


@pytest.mark.parametrize("adaptation", ["per_chain", "shared"])
def test_mala_adapts_its_step_toward_the_target_acceptance(adaptation):
    sampler = make("mala", step_size=1e-4, warmup_steps=300, adaptation=adaptation)
    assert isinstance(sampler, Adaptive)
    x0 = jax.random.normal(jax.random.key(1), (256, 5)) * jnp.sqrt(VAR)
    state, (x, summary, trace) = warm_then_trace(sampler, x0, aniso_energy, 400)
    steps = np.exp(np.asarray(state.log_step))
    assert steps.shape == ((256,) if adaptation == "per_chain" else ())
    # From 1e-4 to the working step: ~0.01 for MALA here (the smallest variance sets it).
    assert 3e-3 < np.median(steps) < 3e-2
    # After the phase the step is frozen: 400 steps at the acceptance it aimed for.
    # Mean over 256 chains x 400 steps; a per-chain step from noisy dual averaging
    # scatters it, hence 0.1.
    assert abs(float(summary.acceptance_rate.mean()) - 0.574) < 0.1
    # Frozen means frozen: the trace's step would otherwise drift.
    assert np.all(np.asarray(summary.adaptation.log_step) == np.asarray(state.log_step))
    # MALA is exact: the largest variance (slowest direction, tau ~ 1/step ~ 100
    # steps) from 256 chains x 400 steps has ~1000 effective draws; 20 %.
    np.testing.assert_allclose(np.var(np.asarray(trace.position[-1]), axis=0)[-1], VAR[-1], rtol=0.25)


def test_mala_without_warmup_is_not_adaptive():
    assert not isinstance(make("mala", warmup_steps=0), Adaptive)
    assert not isinstance(make("hmc"), Adaptive)  # warmup_steps = 0 by default


def test_hmc_adapts_a_diagonal_mass_matrix_and_step():
    sampler = make("hmc", step_size=0.01, warmup_steps=600, trajectory_length=1.5)
    x0 = jax.random.normal(jax.random.key(2), (128, 5))
    state, (x, summary, trace) = warm_then_trace(sampler, x0, aniso_energy, 200, thin=2)
    # The pooled variance of the last slow window (128 chains x 275 draws, ~20k
    # effective) estimates each variance to ~2 %; Stan's shrinkage moves it < 2 %.
    np.testing.assert_allclose(state.inverse_mass_matrix, VAR, rtol=0.08)
    assert 0.3 < float(np.exp(state.step.log_step)) < 2.0  # near unit scale once preconditioned
    assert abs(float(summary.acceptance_rate.mean()) - 0.8) < 0.1
    # trajectory_length / step leapfrog steps per transition, counted per chain.
    steps = np.ceil(1.5 / np.exp(float(state.step.log_step)))
    np.testing.assert_allclose(summary.num_grad_evals, 200 * steps)
    assert trace.position.shape == (100, 128, 5) and trace.thin == 2
    # Nearly independent draws after preconditioning: 12,800 draws, SE(var)/var < 2 %.
    np.testing.assert_allclose(np.var(np.asarray(trace.position), axis=(0, 1)), VAR, rtol=0.1)
    assert float(summary.divergences.sum()) == 0


def test_hmc_flags_divergent_transitions():
    sampler = make("hmc", num_integration_steps=10)
    x0 = jax.random.normal(jax.random.key(0), (64, 5))
    state = sampler.init(x0, aniso_energy)
    kernel = jax.jit(sampler.kernel, static_argnums=2)
    _, ok = kernel(jax.random.key(1), state, aniso_energy, step_size=0.01)
    assert not bool(ok.is_divergent.any())
    # A step 5x the stability limit of the stiffest direction (2 sqrt(0.01) = 0.2).
    _, bad = kernel(jax.random.key(1), state, aniso_energy, step_size=1.0)
    assert bool(bad.is_divergent.all()) and float(bad.acceptance_rate.max()) < 1e-6
    # The inverse mass matrix is a tunable: preconditioned, the same step is fine.
    _, pre = kernel(jax.random.key(1), state, aniso_energy, step_size=0.5, inverse_mass_matrix=VAR)
    assert not bool(pre.is_divergent.any()) and float(pre.acceptance_rate.mean()) > 0.7


def test_trace_chain_records_the_chain_run_chain_runs():
    from ebmkit.sampling import run_chain

    sampler = make("langevin", step_size=0.01)
    x0 = jax.random.normal(jax.random.key(0), (8, 5))
    key = jax.random.key(3)
    x_run, _ = jax.jit(lambda k, x: run_chain(k, sampler, x, aniso_energy, 12))(key, x0)
    x_tr, summary, trace = jax.jit(lambda k, x: trace_chain(k, sampler, x, aniso_energy, 12, thin=4))(key, x0)
    np.testing.assert_allclose(x_tr, x_run, rtol=1e-6)
    np.testing.assert_allclose(trace.position[-1], x_run, rtol=1e-6)
    np.testing.assert_allclose(trace.energy[-1], aniso_energy(x_run), rtol=1e-5)
    assert trace.position.shape == (3, 8, 5)
    np.testing.assert_allclose(summary.num_grad_evals, 12.0)
    assert summary.divergences is None  # langevin reports none
    with pytest.raises(ValueError, match="multiple of thin"):
        trace_chain(key, sampler, x0, aniso_energy, 10, thin=4)


# -- replica exchange over other base kernels ------------------------------------------


def far_mixture_energy(x):
    """0.3 N(-5, 0.5²) + 0.7 N(5, 0.5²) in x[0], N(0, 1) in x[1]."""
    modes = jnp.log(jnp.array([0.3, 0.7])) - 0.5 * ((x[:, :1] - 5.0 * jnp.array([-1.0, 1.0])) / 0.5) ** 2
    return -logsumexp(modes, axis=-1) + 0.5 * x[:, 1] ** 2


def test_replica_exchange_over_hmc_gets_mode_weights_and_reports_pairs():
    sampler = make(
        "replica_exchange", base="hmc", base_options={"num_integration_steps": 3}, step_size=0.15,
        temperatures=[1.0, 2.5, 6.0, 15.0, 40.0],
    )
    assert type(sampler.base).__name__ == "HMCSampler" and sampler.step_scaling == 0.5
    x0 = jnp.stack([jnp.full((600,), -5.0), jnp.zeros((600,))], axis=1)
    x, summary, trace = jax.jit(lambda k, x: trace_chain(k, sampler, x, far_mixture_energy, 600, thin=600))(
        jax.random.key(5), x0
    )
    # 600 chains: SE of the weight 0.019; tolerance 0.07.
    assert abs(float(jnp.mean(x[:, 0] > 0)) - 0.7) < 0.07
    # 5 replicas x 3 leapfrog steps per step.
    np.testing.assert_allclose(summary.num_grad_evals, 600 * 15)
    state = sampler.init(x0, far_mixture_energy)
    _, info = jax.jit(sampler.kernel, static_argnums=2)(jax.random.key(0), state, far_mixture_energy)
    assert info.pair_swap_rate.shape == (600, 4)
    assert info.replica_info.acceptance_rate.shape == (5, 600)


def test_replica_exchange_with_an_adaptive_base_adapts_every_replica():
    sampler = make(
        "replica_exchange", base="mala", base_options={"warmup_steps": 100, "adaptation": "shared"},
        num_replicas=3, max_temperature=9.0, step_size=1e-3,
    )
    assert isinstance(sampler, Adaptive) and sampler.warmup_steps == 100
    x0 = jax.random.normal(jax.random.key(1), (64, 5)) * jnp.sqrt(VAR)
    state, (x, summary, _) = warm_then_trace(sampler, x0, aniso_energy, 50)
    steps = np.exp(np.asarray(state.log_step))
    assert steps.shape == (3,)
    # Hotter replicas target wider densities: they learn larger steps.
    assert steps[0] < steps[1] < steps[2]
    assert abs(float(summary.acceptance_rate.mean()) - 0.574) < 0.12


def test_replica_exchange_config_errors():
    with pytest.raises(UnknownComponentError, match="hmcc"):
        make("replica_exchange", base="hmcc")
    with pytest.raises(ConfigError, match="base_options"):
        make("replica_exchange", base="hmc", base_options={"num_integration_steps": -1})
    with pytest.raises(ValueError, match="temperatures"):
        make("replica_exchange", temperatures=[2.0, 4.0])
    with pytest.raises(ValueError, match="its own base"):
        make("replica_exchange", base="replica_exchange")


def test_adaptation_on_a_flat_energy_stops_at_the_cap():
    # An untrained EBM is nearly flat: every proposal is accepted and dual
    # averaging would grow the step without bound (it reached inf before the cap).
    def flat(x):
        return 1e-3 * jnp.sum(x, axis=-1)

    sampler = make("mala", warmup_steps=200, max_step_size=0.5)
    x, adaptation = jax.jit(lambda k, x: warmup(k, sampler, x, flat))(jax.random.key(0), jnp.zeros((16, 2)))
    np.testing.assert_allclose(np.exp(np.asarray(adaptation.log_step)), 0.5, rtol=1e-5)
    assert bool(jnp.isfinite(x).all())
    uncapped = make("mala", warmup_steps=200, max_step_size=None)
    _, free = jax.jit(lambda k, x: warmup(k, uncapped, x, flat))(jax.random.key(0), jnp.zeros((16, 2)))
    # Without it the steps overshoot until proposals overflow, then collapse:
    # they end up scattered over dozens of orders of magnitude.
    assert float(np.ptp(np.asarray(free.log_step))) > 20
