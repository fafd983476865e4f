"""blackjax_nuts: BlackJAX's NUTS per chain and Stan's window adaptation inside ebmkit's warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc import hmc as blackjax_hmc
from blackjax.mcmc import nuts as blackjax_nuts
from blackjax_targets import assert_gaussian_moments, gaussian_energy
from ebmkit_blackjax.nuts import NUTSAdaptation, NUTSConfig, NUTSSampler, spec

import ebmkit
from ebmkit.sampling import run_chain, warmup
from ebmkit.types import Adaptive

# An anisotropic 5-d Gaussian: standard deviations over a factor 13.
MEAN = jnp.array([1.0, -2.0, 0.0, 3.0, 0.5])
STD = jnp.array([0.3, 0.6, 1.0, 2.0, 4.0])
CHAINS = 512
WARMUP = 500
# Stan's schedule for 500 steps ends with a slow window of 200 draws; its
# variance estimate is shrunk by 200 / (200 + 5) towards 1e-3.
LAST_WINDOW = 200


@pytest.fixture(scope="module")
def adapted():
    """A sampler and its chains after the adaptation phase (one compiled warm-up)."""
    sampler = NUTSSampler(NUTSConfig(warmup_steps=WARMUP))
    energy_fn = gaussian_energy(MEAN, STD)
    run = jax.jit(lambda key, x: warmup(key, sampler, x, energy_fn, num_steps=sampler.warmup_steps))
    x, adaptation = run(jax.random.key(0), jnp.zeros((CHAINS, 5)))
    return sampler, energy_fn, x, adaptation


def test_warmup_adapts_the_inverse_mass_matrix_to_the_variances(adapted):
    sampler, _, _, adaptation = adapted
    assert isinstance(sampler, Adaptive)
    assert int(adaptation.step) == WARMUP
    tunables = sampler.adapted_tunables(adaptation)
    imm, step_size = np.asarray(tunables["inverse_mass_matrix"]), np.asarray(tunables["step_size"])
    assert imm.shape == (CHAINS, 5) and step_size.shape == (CHAINS,)
    ratio = imm / np.asarray(STD**2)
    # Each chain estimates each variance from its own last window: averaged
    # over chains the estimate is within 10 % of std^2 (Stan's shrinkage
    # contributes 2.4 %, the adapting chain's draws a few more)...
    np.testing.assert_array_less(np.abs(ratio.mean(axis=0) - 1.0), 0.10)
    np.testing.assert_array_less(ratio.mean(axis=0), 1.0 + 1e-3)  # shrinkage pulls it down
    # ...and one chain's estimate scatters as a variance from a few dozen to
    # LAST_WINDOW effective draws (sqrt(2 / 200) = 0.1; 0.25 allows 32).
    np.testing.assert_array_less(ratio.std(axis=0), 0.25)
    # One step size per chain, all of them sensible for the whitened target.
    assert np.all((step_size > 0.3) & (step_size < 1.5))


def test_adapted_tunables_after_warmup_are_blackjax_final(adapted):
    sampler, _, _, adaptation = adapted
    # BlackJAX's ``final``: the averaged step size and the last window's estimate.
    final_step_size = jnp.exp(adaptation.window.ss_state.log_step_size_avg)
    final_imm = adaptation.window.imm_state.inverse_mass_matrix
    tunables = sampler.adapted_tunables(adaptation)
    np.testing.assert_array_equal(tunables["step_size"], final_step_size)
    np.testing.assert_array_equal(tunables["inverse_mass_matrix"], final_imm)
    # Final step size is the dual-averaging average, not the last iterate.
    assert not np.array_equal(final_step_size, adaptation.window.step_size)


def test_adapted_chains_sample_the_gaussian(adapted):
    sampler, energy_fn, x, adaptation = adapted
    # The warm-up ends in the typical set; 30 more transitions at the adapted
    # tunables and the 512 chains' ends are independent draws.
    run = jax.jit(lambda key, x_: run_chain(key, sampler, x_, energy_fn, 30, adaptation=adaptation))
    final, summary = run(jax.random.key(1), x)
    assert_gaussian_moments(final, MEAN, STD)
    # Dual averaging aims at 0.8; BlackJAX's final averaged step runs a little above.
    assert 0.7 < float(summary.acceptance_rate.mean()) < 0.97
    assert not bool(summary.non_finite.any())
    np.testing.assert_array_equal(summary.divergences, np.zeros(CHAINS))
    state = sampler.init(final, energy_fn)
    _, info = jax.jit(lambda k, s: sampler.kernel(k, s, energy_fn, **sampler.adapted_tunables(adaptation)))(
        jax.random.key(2), state
    )
    # The whitened target needs few leapfrog steps: gradient evaluations per transition.
    assert info.num_integration_steps.shape == (CHAINS,)
    assert 1 <= float(np.mean(info.num_integration_steps)) < 16
    # run_chain sums the same count per chain (for ESS per gradient evaluation).
    np.testing.assert_array_equal(info.num_grad_evals, info.num_integration_steps)
    assert 30 <= float(summary.num_grad_evals.min()) and float(summary.num_grad_evals.max()) <= 30 * 1024
    assert not bool(info.is_divergent.any())


def test_continued_adaptation_is_frozen(adapted):
    sampler, energy_fn, x, adaptation = adapted
    state = sampler.init(x, energy_fn)
    _, info = sampler.kernel(jax.random.key(3), state, energy_fn, step_size=0.1)
    # A training update's chain restarts step_index at 0; the spent schedule stays spent.
    again = sampler.adapt(adaptation, info, jnp.int32(0))
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(adaptation), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fresh_adaptation_starts_at_the_config():
    sampler = NUTSSampler(NUTSConfig(step_size=0.3, warmup_steps=50))
    adaptation = sampler.init_adaptation(jnp.zeros((4, 3)))
    assert isinstance(adaptation, NUTSAdaptation) and int(adaptation.step) == 0
    tunables = sampler.adapted_tunables(adaptation)
    np.testing.assert_allclose(tunables["step_size"], np.full(4, 0.3), rtol=1e-6)
    np.testing.assert_array_equal(tunables["inverse_mass_matrix"], np.ones((4, 3)))


def test_no_warmup_steps_means_no_adaptation():
    sampler = NUTSSampler(NUTSConfig(warmup_steps=0))
    energy_fn = gaussian_energy(MEAN, STD)
    x, adaptation = warmup(jax.random.key(0), sampler, jnp.zeros((4, 5)), energy_fn)
    np.testing.assert_array_equal(x, np.zeros((4, 5)))
    assert int(adaptation.step) == 0
    assert sampler.adapt(adaptation, None, 0) is adaptation


def test_draws_exactly_blackjax_chain():
    # Each chain is BlackJAX's NUTS on logdensity = -E with its own key and its
    # own step size and inverse mass matrix.
    def energy_fn(x):
        return 0.5 * jnp.sum(x**2, axis=-1) + jnp.sum(jnp.sin(3 * x), axis=-1)

    def logdensity(x):
        return -energy_fn(x[None])[0]

    imm = jax.random.uniform(jax.random.key(1), (8, 3), minval=0.5, maxval=2.0)
    step_size = jnp.linspace(0.1, 0.6, 8)
    sampler = NUTSSampler(NUTSConfig(max_num_doublings=6))
    x0 = jax.random.normal(jax.random.key(5), (8, 3))
    key = jax.random.key(100)
    ours, info = jax.jit(
        lambda k, s: sampler.kernel(k, s, energy_fn, step_size=step_size, inverse_mass_matrix=imm)
    )(key, sampler.init(x0, energy_fn))
    one_chain = blackjax_nuts.build_kernel()
    theirs, their_info = jax.jit(jax.vmap(lambda k, s, h, m: one_chain(k, s, logdensity, h, m, 6)))(
        jax.random.split(key, 8), jax.vmap(blackjax_hmc.init, in_axes=(0, None))(x0, logdensity), step_size, imm
    )
    np.testing.assert_allclose(ours.position, theirs.position, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(info.num_integration_steps, their_info.num_integration_steps)


def test_selected_through_the_registry():
    assert ebmkit.get_spec("sampler", "blackjax_nuts") is spec
    sampler = spec.create(NUTSConfig(warmup_steps=100, target_acceptance=0.9))
    assert sampler.warmup_steps == 100
    assert sampler.tunables == {"step_size": 0.5, "inverse_mass_matrix": 1.0}
    with pytest.raises(ValueError, match="target_acceptance"):
        NUTSConfig(target_acceptance=1.0)
