"""The discrete Langevin proposal on binary data: DMALA and DULA (Zhang et al., 2022).

One transition on every chain (row) of the batch, independently, on
``x ∈ {0, 1}^D`` (any event shape, flattened). The proposal is a Langevin
step restricted to the hypercube: it factorises over the bits, ::

    q(x' | x) = Π_i q_i(x'_i | x),
    q_i(x'_i | x) ∝ exp(−½ ∂E/∂x_i(x) · (x'_i − x_i) − (x'_i − x_i)² / (2α)),

so each bit flips independently, with probability
``sigmoid(−½ ∂E/∂x_i · (1 − 2 x_i) − 1/(2α))``: bits whose flip lowers the
energy (to first order) flip more often, and the step size ``α`` sets how
many flip (``α → 0``: none; at zero gradient each flips with probability
``sigmoid(−1/(2α))``). Many bits move in one step, for one gradient.

* **DMALA** (``adjusted = true``, the default): the move is accepted with
  probability ``min(1, exp(E(x) − E(x')) q(x | x') / q(x' | x))``, the reverse
  proposal using the gradient at ``x'``: exact for ``p(x) ∝ exp(−E(x))``.
* **DULA** (``adjusted = false``): every proposal is taken. Cheaper per step
  (no reverse proposal to weigh) but biased, increasingly with ``α``.

Either way a proposal whose energy or gradient is not finite is rejected (its
chain keeps its finite state) and flagged in ``info.rejected_non_finite``;
``info.non_finite`` flags chains whose *state* is non-finite. The energy is
evaluated on float inputs holding 0 and 1 (the gradient is taken w.r.t. that
relaxed input); positions keep their dtype and stay in ``{0, 1}``.

``step_size`` (α) is a tunable: a scalar or one value per chain (``[B]``).
**Adaptation** (``warmup_steps > 0``, DMALA only): dual averaging drives each
chain's ``α`` toward ``target_acceptance`` during the adaptation phase and
then freezes it at its averaged value, as ``mala`` does; ``adaptation =
"shared"`` adapts one ``α`` for all chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import (
    in_range,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
)
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    BoundSampler,
    check_binary_starts,
    per_chain_diagnostics,
    per_row_energy_and_grad,
)
from ebmkit.sampling.adaptation import StepSizeAdaptation
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = [
    "DMALAConfig",
    "DMALAState",
    "DMALAInfo",
    "DMALASampler",
    "AdaptiveDMALASampler",
    "build",
    "init",
    "build_kernel",
    "flip_logits",
    "spec",
]

#: What the next transition needs: position ``[B, *event]`` in {0, 1}, energy ``[B]``, ``dE/dx``.
DMALAState = SamplerState
ADAPTATIONS = ("per_chain", "shared")


class DMALAInfo(NamedTuple):
    """Per-chain diagnostics of one transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability (DULA: 1 for a
            finite proposal); 0 for a proposal with a non-finite energy or gradient.
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        is_accepted: whether the proposal was taken.
        rejected_non_finite: the proposal had a non-finite energy or gradient
            and was rejected.
        num_flips: bits changed by the transition.
        step_size: the ``α`` each chain ran with.
        num_grad_evals: energy-and-gradient evaluations spent (1 per chain).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    rejected_non_finite: Array
    num_flips: Array
    step_size: Array
    num_grad_evals: Array


@config_class
class DMALAConfig(SamplerConfig):
    """The discrete Langevin proposal on binary data, Metropolis-adjusted or not.

    Attributes:
        num_steps: K, transitions per chain (per training update).
        step_size: ``α``, the starting step (the step itself with
            ``warmup_steps = 0``); larger flips more bits per proposal.
        adjusted: ``true``: DMALA (Metropolis-corrected, exact); ``false``:
            DULA (every proposal taken, biased by ``α``).
        warmup_steps: adapting steps of the adaptation phase (0: no
            adaptation; DMALA only).
        target_acceptance: the acceptance rate adaptation aims for.
        adaptation: ``"per_chain"`` (one ``α`` per chain) or ``"shared"``.
        max_step_size: the largest ``α`` adaptation may reach (``None``: no
            cap). On a flat energy every proposal is accepted, and an
            uncapped ``α`` grows without bound.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.2, validator=positive)
    adjusted: bool = True
    warmup_steps: int = attrs.field(default=0, validator=non_negative_int)
    target_acceptance: float = attrs.field(default=0.6, validator=in_range(0, 1, low_open=True, high_open=True))
    adaptation: str = attrs.field(default="per_chain", validator=one_of(ADAPTATIONS))
    max_step_size: float | None = attrs.field(default=5.0, validator=optional(positive))

    def __attrs_post_init__(self) -> None:
        if self.warmup_steps > 0 and not self.adjusted:
            raise ValueError(
                "warmup_steps > 0 adapts the step toward an acceptance rate, which the "
                "unadjusted sampler (adjusted = false) does not have; set warmup_steps = 0 "
                "or adjusted = true"
            )


def init(position: Array, energy_fn: EnergyFn) -> DMALAState:
    """The state at ``position`` (``[B, *event]`` in {0, 1}): one energy-and-gradient pass.

    Raises:
        ValueError: a concrete ``position`` holds values other than 0 and 1.
    """
    check_binary_starts(position, "dmala")
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return DMALAState(position=position, energy=energy, grad=grad)


def flip_logits(position: Array, grad: Array, step_size: Array) -> Array:
    """The log-odds ``[B, D]`` that each bit of each (flattened) row flips:
    ``−½ ∂E/∂x_i (1 − 2 x_i) − 1 / (2α)``, ``step_size`` (α) of shape ``[B]``."""
    batch = position.shape[0]
    x = position.reshape(batch, -1).astype(jnp.float32)
    g = grad.reshape(batch, -1).astype(jnp.float32)
    return -0.5 * g * (1.0 - 2.0 * x) - 0.5 / step_size[:, None]


def _log_prob_of_flips(logits: Array, flips: Array) -> Array:
    """``log q`` ``[B]`` of the flip pattern ``flips[B, D]`` under independent bits."""
    return jnp.sum(jnp.where(flips, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)), axis=-1)


def build_kernel(adjusted: bool = True) -> Callable[..., tuple[DMALAState, DMALAInfo]]:
    """A batched discrete-Langevin kernel.

    Args:
        adjusted: Metropolis-correct the proposal (DMALA) or take it (DULA).

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size) -> (state, info)``;
        ``step_size`` is a scalar or one value per chain (``[B]``).
    """

    def kernel(
        rng_key: PRNGKey, state: DMALAState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[DMALAState, DMALAInfo]:
        x, e, g = state.position, state.energy, state.grad
        batch = x.shape[0]
        alpha = jnp.broadcast_to(jnp.asarray(step_size, jnp.float32), (batch,))
        flip_key, accept_key = jax.random.split(rng_key)
        logits = flip_logits(x, g, alpha)
        flips = jax.random.uniform(flip_key, logits.shape) < jax.nn.sigmoid(logits)
        delta = jnp.where(flips.reshape(x.shape), 1 - 2 * x, 0).astype(x.dtype)
        proposal = x + delta  # flips the chosen bits; stays in {0, 1} exactly
        e_new, g_new = per_row_energy_and_grad(energy_fn, proposal)
        if adjusted:
            log_q_forward = _log_prob_of_flips(logits, flips)
            log_q_reverse = _log_prob_of_flips(flip_logits(proposal, g_new, alpha), flips)
            log_alpha = (e - e_new).astype(jnp.float32) + log_q_reverse - log_q_forward
            # A non-finite proposal energy or gradient makes log_alpha NaN or
            # infinite (through the reverse proposal): one test rejects them all.
            valid = jnp.isfinite(log_alpha)
            accept_prob = jnp.where(valid, jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0)
            accepted = jax.random.uniform(accept_key, (batch,)) < accept_prob
        else:
            grad_sum = jnp.sum(g_new.reshape(batch, -1) * 0, axis=-1)  # NaN where a gradient is not finite
            valid = jnp.isfinite(e_new) & ~jnp.isnan(grad_sum)
            accept_prob = valid.astype(jnp.float32)
            accepted = valid
        mask = accepted.reshape((batch,) + (1,) * (x.ndim - 1))
        x = jnp.where(mask, proposal, x)
        e = jnp.where(accepted, e_new, e)
        g = jnp.where(mask, g_new, g)
        grad_norm, non_finite = per_chain_diagnostics(x, e, g)
        num_flips = jnp.where(accepted, jnp.sum(flips, axis=-1), 0).astype(jnp.float32)
        return DMALAState(position=x, energy=e, grad=g), DMALAInfo(
            acceptance_rate=accept_prob,
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_accepted=accepted,
            rejected_non_finite=~valid,
            num_flips=num_flips,
            step_size=alpha,
            num_grad_evals=jnp.ones((batch,), jnp.float32),
        )

    return kernel


class DMALASampler(BoundSampler):
    """DMALA (or DULA) bound to a :class:`DMALAConfig` with ``warmup_steps = 0``:
    a fixed kernel, ``tunables = {"step_size"}``."""

    def __init__(self, config: DMALAConfig, ctx: Any = None):
        super().__init__(
            config, init=init, kernel=build_kernel(config.adjusted), tunables={"step_size": config.step_size}
        )


class AdaptiveDMALASampler(StepSizeAdaptation, DMALASampler):
    """DMALA with ``warmup_steps > 0``: an :class:`~ebmkit.types.Adaptive`
    sampler whose adaptation state is a
    :class:`~ebmkit.sampling.adaptation.DualAveragingState` (``[B]`` per chain,
    scalars when shared)."""


def build(config: DMALAConfig, ctx: Any = None) -> DMALASampler:
    """DMALA/DULA bound to ``config``: adaptive when ``warmup_steps > 0``."""
    return (AdaptiveDMALASampler if config.warmup_steps > 0 else DMALASampler)(config, ctx)


spec = ComponentSpec(
    kind="sampler",
    name="dmala",
    config=DMALAConfig,
    build=build,
    summary="Discrete Langevin proposal on bits, Metropolis-adjusted (DMALA) or not (DULA), step adaptation",
    supports=("binary",),
)
