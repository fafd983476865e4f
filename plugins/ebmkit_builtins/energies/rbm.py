"""``rbm``: a Bernoulli-Bernoulli restricted Boltzmann machine over bits.

Visible bits ``x`` (any event shape, flattened to ``d``) and ``hidden`` bits
``h`` share the joint energy ``E(x, h) = -b·x - c·h - xᵀ W h``. Summing ``h``
out gives the energy the rest of ebmkit sees, the free energy::

    E(x) = -b·x - Σ_j softplus(c_j + (Wᵀx)_j)

The module implements :class:`ebmkit.types.BlockGibbs`: ``hidden_logits`` and
``visible_logits`` are the logits of the factorised conditionals ``p(h | x)``
and ``p(x | h)``; :meth:`RBMEnergy.sample_hidden` and
:meth:`RBMEnergy.sample_visible` draw from them (block Gibbs), and
``ebmkit.evaluate.discrete`` computes the exact log-likelihood when one layer
has at most 20 units.

Inputs are expected in {0, 1}; other values are accepted (the free energy is
defined for any real ``x``), as continuous samplers' chains would produce.
"""

from __future__ import annotations

import math

import attrs
import jax
import jax.numpy as jnp
from flax import nnx

from ebmkit.config import EnergyConfig, config_class
from ebmkit.config.validators import non_negative, positive_int
from ebmkit.nn import (
    ModeViewMixin,
    check_event_shape,
    check_fits_in_memory,
    check_input,
    check_rngs,
)
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["RBMConfig", "RBMEnergy", "build", "spec"]


@config_class
class RBMConfig(EnergyConfig):
    """Config of ``rbm``.

    Attributes:
        hidden: number of hidden units ``H``.
        init_scale: standard deviation of the initial weights (biases start at 0).
    """

    hidden: int = attrs.field(default=64, validator=positive_int)
    init_scale: float = attrs.field(default=0.01, validator=non_negative)


class RBMEnergy(ModeViewMixin, nnx.Module):
    """The free energy of a Bernoulli-Bernoulli RBM, ``x[B, *event] -> E[B]``.

    Attributes:
        weights: ``W[d, H]``.
        visible_bias: ``b[d]``.
        hidden_bias: ``c[H]``.
    """

    def __init__(self, config: RBMConfig, *, event_shape: tuple[int, ...], rngs: nnx.Rngs):
        check_rngs(rngs, "rbm")
        self.event_shape = check_event_shape(event_shape, "rbm")
        d, h = math.prod(self.event_shape), int(config.hidden)
        check_fits_in_memory(d * h + d + h, "energy.hidden", copies=4)
        self.num_hidden = h
        key = rngs.params()
        self.weights = nnx.Param(config.init_scale * jax.random.normal(key, (d, h), jnp.float32))
        self.visible_bias = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.hidden_bias = nnx.Param(jnp.zeros((h,), jnp.float32))

    def _flat(self, x: jax.Array) -> jax.Array:
        return check_input(x, self.event_shape, "rbm").reshape(x.shape[0], -1)

    def hidden_logits(self, x: jax.Array) -> jax.Array:
        """``[B, H]``: ``c + Wᵀx``."""
        return self._flat(x) @ self.weights[...] + self.hidden_bias[...]

    def visible_logits(self, h: jax.Array) -> jax.Array:
        """``[B, *event]``: ``b + W h``."""
        h = jnp.asarray(h, jnp.float32)
        if h.ndim != 2 or h.shape[1] != self.num_hidden:
            raise ValueError(f"rbm: hidden states must be [B, {self.num_hidden}], got {tuple(h.shape)}")
        logits = h @ self.weights[...].T + self.visible_bias[...]
        return logits.reshape((h.shape[0], *self.event_shape))

    def sample_hidden(self, rng_key: jax.Array, x: jax.Array) -> jax.Array:
        """``h ~ p(h | x)``, ``float32[B, H]`` bits."""
        return jax.random.bernoulli(rng_key, jax.nn.sigmoid(self.hidden_logits(x))).astype(jnp.float32)

    def sample_visible(self, rng_key: jax.Array, h: jax.Array) -> jax.Array:
        """``x ~ p(x | h)``, ``float32[B, *event]`` bits."""
        return jax.random.bernoulli(rng_key, jax.nn.sigmoid(self.visible_logits(h))).astype(jnp.float32)

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        if y is not None:
            raise ValueError("rbm: got a condition y, but an RBM takes none")
        flat = self._flat(x)
        pre = flat @ self.weights[...] + self.hidden_bias[...]
        return -(flat @ self.visible_bias[...]) - jnp.sum(jax.nn.softplus(pre), axis=-1)


def build(config: RBMConfig, ctx: BuildContext) -> RBMEnergy:
    """An RBM over events of ``ctx.event_shape`` (flattened)."""
    return RBMEnergy(config, event_shape=ctx.event_shape, rngs=ctx.rngs)


spec = ComponentSpec(
    kind="energy",
    name="rbm",
    config=RBMConfig,
    build=build,
    summary="Bernoulli-Bernoulli RBM (free energy; block-Gibbs conditionals; exact likelihood for small layers)",
    supports=("binary",),
)
