"""Hamiltonian Monte Carlo with a leapfrog integrator and unit mass.

One transition on every chain (row) of the batch, independently:

1. draw a momentum ``p ~ N(0, I)`` (Philox-4x32 bits for draws of 1,024 numbers
   or more, as Langevin's ``prng = "auto"``);
2. integrate ``num_integration_steps`` leapfrog steps of size ``step_size`` on
   ``H(x, p) = E(x) + |p|^2 / 2``;
3. accept the end point with probability ``min(1, exp(H(x, p) - H(x', p')))``,
   per chain, else keep ``x``.

Exact for ``p(x) ∝ exp(-E(x))``: no discretisation bias. A proposal whose
position, energy or gradient is non-finite is rejected (its chain keeps a
finite state) and flagged in ``info.non_finite``, never silently repaired.

With ``clamp``, the chain start is projected into the box at ``init`` and
proposals that leave the box are rejected (not flagged), which samples the
target restricted to the box exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import as_tuple, box, optional, positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import (
    BoundSampler,
    noise_key,
    per_chain,
    per_chain_diagnostics,
    per_row_energy_and_grad,
)
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = ["HMCConfig", "HMCState", "HMCInfo", "init", "build_kernel", "spec"]

#: What the next transition needs: position, energy ``[B]`` and ``dE/dx``.
HMCState = SamplerState


class HMCInfo(NamedTuple):
    """Per-chain diagnostics of one HMC transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability
            ``min(1, exp(-ΔH))``; 0 for a non-finite proposal.
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the proposal or the new state has a non-finite position,
            energy or gradient.
        is_accepted: whether the proposal was taken.
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array


@config_class
class HMCConfig(SamplerConfig):
    """Hamiltonian Monte Carlo.

    Attributes:
        num_steps: K, HMC transitions per chain (per training update).
        step_size: leapfrog step size.
        num_integration_steps: leapfrog steps per transition (structural).
        clamp: ``(low, high)``: keep every sample in this box (start projected,
            proposals outside rejected); ``None`` (default) does not.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.05, validator=positive)
    num_integration_steps: int = attrs.field(default=10, validator=positive_int)
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


def init(position: Array, energy_fn: EnergyFn) -> HMCState:
    """The state at ``position`` (``[B, *event]``): one energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return HMCState(position=position, energy=energy, grad=grad)


def build_kernel(
    num_integration_steps: int = 10, clamp: tuple[float, float] | None = None
) -> Callable[..., tuple[HMCState, HMCInfo]]:
    """An HMC kernel with the structural options fixed.

    Args:
        num_integration_steps: leapfrog steps per transition.
        clamp: ``(low, high)``: reject proposals outside this box, or ``None``.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size) -> (state, info)``.
    """

    def leapfrog(energy_fn: EnergyFn, step_size: Any, carry: tuple) -> tuple:
        x, p, _, grad = carry
        half = 0.5 * step_size
        p = p - half * grad
        x = (x + step_size * p).astype(x.dtype)
        energy, grad = per_row_energy_and_grad(energy_fn, x)
        p = p - half * grad
        return x, p, energy, grad

    def kernel(
        rng_key: PRNGKey, state: HMCState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[HMCState, HMCInfo]:
        key_momentum, key_accept = jax.random.split(rng_key)
        x0 = state.position
        axes = tuple(range(1, x0.ndim))
        # The momentum comes from the same fast, exact generator as Langevin's
        # noise (Philox-4x32 for large draws; see ``ebmkit.sampling.noise``).
        p0 = jax.random.normal(noise_key(key_momentum, "auto", x0.size), x0.shape, x0.dtype)
        x1, p1, e1, g1 = jax.lax.fori_loop(
            0,
            num_integration_steps,
            lambda _, c: leapfrog(energy_fn, step_size, c),
            (x0, p0, state.energy, state.grad),
        )
        h0 = state.energy + 0.5 * jnp.sum(jnp.square(p0), axis=axes)
        h1 = e1 + 0.5 * jnp.sum(jnp.square(p1), axis=axes)
        _, proposal_bad = per_chain_diagnostics(x1, e1, g1)
        log_ratio = h0 - h1
        valid = ~proposal_bad & ~jnp.isnan(log_ratio)
        if clamp is not None:
            valid &= jnp.all((x1 >= clamp[0]) & (x1 <= clamp[1]), axis=axes)
        # min(1, exp(log_ratio)) without overflow; an invalid proposal has probability 0.
        accept_prob = jnp.where(valid, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0).astype(
            jnp.float32
        )
        u = jax.random.uniform(key_accept, accept_prob.shape)
        accepted = u < accept_prob

        position = jnp.where(per_chain(accepted, x0), x1, x0)
        energy = jnp.where(accepted, e1, state.energy)
        grad = jnp.where(per_chain(accepted, x0), g1, state.grad)
        grad_norm, state_bad = per_chain_diagnostics(position, energy, grad)
        info = HMCInfo(
            acceptance_rate=accept_prob,
            grad_norm=grad_norm,
            non_finite=proposal_bad | state_bad,
            is_accepted=accepted,
        )
        return HMCState(position=position, energy=energy, grad=grad), info

    return kernel


def build(config: HMCConfig, ctx: Any = None) -> BoundSampler:
    """HMC bound to ``config``: ``tunables = {"step_size"}``, K = ``num_steps``."""
    return BoundSampler(
        config,
        init=init,
        kernel=build_kernel(config.num_integration_steps, clamp=config.clamp),
        tunables={"step_size": config.step_size},
    )


spec = ComponentSpec(
    kind="sampler",
    name="hmc",
    config=HMCConfig,
    build=build,
    summary="Hamiltonian Monte Carlo: leapfrog, unit mass, per-chain Metropolis accept",
)
