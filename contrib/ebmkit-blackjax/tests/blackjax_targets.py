"""Targets with known answers, shared by the tests of the four samplers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

#: Standard errors allowed: 5 keeps a false alarm below ~1e-6 per statistic.
SIGMAS = 5.0


def gaussian_energy(mean: jax.Array, std: jax.Array):
    """``N(mean, diag(std^2))``: ``E(x) = |(x - mean) / std|^2 / 2`` per row."""

    def energy_fn(x: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(((x - mean) / std) ** 2, axis=-1)

    return energy_fn


def assert_gaussian_moments(x, mean, std, *, num_draws: int | None = None, var_bias: float = 0.0):
    """Per-coordinate mean and variance of ``x[n, D]`` match ``N(mean, diag(std^2))``.

    ``num_draws`` is the number of effective (independent) draws, by default
    the rows of ``x`` (one final position per independent chain). The sample
    mean then has standard error ``std / sqrt(n)`` and the sample variance
    ``std^2 * sqrt(2 / n)``; both may be off by ``SIGMAS`` standard errors, and
    the variance by a further relative ``var_bias`` (an unadjusted sampler's
    discretisation bias).
    """
    x = np.asarray(x, np.float64)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    n = x.shape[0] if num_draws is None else num_draws
    assert np.all(np.isfinite(x))
    mean_tol = SIGMAS * std / math.sqrt(n)
    var_tol = std**2 * (SIGMAS * math.sqrt(2.0 / n) + var_bias)
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - mean), mean_tol)
    np.testing.assert_array_less(np.abs(x.var(axis=0) - std**2), var_tol)
