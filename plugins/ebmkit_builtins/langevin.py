"""Unadjusted Langevin dynamics (ULA), the workhorse sampler of EBM training.

One step on every chain (row) of the batch::

    x' = clamp(x - step_size * clip(grad E(x)) / temperature + noise_scale * xi),  xi ~ N(0, I)

With ``noise_scale = sqrt(2 * step_size)`` (the default) and ``temperature = 1``
this is the Euler-Maruyama discretisation of the Langevin diffusion whose
stationary law is ``p(x) ∝ exp(-E(x))`` (biased by O(step_size), no
Metropolis correction). A separate ``noise_scale`` gives the "short-run" EBM
recipe of Du & Mordatch (2019), as in Artifex's EBM guide. ``temperature`` is
used by :mod:`ebmkit_builtins.annealed_langevin`; the ``langevin`` sampler
itself always runs at ``temperature = 1``.

Nothing is masked: a non-finite energy, gradient or position flows on and is
reported per chain in ``info.non_finite``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config.base import SamplerConfig, config_class, non_negative, optional, positive
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad, tunables_for
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerInfo, SamplerState

__all__ = [
    "LangevinConfig",
    "LangevinState",
    "LangevinInfo",
    "LangevinSampler",
    "init",
    "build_kernel",
    "spec",
]

#: What the next step needs: position, energy ``[B]`` and ``dE/dx``.
LangevinState = SamplerState
#: Per-chain diagnostics; ``acceptance_rate`` is always 1 (no MH correction).
LangevinInfo = SamplerInfo


# -- configuration -------------------------------------------------------------------


def positive_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An integer > 0 (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be an integer > 0, got {value!r}")


def as_box(value: Any) -> Any:
    """Lists (TOML arrays) become tuples so configs stay hashable and comparable."""
    return tuple(value) if isinstance(value, list) else value


def box(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """``None`` or a pair of finite numbers ``(low, high)`` with ``low < high``."""
    if value is None:
        return
    value = as_box(value)
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok:
        raise ValueError(f"must be a pair of finite numbers [low, high], got {value!r}")
    if not value[0] < value[1]:
        raise ValueError(f"must have low < high, got low={value[0]!r}, high={value[1]!r}")


@config_class
class LangevinConfig(SamplerConfig):
    """Unadjusted Langevin dynamics.

    Attributes:
        num_steps: K, steps per chain (per training update).
        step_size: the drift coefficient ``step_size`` in the update.
        noise_scale: std of the injected noise; ``None`` means
            ``sqrt(2 * step_size)`` (exact Langevin), a number gives the
            Du & Mordatch style update with independent noise.
        grad_clip: clip each element of ``grad E`` to ``[-grad_clip, grad_clip]``
            before the step; ``None`` (default) does not clip.
        clamp: ``(low, high)``: clamp every sample into this box after each
            step (and the chain start at ``init``); ``None`` (default) does not.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float | None = attrs.field(default=None, validator=optional(non_negative))
    grad_clip: float | None = attrs.field(default=None, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_box, validator=box)


# -- the algorithm -------------------------------------------------------------------


def _event_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def per_chain_diagnostics(position: Array, energy: Array, grad: Array) -> tuple[Array, Array]:
    """``(grad_norm[B], non_finite[B])`` of one state, shared by the built-in samplers."""
    axes = _event_axes(position)
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=axes))
    non_finite = (
        ~jnp.all(jnp.isfinite(position), axis=axes)
        | ~jnp.isfinite(energy)
        | ~jnp.all(jnp.isfinite(grad), axis=axes)
    )
    return grad_norm, non_finite


def init(position: Array, energy_fn: EnergyFn) -> LangevinState:
    """The state at ``position`` (``[B, *event]``): one energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return LangevinState(position=position, energy=energy, grad=grad)


def build_kernel(
    grad_clip: float | None = None, clamp: tuple[float, float] | None = None
) -> Callable[..., tuple[LangevinState, LangevinInfo]]:
    """A Langevin kernel with the structural options fixed.

    Args:
        grad_clip: elementwise gradient clip, or ``None``.
        clamp: ``(low, high)`` box for the new position, or ``None``.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size, noise_scale=None,
        temperature=1.0) -> (state, info)``. ``noise_scale=None`` means
        ``sqrt(2 * step_size)``; the drift is divided by ``temperature``, so the
        stationary law (for exact noise) is ``exp(-E / temperature)``.
    """

    def kernel(
        rng_key: PRNGKey,
        state: LangevinState,
        energy_fn: EnergyFn,
        step_size: float | Array,
        noise_scale: float | Array | None = None,
        temperature: float | Array = 1.0,
    ) -> tuple[LangevinState, LangevinInfo]:
        x = state.position
        if noise_scale is None:
            noise_scale = jnp.sqrt(2.0 * step_size)
        grad = state.grad
        if grad_clip is not None:
            # jnp.clip keeps NaN, so clipping never hides a non-finite gradient.
            grad = jnp.clip(grad, -grad_clip, grad_clip)
        noise = jax.random.normal(rng_key, x.shape, x.dtype)
        drift = (step_size / temperature) * grad
        new_x = (x - drift + noise_scale * noise).astype(x.dtype)
        if clamp is not None:
            new_x = jnp.clip(new_x, clamp[0], clamp[1])
        energy, new_grad = per_row_energy_and_grad(energy_fn, new_x)
        grad_norm, non_finite = per_chain_diagnostics(new_x, energy, new_grad)
        new_state = LangevinState(position=new_x, energy=energy, grad=new_grad)
        info = LangevinInfo(
            acceptance_rate=jnp.ones(energy.shape, jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
        )
        return new_state, info

    return kernel


class LangevinSampler:
    """Langevin bound to a :class:`LangevinConfig` (the object ``spec.build`` returns).

    Attributes:
        config: the config it was built from.
        num_steps: K from the config.
        tunables: ``{"step_size", "noise_scale"}`` defaults from the config;
            each ``kernel`` call may override them (``None`` keeps the default).
    """

    def __init__(self, config: LangevinConfig):
        self.config = config
        self.num_steps = config.num_steps
        self.tunables: dict[str, float | None] = {
            "step_size": config.step_size,
            "noise_scale": config.noise_scale,
        }
        self._clamp = config.clamp
        self._kernel = build_kernel(grad_clip=config.grad_clip, clamp=config.clamp)

    def init(self, position: Array, energy_fn: EnergyFn) -> LangevinState:
        if self._clamp is not None:
            position = jnp.clip(position, self._clamp[0], self._clamp[1])
        return init(position, energy_fn)

    def kernel(
        self, rng_key: PRNGKey, state: LangevinState, energy_fn: EnergyFn, **tunables: Any
    ) -> tuple[LangevinState, LangevinInfo]:
        return self._kernel(rng_key, state, energy_fn, **tunables_for(self, tunables))

    def __repr__(self) -> str:
        return f"LangevinSampler({self.config!r})"


spec = ComponentSpec(
    kind="sampler",
    name="langevin",
    config=LangevinConfig,
    build=LangevinSampler,
    summary="Unadjusted Langevin dynamics (optional Du & Mordatch noise, grad clip, clamp)",
)
