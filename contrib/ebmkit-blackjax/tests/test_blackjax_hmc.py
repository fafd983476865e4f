"""blackjax_hmc: BlackJAX's HMC chain per chain, per-chain mass matrices, statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc import hmc as blackjax_hmc
from blackjax_targets import assert_gaussian_moments, gaussian_energy
from ebmkit_blackjax.hmc import HMCConfig, HMCSampler, spec

import ebmkit
from ebmkit.sampling import run_chain

MEAN, STD = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])


def test_gaussian_mean_and_variance_with_a_mass_matrix():
    # With M^-1 = diag(std^2) the target is isotropic in the metric: 10 leapfrog
    # steps of 0.25 travel 2.5 standard deviations per transition, so 60
    # transitions forget the start and the 1000 chains' ends are independent draws.
    energy_fn = gaussian_energy(MEAN, STD)
    sampler = HMCSampler(HMCConfig(step_size=0.25, num_integration_steps=10))
    run = jax.jit(lambda key, x: run_chain(key, sampler, x, energy_fn, 60, inverse_mass_matrix=STD**2))
    x, summary = run(jax.random.key(0), jnp.zeros((1000, 2)))
    assert_gaussian_moments(x, MEAN, STD)
    assert 0.9 < float(summary.acceptance_rate.mean()) <= 1.0
    assert not bool(summary.non_finite.any())
    np.testing.assert_array_equal(summary.num_grad_evals, np.full(1000, 60.0 * 10))
    np.testing.assert_array_equal(summary.divergences, np.zeros(1000))


def test_draws_exactly_blackjax_chain():
    # Each chain is BlackJAX's HMC on logdensity = -E with its own key (split
    # from the step's key) and its own inverse mass matrix: same positions.
    def energy_fn(x):
        return 0.5 * jnp.sum(x**2, axis=-1) + jnp.sum(jnp.sin(3 * x), axis=-1)

    def logdensity(x):
        return -energy_fn(x[None])[0]

    imm = jax.random.uniform(jax.random.key(1), (8, 3), minval=0.5, maxval=2.0)
    step_size = jnp.linspace(0.05, 0.3, 8)
    sampler = HMCSampler(HMCConfig(num_integration_steps=5))
    kernel = jax.jit(lambda k, s: sampler.kernel(k, s, energy_fn, step_size=step_size, inverse_mass_matrix=imm))
    one_chain = blackjax_hmc.build_kernel()
    theirs_kernel = jax.jit(
        jax.vmap(lambda k, s, h, m: one_chain(k, s, logdensity, h, m, 5))
    )
    x0 = jax.random.normal(jax.random.key(5), (8, 3))
    ours = sampler.init(x0, energy_fn)
    theirs = jax.vmap(blackjax_hmc.init, in_axes=(0, None))(x0, logdensity)
    for i in range(3):
        key = jax.random.key(100 + i)
        ours, info = kernel(key, ours)
        theirs, their_info = theirs_kernel(jax.random.split(key, 8), theirs, step_size, imm)
        np.testing.assert_allclose(ours.position, theirs.position, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(info.is_accepted, their_info.is_accepted)


@pytest.mark.parametrize("shape", [(), (2,), (4, 2)])
def test_inverse_mass_matrix_shapes(shape):
    # A scalar, one diagonal for every chain, or one per chain.
    sampler = HMCSampler(HMCConfig())
    energy_fn = gaussian_energy(MEAN, STD)
    state = sampler.init(jnp.ones((4, 2)), energy_fn)
    imm = jnp.full(shape, 0.5)
    new, info = sampler.kernel(jax.random.key(0), state, energy_fn, inverse_mass_matrix=imm)
    same, _ = sampler.kernel(jax.random.key(0), state, energy_fn, inverse_mass_matrix=0.5)
    np.testing.assert_allclose(new.position, same.position, rtol=1e-6)
    assert info.is_divergent.shape == (4,)


def test_wrong_inverse_mass_matrix_shape_is_an_error():
    sampler = HMCSampler(HMCConfig())
    energy_fn = gaussian_energy(MEAN, STD)
    state = sampler.init(jnp.ones((4, 2)), energy_fn)
    with pytest.raises(ValueError, match="inverse_mass_matrix has shape"):
        sampler.kernel(jax.random.key(0), state, energy_fn, inverse_mass_matrix=jnp.ones(3))


def test_a_far_too_large_step_diverges():
    # Leapfrog on a Gaussian of std 0.5 is unstable for steps above 1 (2 * std):
    # a step of 5 blows the energy error past the divergence threshold.
    sampler = HMCSampler(HMCConfig(step_size=5.0))
    energy_fn = gaussian_energy(MEAN, STD)
    state = sampler.init(jnp.ones((16, 2)), energy_fn)
    new, info = sampler.kernel(jax.random.key(0), state, energy_fn)
    assert bool(info.is_divergent.all())
    assert not bool(info.is_accepted.any())
    np.testing.assert_array_equal(new.position, state.position)


def test_selected_through_the_registry():
    assert ebmkit.get_spec("sampler", "blackjax_hmc") is spec
    sampler = spec.create(HMCConfig(step_size=0.2))
    assert sampler.tunables == {"step_size": 0.2, "inverse_mass_matrix": 1.0}
