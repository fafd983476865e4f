"""Layers shared by energy networks, built-in or third-party.

* :data:`ACTIVATIONS`: activation functions by config name.
* :class:`TraceSafeDropout`: dropout that stays valid inside transforms.
* :class:`SpectralNorm` and :func:`dense`: a non-destructive spectral norm.
* :class:`ModeViewMixin`: makes ``nnx.view`` accept the eval-mode keys on any
  network (see :mod:`ebmkit.nn.eval` for the eval-mode contract).
* :func:`check_rngs`, :func:`check_event_shape`, :func:`check_input`,
  :func:`dropout_stream`: input checks with messages that name the energy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.errors import TraceContextError

__all__ = [
    "ACTIVATIONS",
    "TraceSafeDropout",
    "SpectralNorm",
    "ModeViewMixin",
    "dense",
    "dropout_stream",
    "check_rngs",
    "check_event_shape",
    "check_input",
]

#: Activation names accepted by ``activation`` (``swish`` is ``silu``).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}


# -- layers ------------------------------------------------------------------------


def _try_assign(variable: nnx.Variable, value: jax.Array) -> None:
    """Write ``value`` into ``variable`` unless it lives in an outer trace.

    A module merged outside ``lax.scan``/``jax.grad``/``jax.jit`` and called
    inside it cannot update its variables there (NNX raises TraceContextError).
    The values written here (an RNG counter, a power-iteration vector) are only
    warm starts, so skipping the write keeps the call valid and pure.
    """
    try:
        variable[...] = value
    except TraceContextError:
        pass


def dropout_stream(rngs: nnx.Rngs) -> nnx.RngStream:
    """The stream dropout draws from, even when ``rngs`` has no ``dropout`` one.

    ``nnx.Rngs(params=0, noise=1, sample=2)`` has neither ``dropout`` nor
    ``default``; a stream is then derived from ``params`` so building works.
    """
    if "dropout" in rngs or "default" in rngs:
        return rngs["dropout"]
    return nnx.RngStream(jax.random.fold_in(rngs["params"](), 0x64726F70), tag="dropout")


def check_rngs(rngs: Any, name: str) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{name} energy: rngs must be an nnx.Rngs, got {type(rngs).__name__}")
    if "params" not in rngs and "default" not in rngs:
        raise ValueError(
            f"{name} energy: rngs has no 'params' stream and no default seed "
            f"(streams: {sorted(rngs)}); pass e.g. nnx.Rngs(params=0) or nnx.Rngs(0)"
        )


def check_event_shape(event_shape: Any, name: str) -> tuple[int, ...]:
    try:
        shape = tuple(event_shape)
    except TypeError:
        shape = None
    if shape is None or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"{name} energy: event_shape must be a tuple of positive ints, got {event_shape!r}")
    return shape


def check_input(x: Any, event_shape: tuple[int, ...], name: str) -> jax.Array:
    """``x`` as float32 after checking it is ``[B, *event_shape]`` (static shapes)."""
    x = jnp.asarray(x)
    if x.ndim != len(event_shape) + 1 or tuple(x.shape[1:]) != event_shape:
        raise ValueError(
            f"{name} energy expects input of shape [B, *event_shape] = (B, "
            f"{', '.join(map(str, event_shape))}), got {tuple(x.shape)}"
            + ("; for a single sample use x[None]" if tuple(x.shape) == event_shape else "")
        )
    return x.astype(jnp.float32)


class TraceSafeDropout(nnx.Dropout):
    """``nnx.Dropout`` that stays valid inside transforms.

    The mask key is ``fold_in(key, count)`` as in NNX, but the counter is only
    advanced where the module may be mutated. Called from an inner trace on a
    module that lives outside it (e.g. merged outside ``lax.scan``), every call
    in that trace reuses one mask instead of raising. Masks are drawn per
    element, so rows stay independent. Inactive when ``deterministic`` (eval).
    """

    def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None, rngs: Any = None) -> jax.Array:
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic or self.rate == 0.0 or rngs is not None or self.rngs is None:
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        stream = self.rngs
        count = stream.count[...]
        key = jax.random.fold_in(stream.key[...], count)
        _try_assign(stream.count, count + 1)
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, inputs.shape)
        return jnp.where(mask, inputs / keep, jnp.zeros_like(inputs))


def _l2_normalize(v: jax.Array, eps: float) -> jax.Array:
    return v * jax.lax.rsqrt(jnp.sum(v * v) + eps)


class SpectralNorm(nnx.Module):
    """Divide a bias-free linear layer's output by its kernel's spectral norm.

    Unlike ``nnx.SpectralNorm`` (which writes the normalised kernel back into
    the wrapped layer's Param on every call, in eval mode too), the kernel Param
    is never modified: ``layer(x) / sigma + bias`` equals the layer applied with
    ``kernel / sigma`` because the layer is linear in its kernel. The
    power-iteration vector ``u`` (a BatchStat) is updated only in train mode
    (``use_running_average`` False, as ``.train()``/``.eval()`` set it) and only
    where the module may be mutated. ``sigma`` depends on parameters only, so
    rows stay independent.

    Args:
        layer: an ``nnx.Linear`` or ``nnx.Conv`` built with ``use_bias=False``.
        out_features: the layer's output features (size of the bias).
        n_steps: power-iteration steps per call.
        rngs: draws the initial ``u``.
    """

    def __init__(self, layer: nnx.Module, *, out_features: int, rngs: nnx.Rngs, n_steps: int = 1, epsilon: float = 1e-12):
        self.layer = layer
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        self.n_steps = n_steps
        self.epsilon = epsilon
        self.use_running_average = False
        u = jax.random.normal(rngs["params"](), (1, out_features), jnp.float32)
        u = _l2_normalize(u, epsilon)
        # Warm start so that sigma is accurate from the first (even eval) call.
        w = self._matrix()
        for _ in range(20):
            u = _l2_normalize(_l2_normalize(u @ w.T, epsilon) @ w, epsilon)
        self.u = nnx.BatchStat(u)

    def _matrix(self) -> jax.Array:
        kernel = self.layer.kernel[...]
        return kernel.reshape(-1, kernel.shape[-1])

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: ``use_running_average=True`` freezes ``u``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self._matrix()
        u = self.u[...]
        v = u @ w.T
        for _ in range(self.n_steps):
            v = _l2_normalize(u @ w.T, self.epsilon)
            u = _l2_normalize(v @ w, self.epsilon)
        u = jax.lax.stop_gradient(u)
        v = jax.lax.stop_gradient(v)
        sigma = (v @ w @ u.T)[0, 0]
        if not self.use_running_average:
            _try_assign(self.u, u)
        return self.layer(x) / jnp.where(sigma != 0, sigma, 1.0) + self.bias[...]


def dense(in_features: int, out_features: int, *, spectral_norm: bool, rngs: nnx.Rngs) -> nnx.Module:
    """A Linear layer, spectrally normalised when asked."""
    if not spectral_norm:
        return nnx.Linear(in_features, out_features, rngs=rngs)
    layer = nnx.Linear(in_features, out_features, use_bias=False, rngs=rngs)
    return SpectralNorm(layer, out_features=out_features, rngs=rngs)


class ModeViewMixin:
    """Lets ``nnx.view(energy, deterministic=..., use_running_average=...)``
    work for every config, including ones without dropout or spectral norm
    (nnx.view raises on keys no module accepts). The layers act on the flags."""

    def set_view(self, deterministic: bool | None = None, use_running_average: bool | None = None) -> None:
        """Mode flags are handled by the dropout and spectral-norm layers."""
