"""Base measures that confine any energy: a Gaussian, or walls at the data's box.

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

When the data are known to lie in a box (the data set's ``bounds``: a range
with a margin around every training point, or pixels in ``[−1, 1]``), the
box's own walls confine without touching the inside:

    E(x) = f(x) + Σᵢ max(0, |xᵢ − cᵢ| − hᵢ)² / (2 w²),

zero inside the box ``c ± h`` and a quadratic wall of width ``w`` beyond it
(linear from three widths deep, 4.5 nats up, so that the gradient and a
sampler's step stay bounded however deep a chain lands):
the density outside falls like a half-Gaussian of scale ``w`` from its value
at the edge, so the mass outside is at most about ``perimeter · w · √(π/2)``
times the density at the edge, whatever ``f`` does out there. ``f`` keeps the
whole inside to itself (unlike the Gaussian, which it must cancel where the
data are flat). It is a softened truncation to the data's support: unlike a
hard one, a test point a little outside still has a finite energy.

The statistics are fixed when the model is built (from the data set's
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

__all__ = ["BoxBaseMeasure", "GaussianBaseMeasure", "data_statistics"]


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


#: Depth (in widths) at which a box wall turns from quadratic to linear.
_KNEE = 3.0


class BoxBaseMeasure(ModeViewMixin, nnx.Module):
    """``energy(x) + Σ wall(max(0, |x − centre| − half) / width)`` over the event axes,
    ``wall(z) = z²/2`` up to ``z = 3``, linear beyond.

    Args:
        energy: any energy network ``x[B, *event] (, y) -> E[B]``.
        low, high: the box, broadcastable to one event (``low < high``).
        width: the walls' width ``w`` (> 0) in the data's units, per
            coordinate or one for all.
    """

    def __init__(self, energy: nnx.Module, *, low: Any, high: Any, width: Any):
        low = np.asarray(low, np.float64)
        high = np.asarray(high, np.float64)
        width = np.asarray(width, np.float64)
        try:
            shape = np.broadcast_shapes(low.shape, high.shape, width.shape)
        except ValueError:
            raise ValueError(
                f"base measure: low, high and width must broadcast together, got {low.shape}, {high.shape}, {width.shape}"
            ) from None
        low, high, width = (np.broadcast_to(a, shape) for a in (low, high, width))
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(f"base measure: the box needs finite low < high, got low={low}, high={high}")
        if not (np.all(np.isfinite(width)) and np.all(width > 0)):
            raise ValueError(f"base measure: the walls' width must be > 0, got {width}")
        self.energy = energy
        # Static tuples, as for the Gaussian: structure, not state.
        self.box_shape = tuple(shape)
        self.centre = tuple(float(v) for v in ((low + high) / 2).ravel())
        self.half = tuple(float(v) for v in ((high - low) / 2).ravel())
        self.inv_width_sq = tuple(float(v) for v in (1.0 / width**2).ravel())

    def quadratic(self, x: jax.Array) -> jax.Array:
        """The walls' energy ``[B]`` at ``x[B, *event]``: zero inside the box,
        ``d² / (2w²)`` at depth ``d ≤ 3w`` beyond an edge, then linear with the
        same slope (so a sampler's step stays bounded deep in a wall)."""
        centre = jnp.asarray(self.centre, x.dtype).reshape(self.box_shape)
        half = jnp.asarray(self.half, x.dtype).reshape(self.box_shape)
        inv_width_sq = jnp.asarray(self.inv_width_sq, x.dtype).reshape(self.box_shape)
        depth = jnp.maximum(jnp.abs(x - centre) - half, 0.0)
        # Depth in units of the width; quadratic to _KNEE widths, linear beyond.
        z = depth * jnp.sqrt(inv_width_sq)
        wall = jnp.where(z <= _KNEE, 0.5 * z * z, _KNEE * z - 0.5 * _KNEE**2)
        return jnp.sum(wall, axis=tuple(range(1, x.ndim)))

    def __call__(self, x: jax.Array, y: Any = None) -> jax.Array:
        energy = self.energy(x) if y is None else self.energy(x, y)
        return energy + self.quadratic(jnp.asarray(x, energy.dtype))
