"""Replica exchange (parallel tempering) with Metropolis-adjusted Langevin moves.

Every chain carries a ladder of ``L`` replicas at temperatures
``1 = T_0 < T_1 < ... < T_{L-1} = max_temperature`` (geometric), each
targeting ``exp(−E(x) / T_l)``. One step:

1. a Metropolis-adjusted Langevin (MALA) move on every replica, with step size
   ``step_size · T_l`` (the tempered target is ``T_l`` times flatter, so the
   same acceptance needs a ``T_l`` times larger step);
2. swap proposals between neighbouring temperatures, the even pairs
   ``(0, 1), (2, 3), ...`` on even steps and the odd pairs on odd ones,
   accepted with probability ``min(1, exp((1/T_l − 1/T_{l+1}) (E_l − E_{l+1})))``.

Both moves leave the product of the tempered targets invariant, so the
``T = 1`` replica (``state.position``, what :func:`ebmkit.sampling.run_chain`
returns) samples ``p(x) ∝ exp(−E(x))`` exactly in the limit: hot replicas
cross the barriers between modes, and swaps carry what they find down the
ladder, so the **weights** of separated modes come out right, which no local
sampler started in one basin achieves in a feasible number of steps. It costs
``L`` energy-and-gradient evaluations per step per chain.

The info holds the ``T = 1`` replica's MALA acceptance and the mean swap
acceptance over the pairs proposed in the step, per chain.

A fresh ladder starts every replica at the chain's start, so the hot replicas
begin colder than their targets; until they have spread to their
temperatures, swaps favour bringing low-energy states down, and the ``T = 1``
replica is slightly too concentrated (on a unit Gaussian with the default
step, its variance is 0.89 after 20 steps and exact after a few hundred). The
sampler is :class:`~ebmkit.types.Equilibrating`: ``equilibration_steps``
(``5 / step_size``, the MALA relaxation time of a unit-scale target five
times over) says how long that takes. Long sampling runs (1,000 steps) are
past it; short training chains (K = 10) carry that bias, as short-run
Langevin carries its own.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.config import SamplerConfig, config_class
from ebmkit.config.validators import as_tuple, box, optional, positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler, per_chain_diagnostics, per_row_energy_and_grad
from ebmkit.types import Array, EnergyFn, PRNGKey

__all__ = [
    "ReplicaExchangeConfig",
    "ReplicaExchangeState",
    "ReplicaExchangeInfo",
    "ReplicaExchangeSampler",
    "ladder",
    "spec",
]


def _at_least_two(_inst: Any, attribute: Any, value: int) -> None:
    if value < 2:
        raise ValueError(f"{attribute.name}: needs at least 2 replicas, got {value}")


def _above_one(_inst: Any, attribute: Any, value: float) -> None:
    if not value > 1.0:
        raise ValueError(f"{attribute.name}: must be > 1 (the coldest replica runs at T = 1), got {value}")


@config_class
class ReplicaExchangeConfig(SamplerConfig):
    """Replica exchange with MALA moves.

    Attributes:
        num_steps: K, steps per chain.
        step_size: the MALA step at ``T = 1`` (drift ``step_size · ∇E``, noise
            ``√(2 step_size)``); replica ``l`` uses ``step_size · T_l``.
        num_replicas: ``L``, temperatures per chain (≥ 2).
        max_temperature: the hottest replica's temperature (> 1).
        clamp: ``(low, high)``: chain starts are clamped into this box and
            moves that leave it are rejected (so the chains sample the target
            restricted to the box, exactly), or ``None``.
    """

    num_steps: int = attrs.field(default=100, validator=positive_int)
    step_size: float = attrs.field(default=0.005, validator=positive)
    num_replicas: int = attrs.field(default=8, validator=[positive_int, _at_least_two])
    max_temperature: float = attrs.field(default=30.0, validator=[positive, _above_one])
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


class ReplicaExchangeState(NamedTuple):
    """The chains' state: the ``T = 1`` replica in ``position``/``energy``/``grad``
    (what every sampler state has) and the whole ladder.

    Attributes:
        position, energy, grad: the ``T = 1`` replica ``[B, *event]``, ``[B]``.
        ladder_position: ``[L, B, *event]``, coldest first.
        ladder_energy: ``[L, B]`` (untempered).
        ladder_grad: ``[L, B, *event]`` (untempered).
        parity: which neighbour pairs the next swap proposes (0: even, 1: odd).
    """

    position: Array
    energy: Array
    grad: Array
    ladder_position: Array
    ladder_energy: Array
    ladder_grad: Array
    parity: Array


class ReplicaExchangeInfo(NamedTuple):
    """Per-chain diagnostics of one step (``[B]`` each)."""

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    swap_rate: Array


def ladder(num_replicas: int, max_temperature: float) -> np.ndarray:
    """The geometric temperature ladder ``[L]`` from 1 to ``max_temperature``."""
    return np.geomspace(1.0, float(max_temperature), int(num_replicas)).astype(np.float32)


def _flat_energy_and_grad(energy_fn: EnergyFn, x: Array) -> tuple[Array, Array]:
    """Energy and gradient of ``x[L, B, *event]``, one pass over ``L·B`` rows."""
    lead = x.shape[:2]
    energy, grad = per_row_energy_and_grad(energy_fn, x.reshape((-1, *x.shape[2:])))
    return energy.reshape(lead), grad.reshape(x.shape)


def build_init(num_replicas: int) -> Any:
    def init(position: Array, energy_fn: EnergyFn) -> ReplicaExchangeState:
        energy, grad = per_row_energy_and_grad(energy_fn, position)
        tile = (num_replicas,) + (1,) * position.ndim
        return ReplicaExchangeState(
            position=position,
            energy=energy,
            grad=grad,
            ladder_position=jnp.tile(position[None], tile),
            ladder_energy=jnp.tile(energy[None], (num_replicas, 1)),
            ladder_grad=jnp.tile(grad[None], tile),
            parity=jnp.zeros((), jnp.int32),
        )

    return init


def build_kernel(temperatures: np.ndarray, clamp: tuple[float, float] | None = None) -> Any:
    """The kernel for a fixed ladder (a static array: one compiled program).

    With ``clamp``, a move that would leave the box is rejected: the chains
    then sample the target restricted to the box, exactly.
    """
    num = len(temperatures)

    def kernel(
        rng_key: PRNGKey, state: ReplicaExchangeState, energy_fn: EnergyFn, step_size: float | Array
    ) -> tuple[ReplicaExchangeState, ReplicaExchangeInfo]:
        x, e, g = state.ladder_position, state.ladder_energy, state.ladder_grad
        event_ndim = x.ndim - 2
        temps = jnp.asarray(temperatures, x.dtype)
        t_row = temps[:, None]  # [L, 1]
        t_full = temps.reshape((num, 1) + (1,) * event_ndim)
        eps = jnp.asarray(step_size, x.dtype) * t_full
        noise_key, accept_key, swap_key = jax.random.split(rng_key, 3)

        # 1. MALA on every replica, target E / T.
        proposal = x - (eps / t_full) * g + jnp.sqrt(2.0 * eps) * jax.random.normal(noise_key, x.shape, x.dtype)
        e_new, g_new = _flat_energy_and_grad(energy_fn, proposal)
        axes = tuple(range(2, x.ndim))

        def log_q(to: Array, frm: Array, grad_from: Array) -> Array:
            # log q(to | from) up to a constant shared by both directions.
            d = to - frm + (eps / t_full) * grad_from
            return -jnp.sum(d * d, axis=axes) / (4.0 * eps.reshape(num, 1))

        log_alpha = -(e_new - e) / t_row + log_q(x, proposal, g_new) - log_q(proposal, x, g)
        log_alpha = jnp.where(jnp.isfinite(log_alpha), log_alpha, -jnp.inf)
        if clamp is not None:
            inside = jnp.all((proposal >= clamp[0]) & (proposal <= clamp[1]), axis=axes)
            log_alpha = jnp.where(inside, log_alpha, -jnp.inf)
        accept = jnp.log(jax.random.uniform(accept_key, log_alpha.shape, x.dtype)) < log_alpha
        mask = accept.reshape(accept.shape + (1,) * event_ndim)
        x = jnp.where(mask, proposal, x)
        e = jnp.where(accept, e_new, e)
        g = jnp.where(mask, g_new, g)
        move_rate = accept[0].astype(jnp.float32)

        # 2. Swaps between neighbours (l, l+1) with l of this step's parity.
        lower = jnp.arange(num - 1)
        proposed = (lower % 2) == state.parity  # [L-1]
        beta = 1.0 / temps
        log_swap = (beta[:-1, None] - beta[1:, None]) * (e[:-1] - e[1:])  # [L-1, B]
        log_swap = jnp.where(jnp.isfinite(log_swap), log_swap, -jnp.inf)
        swap = (jnp.log(jax.random.uniform(swap_key, log_swap.shape, x.dtype)) < log_swap) & proposed[:, None]
        # Replica l takes l+1's state where pair (l, l+1) swaps, and l+1 takes l's.
        up = jnp.concatenate([swap, jnp.zeros_like(swap[:1])], axis=0)  # l swaps with l+1
        down = jnp.concatenate([jnp.zeros_like(swap[:1]), swap], axis=0)  # l swaps with l-1
        source = jnp.arange(num)[:, None] + up.astype(jnp.int32) - down.astype(jnp.int32)  # [L, B]
        x = jnp.take_along_axis(x, source.reshape(source.shape + (1,) * event_ndim), axis=0)
        e = jnp.take_along_axis(e, source, axis=0)
        g = jnp.take_along_axis(g, source.reshape(source.shape + (1,) * event_ndim), axis=0)
        pairs = jnp.maximum(jnp.sum(proposed), 1)
        swap_rate = jnp.sum(swap, axis=0).astype(jnp.float32) / pairs.astype(jnp.float32)

        grad_norm, non_finite = per_chain_diagnostics(x[0], e[0], g[0])
        non_finite = non_finite | jnp.any(~jnp.isfinite(e), axis=0)
        new_state = ReplicaExchangeState(
            position=x[0], energy=e[0], grad=g[0], ladder_position=x, ladder_energy=e, ladder_grad=g,
            parity=1 - state.parity,
        )
        return new_state, ReplicaExchangeInfo(
            acceptance_rate=move_rate, grad_norm=grad_norm, non_finite=non_finite, swap_rate=swap_rate
        )

    return kernel


class ReplicaExchangeSampler(BoundSampler):
    """Replica exchange bound to a :class:`ReplicaExchangeConfig`.

    Attributes:
        temperatures: the ladder ``[L]``, coldest first.
        tunables: ``{"step_size"}``.
        equilibration_steps: steps a fresh ladder needs on a unit-scale target
            (:class:`~ebmkit.types.Equilibrating`).
    """

    def __init__(self, config: ReplicaExchangeConfig, ctx: Any = None):
        self.temperatures = ladder(config.num_replicas, config.max_temperature)
        #: Steps for a fresh ladder to reach its temperatures on a unit-scale target.
        self.equilibration_steps = int(math.ceil(5.0 / config.step_size))
        super().__init__(
            config,
            init=build_init(config.num_replicas),
            kernel=build_kernel(self.temperatures, config.clamp),
            tunables={"step_size": config.step_size},
        )


spec = ComponentSpec(
    kind="sampler",
    name="replica_exchange",
    config=ReplicaExchangeConfig,
    build=ReplicaExchangeSampler,
    summary="Parallel tempering with MALA moves: separated modes get their weights right",
)
