"""Gibbs-with-Gradients (GWG) on binary data (Grathwohl et al., 2021).

One Metropolis–Hastings transition on every chain (row) of the batch,
independently, on ``x ∈ {0, 1}^D`` (any event shape, flattened):

1. Estimate, from one gradient, the energy change of flipping each bit::

       ΔẼ_i(x) = (1 − 2 x_i) · ∂E/∂x_i(x)

   (first order: flipping bit ``i`` moves ``x_i`` by ``1 − 2 x_i``). In the
   paper's terms ``d̃(x)_i = −ΔẼ_i(x)`` is the estimated rise of
   ``log p = −E + const``.
2. Propose flipping one bit, drawn from the locally balanced proposal
   ``q(i | x) = softmax_i(−ΔẼ(x) / 2)``: bits whose flip lowers the energy
   are proposed more often.
3. Accept the flipped state ``x'`` with probability
   ``min(1, exp(E(x) − E(x')) · q(i | x') / q(i | x))``; the reverse
   proposal ``q(i | x')`` uses the gradient at ``x'``, which the next step
   needs anyway, so a transition costs one energy-and-gradient evaluation.

The correction makes the chain exact for ``p(x) ∝ exp(−E(x))`` on the
hypercube, however rough the first-order estimate: a bad estimate only costs
acceptance. The energy is evaluated on float inputs holding 0 and 1 (the
gradient is taken w.r.t. that relaxed input); positions keep their dtype and
stay in ``{0, 1}``.

A proposal whose energy or gradient is not finite is rejected (its chain
keeps its finite state); ``info.non_finite`` flags chains whose *state* is
non-finite. The sampler has no numeric tunable: the proposal is set by the
energy alone.

Use it on binary data (``supports = ("binary",)``): RBMs, Ising models,
binarised images. Where random-scan Gibbs spends an energy evaluation on
each site it visits, worth flipping or not, GWG spends its one evaluation per
step on a flip the gradient favours; ``dmala`` moves many bits per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    BoundSampler,
    check_binary_starts,
    per_chain_diagnostics,
    per_row_energy_and_grad,
)
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = ["GWGConfig", "GWGState", "GWGInfo", "GWGSampler", "init", "build_kernel", "flip_logits", "spec"]

#: What the next transition needs: position ``[B, *event]`` in {0, 1}, energy ``[B]``, ``dE/dx``.
GWGState = SamplerState


class GWGInfo(NamedTuple):
    """Per-chain diagnostics of one transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability (0 for a
            proposal with a non-finite energy or gradient).
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        is_accepted: whether the proposed flip was taken.
        num_flips: bits changed by the transition (0 or 1).
        num_grad_evals: energy-and-gradient evaluations spent (1 per chain).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    num_flips: Array
    num_grad_evals: Array


@config_class
class GWGConfig(SamplerConfig):
    """Gibbs-with-Gradients: one gradient-guided bit flip per step, MH-corrected.

    Attributes:
        num_steps: K, transitions per chain (per training update); each
            proposes one bit flip.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)


def init(position: Array, energy_fn: EnergyFn) -> GWGState:
    """The state at ``position`` (``[B, *event]`` in {0, 1}): one energy-and-gradient pass.

    Raises:
        ValueError: a concrete ``position`` holds values other than 0 and 1.
    """
    check_binary_starts(position, "gwg")
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return GWGState(position=position, energy=energy, grad=grad)


def flip_logits(position: Array, grad: Array) -> Array:
    """``−ΔẼ / 2``, the log-weights ``[B, D]`` of the locally balanced proposal.

    ``ΔẼ_i = (1 − 2 x_i) ∂E/∂x_i`` is the first-order energy change of
    flipping bit ``i`` of each (flattened) row.
    """
    batch = position.shape[0]
    x = position.reshape(batch, -1).astype(jnp.float32)
    g = grad.reshape(batch, -1).astype(jnp.float32)
    return -0.5 * (1.0 - 2.0 * x) * g


def build_kernel() -> Callable[..., tuple[GWGState, GWGInfo]]:
    """A batched Gibbs-with-Gradients kernel.

    Returns:
        ``kernel(rng_key, state, energy_fn) -> (state, info)``.
    """

    def kernel(rng_key: PRNGKey, state: GWGState, energy_fn: EnergyFn) -> tuple[GWGState, GWGInfo]:
        x, e, g = state.position, state.energy, state.grad
        batch = x.shape[0]
        site_key, accept_key = jax.random.split(rng_key)
        log_q_forward_all = jax.nn.log_softmax(flip_logits(x, g), axis=-1)
        site = jax.random.categorical(site_key, log_q_forward_all, axis=-1)  # [B]
        onehot = jax.nn.one_hot(site, log_q_forward_all.shape[-1], dtype=x.dtype).reshape(x.shape)
        proposal = x + onehot * (1 - 2 * x)  # flips bit ``site``; stays in {0, 1} exactly
        e_new, g_new = per_row_energy_and_grad(energy_fn, proposal)
        log_q_reverse_all = jax.nn.log_softmax(flip_logits(proposal, g_new), axis=-1)
        pick = site[:, None]
        log_q_forward = jnp.take_along_axis(log_q_forward_all, pick, axis=-1)[:, 0]
        log_q_reverse = jnp.take_along_axis(log_q_reverse_all, pick, axis=-1)[:, 0]
        log_alpha = (e - e_new).astype(jnp.float32) + log_q_reverse - log_q_forward
        # A non-finite proposal energy or gradient makes log_alpha NaN or
        # infinite (through the reverse proposal): one test rejects them all.
        valid = jnp.isfinite(log_alpha)
        accept_prob = jnp.where(valid, jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0)
        accepted = jax.random.uniform(accept_key, (batch,)) < accept_prob
        mask = accepted.reshape((batch,) + (1,) * (x.ndim - 1))
        x = jnp.where(mask, proposal, x)
        e = jnp.where(accepted, e_new, e)
        g = jnp.where(mask, g_new, g)
        grad_norm, non_finite = per_chain_diagnostics(x, e, g)
        ones = jnp.ones((batch,), jnp.float32)
        return GWGState(position=x, energy=e, grad=g), GWGInfo(
            acceptance_rate=accept_prob,
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_accepted=accepted,
            num_flips=accepted.astype(jnp.float32),
            num_grad_evals=ones,
        )

    return kernel


class GWGSampler(BoundSampler):
    """Gibbs-with-Gradients bound to a :class:`GWGConfig` (no tunables)."""

    def __init__(self, config: GWGConfig, ctx: Any = None):
        super().__init__(config, init=init, kernel=build_kernel(), tunables={})


spec = ComponentSpec(
    kind="sampler",
    name="gwg",
    config=GWGConfig,
    build=GWGSampler,
    summary="Gibbs-with-Gradients: one gradient-guided bit flip per step with an MH correction (binary data)",
    supports=("binary",),
)
