"""Metropolis-adjusted Langevin (MALA) for ebmkit, backed by BlackJAX.

One transition on every chain (row) of the batch, independently::

    x' = x - step_size * dE/dx(x) + sqrt(2 * step_size) * xi,   xi ~ N(0, I)

then accept ``x'`` with probability ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``
per chain, else keep ``x``. The Metropolis correction removes the
O(step_size) bias of unadjusted Langevin, so the chains target
``p(x) ∝ exp(-E(x))`` exactly.

The transition is :func:`blackjax.mcmc.mala.build_kernel`, vmapped over chains
(one key per chain, split from the step's key) with ``logdensity = -E``.
``step_size`` may be a scalar or one value per chain (``[B]``).

A proposal with a non-finite energy gets acceptance 0 (BlackJAX's safe energy
difference maps NaN to -inf) and is rejected, so its chain keeps a finite state;
``info.non_finite`` flags chains whose *state* is non-finite, which only a
non-finite start can produce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import attrs
import jax
import jax.numpy as jnp
from blackjax.mcmc import mala as blackjax_mala

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler, per_chain_diagnostics
from ebmkit.types import Array, BuildContext, EnergyFn, PRNGKey, SamplerState
from ebmkit_blackjax._common import init, logdensity_of, per_chain_scalar

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
        num_grad_evals: gradient evaluations of the transition (1).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    num_grad_evals: Array


@config_class
class MALAConfig(SamplerConfig):
    """Metropolis-adjusted Langevin (BlackJAX).

    Attributes:
        num_steps: K, MALA transitions per chain (per training update).
        step_size: the Langevin step ``step_size``; the proposal noise has
            std ``sqrt(2 * step_size)``.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)


def build_kernel() -> Callable[..., tuple[MALAState, MALAInfo]]:
    """A batched MALA kernel (MALA has no structural options).

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size) -> (state, info)``.
    """
    one_chain = blackjax_mala.build_kernel()

    def kernel(
        rng_key: PRNGKey, state: MALAState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[MALAState, MALAInfo]:
        logdensity = logdensity_of(energy_fn)

        def step(key: PRNGKey, x: Array, energy: Array, grad: Array, h: Array):
            chain = blackjax_mala.MALAState(position=x, logdensity=-energy, logdensity_grad=-grad)
            new, info = one_chain(key, chain, logdensity, h)
            return new.position, -new.logdensity, -new.logdensity_grad, info

        n = state.position.shape[0]
        keys = jax.random.split(rng_key, n)
        x, energy, grad, info = jax.vmap(step)(
            keys, state.position, state.energy, state.grad, per_chain_scalar(step_size, n)
        )
        x = x.astype(state.position.dtype)
        grad_norm, non_finite = per_chain_diagnostics(x, energy, grad)
        return MALAState(position=x, energy=energy, grad=grad), MALAInfo(
            acceptance_rate=info.acceptance_rate.astype(jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_accepted=info.is_accepted,
            num_grad_evals=jnp.ones((n,), jnp.float32),
        )

    return kernel


class MALASampler(BoundSampler):
    """MALA bound to a :class:`MALAConfig` (what ``spec.create`` returns):
    ``tunables = {"step_size"}``, K = ``num_steps``."""

    def __init__(self, config: MALAConfig, ctx: BuildContext | None = None):
        super().__init__(config, init=init, kernel=build_kernel(), tunables={"step_size": config.step_size})


spec = ComponentSpec(
    kind="sampler",
    name="blackjax_mala",
    config=MALAConfig,
    build=MALASampler,
    summary="Metropolis-adjusted Langevin (BlackJAX), accept/reject per chain",
)
