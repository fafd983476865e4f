"""What every wrapper shares: BlackJAX's one-chain view of ebmkit's batched energy.

BlackJAX kernels work on one chain's log-density, ebmkit's samplers on a batch
of chains and an energy ``E[B]``. Each wrapper vmaps the one-chain kernel over
the chains with one key per chain (split from the step's key) and
``logdensity = -E`` on a batch of one.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from blackjax.mcmc import hmc as blackjax_hmc

from ebmkit.sampling import per_chain_diagnostics, per_row_energy_and_grad
from ebmkit.types import Array, EnergyFn, PRNGKey, SamplerState

__all__ = [
    "logdensity_of",
    "init",
    "per_chain_scalar",
    "per_chain_diagonal",
    "event_size",
    "hamiltonian_transition",
]


def logdensity_of(energy_fn: EnergyFn):
    """One chain's log-density ``x[*event] -> -E(x)``.

    Rows are independent, so a batch of one is this chain's energy.
    """

    def logdensity(x: Array) -> Array:
        return -energy_fn(x[None])[0]

    return logdensity


def init(position: Array, energy_fn: EnergyFn) -> SamplerState:
    """The state at ``position`` (``[B, *event]``): one batched energy-and-gradient pass."""
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return SamplerState(position=position, energy=energy, grad=grad)


def event_size(position: Array) -> int:
    """``D``: the number of coordinates of one chain (BlackJAX ravels the event)."""
    return math.prod(position.shape[1:])


def per_chain_scalar(value: float | Array, num_chains: int) -> Array:
    """A scalar tunable or one value per chain, as ``[B]`` float32."""
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (num_chains,))


def per_chain_diagonal(value: float | Array, num_chains: int, dim: int) -> Array:
    """A diagonal inverse mass matrix per chain, as ``[B, D]`` float32.

    ``value`` is a scalar (``value * I``), one diagonal for every chain
    (``D`` numbers: ``[D]`` or ``[*event]``) or one per chain (``B * D``
    numbers: ``[B, D]`` or ``[B, *event]``).
    """
    v = jnp.asarray(value, jnp.float32)
    if v.size == 1:
        v = v.reshape(())
    elif v.size == dim:
        v = v.reshape(dim)
    elif v.size == num_chains * dim:
        v = v.reshape(num_chains, dim)
    else:
        raise ValueError(
            f"inverse_mass_matrix has shape {v.shape}: expected a scalar, one diagonal of "
            f"{dim} numbers for every chain, or one per chain ({num_chains} x {dim})"
        )
    return jnp.broadcast_to(v, (num_chains, dim))



def hamiltonian_transition(
    one_chain: Any,
    structural: int,
    rng_key: PRNGKey,
    state: SamplerState,
    energy_fn: EnergyFn,
    step_size: float | Array,
    inverse_mass_matrix: float | Array,
) -> tuple[SamplerState, Any, Array, Array]:
    """One transition of a BlackJAX HMC-family kernel (HMC, NUTS) on every chain.

    ``one_chain(key, HMCState, logdensity, step_size, inverse_mass_matrix,
    structural)`` is BlackJAX's one-chain kernel; ``structural`` its last
    argument (HMC's leapfrog steps, NUTS's maximum doublings).

    Returns:
        The new batched state, BlackJAX's per-chain info (leading ``[B]``), and
        ``grad_norm[B]``, ``non_finite[B]`` of the new state.
    """
    logdensity = logdensity_of(energy_fn)

    def step(key: PRNGKey, x: Array, energy: Array, grad: Array, h: Array, imm: Array):
        chain = blackjax_hmc.HMCState(position=x, logdensity=-energy, logdensity_grad=-grad)
        new, info = one_chain(key, chain, logdensity, h, imm, structural)
        return new.position, -new.logdensity, -new.logdensity_grad, info

    n = state.position.shape[0]
    keys = jax.random.split(rng_key, n)
    x, energy, grad, info = jax.vmap(step)(
        keys,
        state.position,
        state.energy,
        state.grad,
        per_chain_scalar(step_size, n),
        per_chain_diagonal(inverse_mass_matrix, n, event_size(state.position)),
    )
    x = x.astype(state.position.dtype)
    grad_norm, non_finite = per_chain_diagnostics(x, energy, grad)
    return SamplerState(position=x, energy=energy, grad=grad), info, grad_norm, non_finite
