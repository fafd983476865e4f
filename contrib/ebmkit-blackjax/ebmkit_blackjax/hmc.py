"""Hamiltonian Monte Carlo for ebmkit, backed by BlackJAX.

One transition on every chain (row) of the batch, independently: draw a
momentum ``p ~ N(0, M)``, integrate ``num_integration_steps`` velocity-Verlet
(leapfrog) steps of size ``step_size`` on ``H(x, p) = E(x) + p^T M^-1 p / 2``,
and accept the end point with probability ``min(1, exp(-ΔH))`` per chain, else
keep ``x``. Exact for ``p(x) ∝ exp(-E(x))``.

The transition is :func:`blackjax.mcmc.hmc.build_kernel`, vmapped over chains
(one key per chain, split from the step's key) with ``logdensity = -E``. The
tunables may differ per chain: ``step_size`` is a scalar or ``[B]``,
``inverse_mass_matrix`` the diagonal of ``M^-1``: a scalar, ``[D]`` (every
chain) or ``[B, D]`` (one per chain), where ``D`` is the number of coordinates
of one chain.

A proposal with a non-finite energy is rejected (BlackJAX maps a NaN energy
difference to acceptance 0), so its chain keeps a finite state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import attrs
import jax.numpy as jnp
from blackjax.mcmc import hmc as blackjax_hmc

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler
from ebmkit.types import Array, BuildContext, EnergyFn, PRNGKey, SamplerState
from ebmkit_blackjax._common import (
    hamiltonian_transition,
    init,
)

__all__ = ["HMCConfig", "HMCState", "HMCInfo", "HMCSampler", "init", "build_kernel", "spec"]

#: What the next transition needs: position ``[B, *event]``, energy ``[B]``, ``dE/dx``.
HMCState = SamplerState


class HMCInfo(NamedTuple):
    """Per-chain diagnostics of one HMC transition (all ``[B]``).

    Attributes:
        acceptance_rate: the Metropolis acceptance probability ``min(1, exp(-ΔH))``.
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        is_accepted: whether the proposal was taken.
        is_divergent: ``|ΔH|`` exceeded BlackJAX's divergence threshold (1000):
            the step size is too large for the target's curvature there.
        num_grad_evals: gradient evaluations of the transition
            (``num_integration_steps``).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    is_accepted: Array
    is_divergent: Array
    num_grad_evals: Array


@config_class
class HMCConfig(SamplerConfig):
    """Hamiltonian Monte Carlo (BlackJAX).

    Attributes:
        num_steps: K, HMC transitions per chain (per training update).
        step_size: leapfrog step size.
        num_integration_steps: leapfrog steps per transition (structural).

    The inverse mass matrix is a tunable (default 1, the identity), not a
    config field: pass ``inverse_mass_matrix=`` to the kernel or to
    ``run_chain`` (a scalar, ``[D]`` or ``[B, D]``).
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.1, validator=positive)
    num_integration_steps: int = attrs.field(default=10, validator=positive_int)


def build_kernel(num_integration_steps: int = 10) -> Callable[..., tuple[HMCState, HMCInfo]]:
    """A batched HMC kernel with the number of leapfrog steps fixed.

    Returns:
        ``kernel(rng_key, state, energy_fn, step_size, inverse_mass_matrix) -> (state, info)``.
    """
    one_chain = blackjax_hmc.build_kernel()

    def kernel(
        rng_key: PRNGKey,
        state: HMCState,
        energy_fn: EnergyFn,
        step_size: float | Array,
        inverse_mass_matrix: float | Array = 1.0,
    ) -> tuple[HMCState, HMCInfo]:
        new_state, info, grad_norm, non_finite = hamiltonian_transition(
            one_chain, num_integration_steps, rng_key, state, energy_fn, step_size, inverse_mass_matrix
        )
        x, energy, grad = new_state.position, new_state.energy, new_state.grad
        return HMCState(position=x, energy=energy, grad=grad), HMCInfo(
            acceptance_rate=info.acceptance_rate.astype(jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
            is_accepted=info.is_accepted,
            is_divergent=info.is_divergent,
            num_grad_evals=jnp.full(energy.shape, num_integration_steps, jnp.float32),
        )

    return kernel


class HMCSampler(BoundSampler):
    """HMC bound to an :class:`HMCConfig` (what ``spec.create`` returns):
    ``tunables = {"step_size", "inverse_mass_matrix"}``, K = ``num_steps``."""

    def __init__(self, config: HMCConfig, ctx: BuildContext | None = None):
        super().__init__(
            config,
            init=init,
            kernel=build_kernel(config.num_integration_steps),
            tunables={"step_size": config.step_size, "inverse_mass_matrix": 1.0},
        )


spec = ComponentSpec(
    kind="sampler",
    name="blackjax_hmc",
    config=HMCConfig,
    build=HMCSampler,
    summary="Hamiltonian Monte Carlo (BlackJAX), diagonal mass matrix, accept/reject per chain",
)
