"""blackjax_mala: BlackJAX's MALA chain per chain, and its statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import mala as blackjax_mala
from blackjax_targets import assert_gaussian_moments, gaussian_energy
from ebmkit_blackjax.mala import MALAConfig, MALASampler, spec

import ebmkit
from ebmkit.config import SamplerConfig, structure
from ebmkit.sampling import run_chain


def sample(energy_fn, x0, *, step_size: float, num_steps: int, seed: int = 0):
    sampler = MALASampler(MALAConfig(step_size=step_size, num_steps=num_steps))
    run = jax.jit(lambda key, x: run_chain(key, sampler, x, energy_fn, num_steps))
    return run(jax.random.key(seed), x0)


def test_gaussian_mean_and_variance():
    mean, std = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])
    # 400 steps of 0.1 are ten relaxation times of the wide coordinate
    # (std^2 / step_size = 40 steps): the 2000 chains' ends are independent draws.
    x, summary = sample(gaussian_energy(mean, std), jnp.zeros((2000, 2)), step_size=0.1, num_steps=400)
    assert_gaussian_moments(x, mean, std)
    assert summary.acceptance_rate.shape == (2000,)
    assert 0.5 < float(summary.acceptance_rate.mean()) <= 1.0
    assert not bool(summary.non_finite.any())
    np.testing.assert_array_equal(summary.num_grad_evals, np.full(2000, 400.0))


def test_metropolis_removes_the_langevin_bias():
    # Unadjusted Langevin with step h on N(0, 1) has stationary variance
    # 1 / (1 - h/2) = 1.33 at h = 0.5; MALA keeps the exact variance 1.
    x, summary = sample(
        gaussian_energy(jnp.zeros(1), jnp.ones(1)), jnp.zeros((4000, 1)), step_size=0.5, num_steps=200
    )
    assert_gaussian_moments(x, np.zeros(1), np.ones(1))
    assert float(summary.acceptance_rate.mean()) < 0.99  # the correction does reject


def test_accept_reject_is_per_chain():
    sampler = MALASampler(MALAConfig(step_size=1.0))
    energy_fn = gaussian_energy(jnp.zeros(1), jnp.ones(1))
    # Identical starts, independent keys: a joint accept/reject would give all
    # chains the same decision.
    state = sampler.init(jnp.full((64, 1), 1.4), energy_fn)
    new, info = jax.jit(lambda k, s: sampler.kernel(k, s, energy_fn))(jax.random.key(0), state)
    accepted = np.asarray(info.is_accepted)
    assert info.acceptance_rate.shape == accepted.shape == (64,)
    assert accepted.any() and not accepted.all()
    np.testing.assert_array_equal(np.asarray(new.position)[~accepted], np.float32(1.4))
    assert np.all(np.asarray(new.position)[accepted] != np.float32(1.4))


def test_draws_exactly_blackjax_chain():
    # Each chain is BlackJAX's MALA on logdensity = -E, with the chain's key
    # split from the step's key: same positions, bit for bit.
    def energy_fn(x):
        return 0.5 * jnp.sum(x**2, axis=-1) + jnp.sum(jnp.sin(3 * x), axis=-1)

    sampler = MALASampler(MALAConfig(step_size=0.2))
    x0 = jax.random.normal(jax.random.key(5), (16, 3))
    ours = sampler.init(x0, energy_fn)
    theirs = jax.vmap(blackjax_mala.init, in_axes=(0, None))(x0, lambda x: -energy_fn(x[None])[0])
    one_chain = blackjax_mala.build_kernel()
    for i in range(3):
        key = jax.random.key(100 + i)
        ours, info = sampler.kernel(key, ours, energy_fn)
        theirs, their_info = jax.vmap(one_chain, in_axes=(0, 0, None, None))(
            jax.random.split(key, 16), theirs, lambda x: -energy_fn(x[None])[0], 0.2
        )
        np.testing.assert_array_equal(ours.position, theirs.position)
        np.testing.assert_array_equal(ours.energy, -theirs.logdensity)
        np.testing.assert_array_equal(info.is_accepted, their_info.is_accepted)


def test_per_chain_step_sizes():
    # A tunable may be one value per chain ([B]): each chain runs with its own.
    sampler = MALASampler(MALAConfig())
    energy_fn = gaussian_energy(jnp.zeros(2), jnp.ones(2))
    state = sampler.init(jnp.ones((4, 2)), energy_fn)
    step_sizes = jnp.array([0.01, 0.1, 0.5, 1.0])
    key = jax.random.key(7)
    batched, _ = sampler.kernel(key, state, energy_fn, step_size=step_sizes)
    for i, h in enumerate(step_sizes):
        alone, _ = sampler.kernel(key, state, energy_fn, step_size=float(h))
        np.testing.assert_allclose(batched.position[i], alone.position[i], rtol=1e-6, atol=1e-6)


def test_non_finite_proposal_is_rejected():
    def energy_fn(x):
        e = 0.5 * jnp.sum(x**2, axis=-1)
        return jnp.where(x[:, 0] > 1.5, jnp.nan, e)

    sampler = MALASampler(MALAConfig(step_size=1.0))
    state = sampler.init(jnp.full((64, 1), 1.4), energy_fn)
    new, info = sampler.kernel(jax.random.key(1), state, energy_fn)
    assert bool(jnp.all(jnp.isfinite(new.position))) and bool(jnp.all(jnp.isfinite(new.energy)))
    assert not bool(info.non_finite.any())
    # Proposals ~ N(0, 2) from x = 1.4; about 1 in 7 lands where E is NaN. Those
    # (and only those: finite Gaussian proposals have acceptance > 0) get
    # acceptance 0 and keep their start.
    rejected = np.asarray(info.acceptance_rate) == 0
    assert rejected.any()
    np.testing.assert_array_equal(np.asarray(new.position)[rejected], np.float32(1.4))
    assert bool((np.asarray(new.position) <= 1.5).all())


def test_selected_through_the_registry_like_any_component():
    assert ebmkit.get_spec("sampler", "blackjax_mala") is spec
    assert ebmkit.get_spec("sampler", "ebmkit-blackjax:blackjax_mala") is spec
    cfg = structure({"name": "blackjax_mala", "step_size": 0.05}, SamplerConfig)
    assert cfg == MALAConfig(step_size=0.05)
    assert spec.create(cfg).tunables == {"step_size": 0.05}
