"""Metropolis-adjusted Langevin (MALA) with step-size adaptation.

One transition on every chain (row) of the batch, independently::

    x' = x − ε ∇E(x) + √(2ε) ξ,   ξ ~ N(0, I)

accepted with probability ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, else
the chain keeps ``x``. The Metropolis correction removes unadjusted Langevin's
O(ε) bias: the chains target ``p(x) ∝ exp(−E(x))`` exactly.

**Adaptation** (:class:`~ebmkit.types.Adaptive`): during the first
``warmup_steps`` steps (the adaptation phase, run before training and before
:meth:`~ebmkit.EBM.generate`), dual averaging drives each chain's step size
toward ``target_acceptance`` (0.574, the optimal MALA acceptance in high
dimension); at the end of the phase every chain keeps its *averaged* step and
adaptation stops, so the chain from then on is an exact, fixed MALA kernel.
``adaptation = "shared"`` adapts one step for all chains from their mean
acceptance (less noisy; right when every chain targets the same density).
``keep_adapting = true`` never freezes (the step follows a target that
changes, as an EBM's does during training, at the price of exactness).
``warmup_steps = 0`` runs plain MALA at ``step_size``.

With ``clamp``, chain starts are projected into the box and proposals that
leave it are rejected, which samples the target restricted to the box exactly.
A proposal with a non-finite energy is rejected (its chain keeps its finite
state); ``info.non_finite`` flags chains whose *state* is non-finite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import (
    as_tuple,
    box,
    in_range,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
)
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler, per_chain, per_chain_diagnostics, per_row_energy_and_grad
from ebmkit.sampling.adaptation import StepSizeAdaptation
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = ["MALAConfig", "MALAState", "MALAInfo", "MALASampler", "AdaptiveMALASampler", "build", "init", "build_kernel", "spec"]

#: What the next transition needs: position ``[B, *event]``, energy ``[B]``, ``dE/dx``.
MALAState = SamplerState
ADAPTATIONS = ("per_chain", "shared")


class MALAInfo(NamedTuple):
    """Per-chain diagnostics of one transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability (0 for a
            proposal with a non-finite energy or outside ``clamp``).
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        is_accepted: whether the proposal was taken.
        step_size: the step each chain ran with.
        num_grad_evals: gradient evaluations spent (1 per chain).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    step_size: Array
    num_grad_evals: Array


@config_class
class MALAConfig(SamplerConfig):
    """Metropolis-adjusted Langevin with dual-averaging step-size adaptation.

    Attributes:
        num_steps: K, transitions per chain (per training update).
        step_size: ``ε``, the starting step (the step itself with ``warmup_steps = 0``).
        warmup_steps: adapting steps of the adaptation phase (0: no adaptation).
        target_acceptance: the acceptance rate adaptation aims for.
        adaptation: ``"per_chain"`` (one step per chain) or ``"shared"``.
        keep_adapting: never freeze the step (inexact; for moving targets).
        max_step_size: the largest step adaptation may reach (``None``: no cap).
            An untrained EBM's energy is nearly flat, where every proposal is
            accepted and an uncapped step grows without bound.
        clamp: ``(low, high)``: sample the target restricted to this box, or ``None``.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    warmup_steps: int = attrs.field(default=200, validator=non_negative_int)
    target_acceptance: float = attrs.field(default=0.574, validator=in_range(0, 1, low_open=True, high_open=True))
    adaptation: str = attrs.field(default="per_chain", validator=one_of(ADAPTATIONS))
    keep_adapting: bool = False
    max_step_size: float | None = attrs.field(default=1.0, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


def init(position: Array, energy_fn: EnergyFn) -> MALAState:
    """The state at ``position`` (``[B, *event]``): one energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return MALAState(position=position, energy=energy, grad=grad)


def build_kernel(clamp: tuple[float, float] | None = None) -> Callable[..., tuple[MALAState, MALAInfo]]:
    """A batched MALA kernel.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size) -> (state, info)``;
        ``step_size`` is a scalar or one value per chain (``[B]``).
    """

    def kernel(
        rng_key: PRNGKey, state: MALAState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[MALAState, MALAInfo]:
        x, e, g = state.position, state.energy, state.grad
        batch = x.shape[0]
        axes = tuple(range(1, x.ndim))
        eps_b = jnp.broadcast_to(jnp.asarray(step_size, jnp.float32), (batch,))
        eps = per_chain(eps_b, x).astype(x.dtype)
        noise_key, accept_key = jax.random.split(rng_key)
        proposal = x - eps * g + jnp.sqrt(2.0 * eps) * jax.random.normal(noise_key, x.shape, x.dtype)
        e_new, g_new = per_row_energy_and_grad(energy_fn, proposal)

        def log_q(to: Array, frm: Array, grad_from: Array) -> Array:
            # log q(to | from), up to the constant both directions share.
            d = to - frm + eps * grad_from
            return -jnp.sum(d * d, axis=axes) / (4.0 * eps_b)

        log_alpha = -(e_new - e) + log_q(x, proposal, g_new) - log_q(proposal, x, g)
        # A non-finite proposal energy or gradient makes log_alpha NaN or
        # infinite: one test rejects them all.
        valid = jnp.isfinite(log_alpha)
        if clamp is not None:
            valid &= jnp.all((proposal >= clamp[0]) & (proposal <= clamp[1]), axis=axes)
        accept_prob = jnp.where(valid, jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0).astype(jnp.float32)
        accepted = jax.random.uniform(accept_key, (batch,)) < accept_prob
        mask = per_chain(accepted, x)
        x = jnp.where(mask, proposal, x)
        e = jnp.where(accepted, e_new, e)
        g = jnp.where(mask, g_new, g)
        grad_norm, non_finite = per_chain_diagnostics(x, e, g)
        return MALAState(position=x, energy=e, grad=g), MALAInfo(
            acceptance_rate=accept_prob,
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_accepted=accepted,
            step_size=eps_b,
            num_grad_evals=jnp.ones((batch,), jnp.float32),
        )

    return kernel


class MALASampler(BoundSampler):
    """MALA bound to a :class:`MALAConfig` with ``warmup_steps = 0``: a fixed
    kernel, ``tunables = {"step_size"}``."""

    def __init__(self, config: MALAConfig, ctx: Any = None):
        super().__init__(config, init=init, kernel=build_kernel(config.clamp), tunables={"step_size": config.step_size})


class AdaptiveMALASampler(StepSizeAdaptation, MALASampler):
    """MALA with ``warmup_steps > 0``: an :class:`~ebmkit.types.Adaptive`
    sampler whose adaptation state is a
    :class:`~ebmkit.sampling.adaptation.DualAveragingState` (``[B]`` per chain,
    scalars when shared)."""


def build(config: MALAConfig, ctx: Any = None) -> MALASampler:
    """MALA bound to ``config``: adaptive when ``warmup_steps > 0``."""
    return (AdaptiveMALASampler if config.warmup_steps > 0 else MALASampler)(config, ctx)


spec = ComponentSpec(
    kind="sampler",
    name="mala",
    config=MALAConfig,
    build=build,
    summary="Metropolis-adjusted Langevin with dual-averaging step-size adaptation, per chain",
)
