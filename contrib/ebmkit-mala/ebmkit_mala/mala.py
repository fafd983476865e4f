"""Metropolis-adjusted Langevin (MALA) for ebmkit, backed by BlackJAX.

One transition on every chain (row) of the batch, independently::

    x' = x - step_size * dE/dx(x) + sqrt(2 * step_size) * xi,   xi ~ N(0, I)

then accept ``x'`` with probability ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``
per chain, else keep ``x``. The Metropolis correction removes the
O(step_size) bias of unadjusted Langevin, so the chains target
``p(x) ∝ exp(-E(x))`` exactly.

The transition itself is :func:`blackjax.mcmc.mala.build_kernel`, vmapped over
chains: BlackJAX works on one chain's log-density, ebmkit on a batched energy
``E[B]``, and this module translates between the two (``logdensity = -E``,
``logdensity_grad = -dE/dx``).

A proposal with a non-finite energy gets acceptance 0 (BlackJAX's safe energy
difference maps NaN to -inf) and is rejected, so its chain keeps a finite state;
``info.non_finite`` flags chains whose *state* is non-finite, which only a
non-finite start can produce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp
from blackjax.mcmc import mala as blackjax_mala

from ebmkit.config import SamplerConfig, config_class, positive
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad, tunables_for
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = ["MALAConfig", "MALAState", "MALAInfo", "MALASampler", "init", "build_kernel", "spec"]

#: What the next transition needs: position ``[B, *event]``, energy ``[B]``, ``dE/dx``.
MALAState = SamplerState


class MALAInfo(NamedTuple):
    """Per-chain diagnostics of one MALA transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability; 0 for a
            proposal with a non-finite energy.
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        is_accepted: whether the proposal was taken.
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array


def _positive_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be an integer > 0, got {value!r}")


@config_class
class MALAConfig(SamplerConfig):
    """Metropolis-adjusted Langevin.

    Attributes:
        num_steps: K, MALA transitions per chain (per training update).
        step_size: the Langevin step ``step_size``; the proposal noise has
            std ``sqrt(2 * step_size)``.
    """

    num_steps: int = attrs.field(default=20, validator=_positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)


def init(position: Array, energy_fn: EnergyFn) -> MALAState:
    """The state at ``position`` (``[B, *event]``): one batched energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return MALAState(position=position, energy=energy, grad=grad)


def _event_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def build_kernel() -> Callable[..., tuple[MALAState, MALAInfo]]:
    """A batched MALA kernel (MALA has no structural options).

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size) -> (state, info)``.
    """
    one_chain = blackjax_mala.build_kernel()

    def kernel(
        rng_key: PRNGKey, state: MALAState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[MALAState, MALAInfo]:
        def logdensity(x: Array) -> Array:
            # Rows are independent, so a batch of one is this chain's energy.
            return -energy_fn(x[None])[0]

        def step(key: PRNGKey, x: Array, energy: Array, grad: Array):
            chain = blackjax_mala.MALAState(position=x, logdensity=-energy, logdensity_grad=-grad)
            new, info = one_chain(key, chain, logdensity, step_size)
            return new.position, -new.logdensity, -new.logdensity_grad, info

        keys = jax.random.split(rng_key, state.position.shape[0])
        x, energy, grad, info = jax.vmap(step)(keys, state.position, state.energy, state.grad)
        x = x.astype(state.position.dtype)
        axes = _event_axes(x)
        non_finite = (
            ~jnp.all(jnp.isfinite(x), axis=axes)
            | ~jnp.isfinite(energy)
            | ~jnp.all(jnp.isfinite(grad), axis=axes)
        )
        new_info = MALAInfo(
            acceptance_rate=info.acceptance_rate.astype(jnp.float32),
            grad_norm=jnp.sqrt(jnp.sum(jnp.square(grad), axis=axes)),
            non_finite=non_finite,
            is_accepted=info.is_accepted,
        )
        return MALAState(position=x, energy=energy, grad=grad), new_info

    return kernel


class MALASampler:
    """MALA bound to a :class:`MALAConfig` (the object ``spec.build`` returns).

    Attributes:
        config: the config it was built from.
        num_steps: K from the config.
        tunables: ``{"step_size"}`` default from the config; each ``kernel``
            call may override it (``None`` keeps the default).
    """

    def __init__(self, config: MALAConfig):
        self.config = config
        self.num_steps = config.num_steps
        self.tunables: dict[str, float] = {"step_size": config.step_size}
        self._kernel = build_kernel()

    def init(self, position: Array, energy_fn: EnergyFn) -> MALAState:
        return init(position, energy_fn)

    def kernel(
        self, rng_key: PRNGKey, state: MALAState, energy_fn: EnergyFn, **tunables: Any
    ) -> tuple[MALAState, MALAInfo]:
        return self._kernel(rng_key, state, energy_fn, **tunables_for(self, tunables))

    def __repr__(self) -> str:
        return f"MALASampler({self.config!r})"


spec = ComponentSpec(
    kind="sampler",
    name="mala",
    config=MALAConfig,
    build=MALASampler,
    summary="Metropolis-adjusted Langevin (BlackJAX), accept/reject per chain",
)
