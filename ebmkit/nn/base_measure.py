"""A base measure that confines any energy: ``E(x) = f(x) + |x − μ|²_s / 2``.

A network ``f`` trained by MCMC learns the density where its chains go. Far
from the data nothing pushes ``f`` up, so ``exp(−f)`` may stay flat out to
infinity: the model is then barely normalisable, a large share of its mass
lies outside the data, and long chains drift away. Adding the energy of a
broad Gaussian,

    E(x) = f(x) + Σᵢ (xᵢ − μᵢ)² / (2 (scale · sᵢ)²),

with ``μ`` and ``s`` the data's mean and per-coordinate standard deviation,
makes ``exp(−E)`` integrable whatever ``f`` learns, and decay at least as fast
as a Gaussian ``scale`` times wider than the data. Inside the data the term is
small and smooth, and ``f`` can absorb it. It is the same base measure as in
exponential-family models ``p(x) ∝ q(x) exp(−f(x))``.

``μ`` and ``s`` are fixed when the model is built (from the data set's
reference distribution, or given), held as static values: they are part of
the model's structure, not parameters or state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ebmkit.nn.layers import ModeViewMixin

__all__ = ["GaussianBaseMeasure", "data_statistics"]


class GaussianBaseMeasure(ModeViewMixin, nnx.Module):
    """``energy(x) + Σ (x − mean)² / (2 (scale · std)²)`` over the event axes.

    Args:
        energy: any energy network ``x[B, *event] (, y) -> E[B]``.
        mean: ``μ``, broadcastable to one event.
        std: ``s`` per coordinate, broadcastable to one event (> 0).
        scale: the Gaussian's width in units of ``std``.
    """

    def __init__(self, energy: nnx.Module, *, mean: Any, std: Any, scale: float):
        mean = np.asarray(mean, np.float64)
        std = np.asarray(std, np.float64)
        if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or not np.all(std > 0):
            raise ValueError(f"base measure: mean must be finite and std > 0, got mean={mean}, std={std}")
        if not scale > 0:
            raise ValueError(f"base measure: scale must be > 0, got {scale}")
        self.energy = energy
        # Static tuples: fixed statistics belong to the model's structure (no
        # state to carry, checkpoint or update each step).
        self.mean_shape = tuple(mean.shape)
        self.mean = tuple(float(v) for v in mean.ravel())
        self.inv_var_shape = tuple(std.shape)
        self.inv_var = tuple(float(v) for v in (1.0 / (scale * std) ** 2).ravel())
        self.scale = float(scale)

    def quadratic(self, x: jax.Array) -> jax.Array:
        """The base measure's energy ``[B]`` at ``x[B, *event]``."""
        mean = jnp.asarray(self.mean, x.dtype).reshape(self.mean_shape)
        inv_var = jnp.asarray(self.inv_var, x.dtype).reshape(self.inv_var_shape)
        d = x - mean
        return 0.5 * jnp.sum(d * d * inv_var, axis=tuple(range(1, x.ndim)))

    def __call__(self, x: jax.Array, y: Any = None) -> jax.Array:
        energy = self.energy(x) if y is None else self.energy(x, y)
        return energy + self.quadratic(jnp.asarray(x, energy.dtype))


def data_statistics(reference: Any, event_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` per coordinate of a reference distribution (a
    :class:`~ebmkit.data.GaussianReference`): the diagonal of its covariance."""
    mean = np.asarray(reference.mean, np.float64).reshape(tuple(event_shape))
    if getattr(reference, "scale_tril", None) is not None:
        tril = np.asarray(reference.scale_tril, np.float64)
        std = np.sqrt(np.sum(tril**2, axis=1)).reshape(tuple(event_shape))
    else:
        std = np.asarray(reference.std, np.float64).reshape(tuple(event_shape))
    return mean, std
