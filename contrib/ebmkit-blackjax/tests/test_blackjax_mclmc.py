"""blackjax_mclmc: BlackJAX's MCLMC per chain, its host-side tuning, statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax_targets import assert_gaussian_moments, gaussian_energy
from ebmkit_blackjax.mclmc import MCLMCConfig, MCLMCSampler, spec, tune

import ebmkit
from ebmkit.sampling import run_chain

MEAN = jnp.array([1.0, -2.0, 0.0, 3.0, 0.5])
STD = jnp.array([0.3, 0.6, 1.0, 2.0, 4.0])


def test_tuned_chains_sample_the_gaussian():
    energy_fn = gaussian_energy(MEAN, STD)
    sampler = MCLMCSampler(MCLMCConfig())
    x, tunables = tune(jax.random.key(0), energy_fn, jnp.zeros((1000, 5)), num_steps=1000)
    assert set(tunables) == {"L", "step_size"}
    assert tunables["L"].shape == tunables["step_size"].shape == (1000,)
    assert bool(jnp.all(tunables["L"] > 0)) and bool(jnp.all(tunables["step_size"] > 0))
    # Tuning ran each chain ~300 steps into the typical set; 200 more steps of
    # length ~ step_size * 200 >> L decorrelate them, so the 1000 chains' ends
    # are independent draws.
    run = jax.jit(lambda key, x_, t: run_chain(key, sampler, x_, energy_fn, 200, **t))
    final, summary = run(jax.random.key(1), x, tunables)
    # MCLMC is unadjusted: BlackJAX tunes the step to an energy-error variance
    # of 5e-4 per dimension, which keeps the variance's bias to a few percent.
    assert_gaussian_moments(final, MEAN, STD, var_bias=0.05)
    np.testing.assert_array_equal(summary.acceptance_rate, np.ones(1000))  # no NaN steps
    np.testing.assert_array_equal(summary.num_grad_evals, np.full(1000, 200 * 2.0))
    assert not bool(summary.non_finite.any())


def test_velocity_is_drawn_at_the_first_step_and_kept_unit():
    energy_fn = gaussian_energy(MEAN, STD)
    sampler = MCLMCSampler(MCLMCConfig())
    state = sampler.init(jnp.zeros((6, 5)), energy_fn)
    np.testing.assert_array_equal(state.momentum, np.zeros((6, 5)))
    kernel = jax.jit(lambda k, s: sampler.kernel(k, s, energy_fn))
    new, info = kernel(jax.random.key(0), state)
    np.testing.assert_allclose(np.linalg.norm(new.momentum, axis=1), np.ones(6), rtol=1e-5)
    # Independent chains, independent velocities.
    assert len({tuple(np.round(u, 5)) for u in np.asarray(new.momentum)}) == 6
    newer, _ = kernel(jax.random.key(1), new)
    np.testing.assert_allclose(np.linalg.norm(newer.momentum, axis=1), np.ones(6), rtol=1e-5)
    assert info.energy_change.shape == (6,)


def test_per_chain_tunables():
    energy_fn = gaussian_energy(MEAN, STD)
    sampler = MCLMCSampler(MCLMCConfig())
    state = sampler.init(jnp.ones((3, 5)), energy_fn)
    step_size, length = jnp.array([0.05, 0.2, 0.5]), jnp.array([0.5, 1.0, 3.0])
    kernel = jax.jit(lambda k, s, L, h: sampler.kernel(k, s, energy_fn, L=L, step_size=h))
    key = jax.random.key(7)
    batched, _ = kernel(key, state, length, step_size)
    for i in range(3):
        alone, _ = kernel(key, state, length[i], step_size[i])
        np.testing.assert_allclose(batched.position[i], alone.position[i], rtol=1e-5, atol=1e-6)


def test_one_coordinate_is_refused():
    sampler = MCLMCSampler(MCLMCConfig())
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        sampler.init(jnp.zeros((4, 1)), gaussian_energy(jnp.zeros(1), jnp.ones(1)))


def test_selected_through_the_registry():
    assert ebmkit.get_spec("sampler", "blackjax_mclmc") is spec
    assert spec.create(MCLMCConfig(L=2.0, step_size=0.3)).tunables == {"L": 2.0, "step_size": 0.3}
