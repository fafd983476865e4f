"""Microcanonical Langevin Monte Carlo (MCLMC) for ebmkit, backed by BlackJAX.

MCLMC moves every chain with isokinetic dynamics (a unit-norm velocity ``u``)
integrated by BlackJAX's McLachlan scheme, with a partial refresh of ``u``
after each step that decorrelates it over a length ``L``. It has no
accept/reject step: it is *unadjusted*, so its stationary law differs from
``p(x) ∝ exp(-E(x))`` by a discretisation bias that ``step_size`` controls
(BlackJAX tunes it so that the energy error per dimension has variance
``5e-4``). It needs at least 2 coordinates per chain.

The transition is :func:`blackjax.mcmc.mclmc.build_kernel`, vmapped over chains
(one key per chain) with ``logdensity = -E``; ``L`` and ``step_size`` are
scalars or ``[B]``. BlackJAX reverts a step that produced a NaN (and draws a
fresh velocity); ``info.acceptance_rate`` is 0 for such a step and 1 otherwise.

ebmkit's ``init(position, energy_fn)`` takes no key, so a fresh state has a
zero velocity and each chain draws its velocity (uniform on the sphere, the
velocity's stationary law) at its first kernel step.

Tuning is not an ebmkit adaptation phase: BlackJAX's
:func:`blackjax.mclmc_find_L_and_step_size` runs its own loops with their own
stopping rules, so it is offered as a host-side helper, :func:`tune`, that
returns per-chain ``L`` and ``step_size`` to pass as tunables. Without it,
``L`` and ``step_size`` come from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import attrs
import blackjax
import jax
import jax.numpy as jnp
from blackjax.mcmc import integrators
from blackjax.mcmc import mclmc as blackjax_mclmc
from blackjax.util import generate_unit_vector

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler, per_chain_diagnostics, per_row_energy_and_grad
from ebmkit.types import Array, BuildContext, EnergyFn, PRNGKey
from ebmkit_blackjax._common import event_size, logdensity_of, per_chain_scalar

__all__ = [
    "MCLMCConfig",
    "MCLMCState",
    "MCLMCInfo",
    "MCLMCSampler",
    "init",
    "build_kernel",
    "tune",
    "spec",
]


class MCLMCState(NamedTuple):
    """What the next transition needs.

    Attributes:
        position: ``[B, *event]``.
        energy: ``[B]``.
        grad: ``dE/dx``, ``[B, *event]``.
        momentum: the unit velocity ``[B, *event]``; zero until a chain's first step.
    """

    position: Array
    energy: Array
    grad: Array
    momentum: Array


class MCLMCInfo(NamedTuple):
    """Per-chain diagnostics of one MCLMC transition (all ``[B]``).

    Attributes:
        acceptance_rate: 1 for a step taken, 0 for one BlackJAX reverted
            because it produced a NaN (MCLMC has no Metropolis step).
        grad_norm: L2 norm of ``dE/dx`` at the chain's new position.
        non_finite: the new state has a non-finite position, energy or gradient.
        energy_change: the step's energy error (what step-size tuning reads).
        num_grad_evals: gradient evaluations of the step (2: McLachlan's
            integrator has two force stages).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    energy_change: Array
    num_grad_evals: Array


@config_class
class MCLMCConfig(SamplerConfig):
    """Microcanonical Langevin Monte Carlo (BlackJAX), unadjusted.

    Attributes:
        num_steps: K, MCLMC steps per chain (per training update).
        L: the momentum decoherence length (about the target's scale times
            ``sqrt(D)``).
        step_size: the integrator's step (the discretisation bias grows with it).
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    L: float = attrs.field(default=1.0, validator=positive)
    step_size: float = attrs.field(default=0.1, validator=positive)


def init(position: Array, energy_fn: EnergyFn) -> MCLMCState:
    """The state at ``position`` (``[B, *event]``), with zero velocity."""
    if event_size(position) < 2:
        raise ValueError(
            f"MCLMC needs at least 2 coordinates per chain, got event shape {position.shape[1:]}"
        )
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return MCLMCState(position=position, energy=energy, grad=grad, momentum=jnp.zeros_like(position))


def build_kernel() -> Callable[..., tuple[MCLMCState, MCLMCInfo]]:
    """A batched MCLMC kernel (McLachlan integrator, unit mass).

    Returns:
        ``kernel(rng_key, state, energy_fn, L, step_size) -> (state, info)``.
    """
    one_chain = blackjax_mclmc.build_kernel(integrator=integrators.isokinetic_mclachlan)

    def kernel(
        rng_key: PRNGKey, state: MCLMCState, energy_fn: EnergyFn, L: float | Array, step_size: float | Array
    ) -> tuple[MCLMCState, MCLMCInfo]:
        logdensity = logdensity_of(energy_fn)

        def step(key: PRNGKey, x: Array, energy: Array, grad: Array, u: Array, length: Array, h: Array):
            key_velocity, key_step = jax.random.split(key)
            u = jnp.where(jnp.all(u == 0), generate_unit_vector(key_velocity, x), u)
            chain = integrators.IntegratorState(x, u, -energy, -grad)
            new, info = one_chain(key_step, chain, logdensity, 1.0, length, h)
            return new.position, -new.logdensity, -new.logdensity_grad, new.momentum, info

        n = state.position.shape[0]
        keys = jax.random.split(rng_key, n)
        x, energy, grad, u, info = jax.vmap(step)(
            keys,
            state.position,
            state.energy,
            state.grad,
            state.momentum,
            per_chain_scalar(L, n),
            per_chain_scalar(step_size, n),
        )
        x = x.astype(state.position.dtype)
        grad_norm, non_finite = per_chain_diagnostics(x, energy, grad)
        return MCLMCState(position=x, energy=energy, grad=grad, momentum=u.astype(x.dtype)), MCLMCInfo(
            acceptance_rate=info.nonans.astype(jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
            energy_change=info.energy_change,
            num_grad_evals=jnp.full((n,), 2.0, jnp.float32),
        )

    return kernel


def tune(
    rng_key: PRNGKey, energy_fn: EnergyFn, position: Array, num_steps: int
) -> tuple[Array, dict[str, Array]]:
    """Tune ``L`` and ``step_size`` for every chain with BlackJAX's
    :func:`blackjax.mclmc_find_L_and_step_size` (unit mass matrix).

    A host-side helper to call once before sampling (it compiles its own
    program; it is not part of ebmkit's chain loop). BlackJAX spends about
    ``0.3 * num_steps`` steps per chain on tuning.

    Args:
        rng_key: a ``jax.random.key``; split per chain.
        energy_fn: ``x[B, *event] -> E[B]``.
        position: ``[B, *event]`` chain starts.
        num_steps: the number of steps the chains will then run (BlackJAX
            sizes its tuning phases as fractions of it).

    Returns:
        The chains' positions after tuning, and ``{"L": [B], "step_size": [B]}``
        to pass as tunables (``run_chain(..., **tunables)``).
    """
    kernel = blackjax_mclmc.build_kernel(integrator=integrators.isokinetic_mclachlan)
    logdensity = logdensity_of(energy_fn)

    def one_chain(key: PRNGKey, x: Array):
        key_init, key_tune = jax.random.split(key)
        state = blackjax_mclmc.init(x, logdensity, key_init)
        state, params, _ = blackjax.mclmc_find_L_and_step_size(
            kernel, num_steps, state, key_tune, logdensity_fn=logdensity, diagonal_preconditioning=False
        )
        return state.position, params.L, params.step_size

    keys = jax.random.split(rng_key, position.shape[0])
    x, length, step_size = jax.jit(jax.vmap(one_chain))(keys, position)
    return x.astype(position.dtype), {"L": length, "step_size": step_size}


class MCLMCSampler(BoundSampler):
    """MCLMC bound to an :class:`MCLMCConfig` (what ``spec.create`` returns):
    ``tunables = {"L", "step_size"}``, K = ``num_steps``."""

    def __init__(self, config: MCLMCConfig, ctx: BuildContext | None = None):
        super().__init__(
            config,
            init=init,
            kernel=build_kernel(),
            tunables={"L": config.L, "step_size": config.step_size},
        )


spec = ComponentSpec(
    kind="sampler",
    name="blackjax_mclmc",
    config=MCLMCConfig,
    build=MCLMCSampler,
    summary="Microcanonical Langevin Monte Carlo (BlackJAX), unadjusted; tune() sets L and step size",
)
