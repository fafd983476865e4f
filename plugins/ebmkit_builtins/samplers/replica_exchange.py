"""Replica exchange (parallel tempering) over any registered sampler.

Every chain carries a ladder of ``L`` replicas at temperatures
``1 = T_0 < T_1 < ... < T_{L-1}`` (geometric up to ``max_temperature``, or
the ``temperatures`` given), each targeting ``exp(−E(x) / T_l)``. One step:

1. a move of the **base kernel** (``base``: ``"mala"`` by default, or
   ``"langevin"``, ``"hmc"``, any registered sampler) on every replica, on the
   tempered energy ``E / T_l`` with step ``step_size · T_l^a`` (the tempered
   target is ``T_l`` times wider, so the same acceptance needs a larger step:
   ``a = 1`` for Langevin-type kernels, ``1/2`` for HMC, the default of
   ``step_scaling``);
2. swap proposals between neighbouring temperatures with the non-reversible
   deterministic even/odd schedule: the pairs ``(0, 1), (2, 3), ...`` on even
   steps, the odd pairs on odd ones, each accepted with probability
   ``min(1, exp((1/T_l − 1/T_{l+1}) (E_l − E_{l+1})))``.

Both moves leave the product of the tempered targets invariant when the base
kernel leaves its target invariant (so ``mala`` and ``hmc`` give exact
chains; ``langevin`` keeps its O(step) bias), and the ``T = 1`` replica
(``state.position``, what :func:`ebmkit.sampling.run_chain` returns) samples
``p(x) ∝ exp(−E(x))``: hot replicas cross the barriers between modes and swaps
carry what they find down the ladder, so the **weights** of separated modes
come out right, which no local sampler started in one basin achieves in a
feasible number of steps. It costs ``L`` base moves per step per chain.

``base_options`` sets the base sampler's other config fields (e.g.
``{num_integration_steps = 5}`` for hmc); ``clamp`` reaches the base kernel
when it has one (moves that leave the box are then rejected by ``mala`` and
``hmc``). The base kernel adapts only when ``base_options`` sets its
``warmup_steps``; then (``mala``, ``hmc``) it adapts every replica separately (each temperature gets its
own step), which makes replica exchange :class:`~ebmkit.types.Adaptive` too.

The info holds, per chain: the ``T = 1`` replica's base acceptance, the mean
swap acceptance over the pairs proposed in the step (``swap_rate``), the swap
acceptance probability of every neighbour pair (``pair_swap_rate[B, L − 1]``,
whether proposed or not), and the gradient evaluations of all replicas.

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

from ebmkit.config import SamplerConfig, config_class, structure
from ebmkit.config.validators import as_tuple, box, optional, positive, positive_int
from ebmkit.registry import ComponentSpec, get_spec
from ebmkit.sampling import BoundSampler, per_chain_diagnostics
from ebmkit.types import Adaptive, Array, EnergyFn, PRNGKey

__all__ = [
    "ReplicaExchangeConfig",
    "ReplicaExchangeState",
    "ReplicaExchangeInfo",
    "ReplicaExchangeSampler",
    "AdaptiveReplicaExchangeSampler",
    "ladder",
    "spec",
]

#: The default ``step_scaling`` exponent by base kernel (others: 1).
STEP_SCALING = {"hmc": 0.5}


def _at_least_two(_inst: Any, attribute: Any, value: int) -> None:
    if value < 2:
        raise ValueError(f"{attribute.name}: needs at least 2 replicas, got {value}")


def _above_one(_inst: Any, attribute: Any, value: float) -> None:
    if not value > 1.0:
        raise ValueError(f"{attribute.name}: must be > 1 (the coldest replica runs at T = 1), got {value}")


def _ladder_given(_inst: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    t = [float(v) for v in value]
    if len(t) < 2 or t[0] != 1.0 or any(b <= a for a, b in zip(t, t[1:], strict=False)) or not all(math.isfinite(v) for v in t):
        raise ValueError(
            f"{attribute.name}: must be at least 2 finite, increasing temperatures starting at 1.0, got {list(value)}"
        )


def _base_name(_inst: Any, attribute: Any, value: str) -> None:
    if value == "replica_exchange":
        raise ValueError(f"{attribute.name}: replica exchange cannot be its own base kernel")


@config_class
class ReplicaExchangeConfig(SamplerConfig):
    """Replica exchange over a base kernel.

    Attributes:
        num_steps: K, steps per chain.
        step_size: the base kernel's step at ``T = 1``; replica ``l`` uses
            ``step_size · T_l^step_scaling``.
        num_replicas: ``L``, temperatures per chain (≥ 2) of the geometric ladder.
        max_temperature: the geometric ladder's hottest temperature (> 1).
        temperatures: the ladder itself (increasing, from 1.0), instead of
            ``num_replicas``/``max_temperature``.
        base: the registered sampler that moves each replica (default ``"mala"``).
        base_options: the base sampler's other config fields.
        step_scaling: the exponent ``a``; ``None``: 1/2 for ``hmc``, else 1.
        clamp: ``(low, high)``: chain starts are clamped into this box, and the
            base kernel gets it when it has a ``clamp`` field; or ``None``.
    """

    num_steps: int = attrs.field(default=100, validator=positive_int)
    step_size: float = attrs.field(default=0.005, validator=positive)
    num_replicas: int = attrs.field(default=8, validator=[positive_int, _at_least_two])
    max_temperature: float = attrs.field(default=30.0, validator=[positive, _above_one])
    temperatures: tuple[float, ...] | None = attrs.field(default=None, converter=as_tuple, validator=_ladder_given)
    base: str = attrs.field(default="mala", validator=_base_name)
    base_options: dict[str, Any] = attrs.field(factory=dict)
    step_scaling: float | None = attrs.field(default=None, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_tuple, validator=optional(box))


class ReplicaExchangeState(NamedTuple):
    """The chains' state: the ``T = 1`` replica in ``position``/``energy``/``grad``
    (what every sampler state has) and the whole ladder.

    Attributes:
        position, energy, grad: the ``T = 1`` replica ``[B, *event]``, ``[B]``
            (untempered).
        ladder: the base kernel's state of every replica, each leaf with a
            leading ``[L]`` axis, coldest first (its energies are tempered).
        ladder_energy: ``[L, B]``, untempered.
        parity: which neighbour pairs the next swap proposes (0: even, 1: odd).
    """

    position: Array
    energy: Array
    grad: Array
    ladder: Any
    ladder_energy: Array
    parity: Array

    @property
    def ladder_position(self) -> Array:
        """``[L, B, *event]``, coldest first."""
        return self.ladder.position


class ReplicaExchangeInfo(NamedTuple):
    """Per-chain diagnostics of one step.

    Attributes:
        acceptance_rate, grad_norm, non_finite: ``[B]``, of the ``T = 1`` replica
            (``non_finite`` also flags any replica's non-finite energy).
        swap_rate: ``[B]``, accepted swaps over the pairs proposed this step.
        pair_swap_rate: ``[B, L − 1]``, each neighbour pair's swap acceptance probability.
        num_grad_evals: ``[B]``, gradient evaluations of all replicas.
        replica_info: the base kernel's info of every replica (leading ``[L]``).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    swap_rate: Array
    pair_swap_rate: Array
    num_grad_evals: Array
    replica_info: Any


def ladder(num_replicas: int, max_temperature: float) -> np.ndarray:
    """The geometric temperature ladder ``[L]`` from 1 to ``max_temperature``."""
    return np.geomspace(1.0, float(max_temperature), int(num_replicas)).astype(np.float32)


def build_base(config: ReplicaExchangeConfig, ctx: Any = None) -> Any:
    """The base sampler, built from ``base`` and ``base_options`` (the
    replica-exchange ``step_size`` and ``clamp`` fill in what the options leave out).

    Raises:
        ConfigError: the base sampler's options are invalid (located at ``sampler.base_options``).
    """
    base_spec = get_spec("sampler", config.base)
    fields = {f.name for f in attrs.fields(base_spec.config)}
    options = dict(config.base_options)
    if "step_size" in fields:
        options.setdefault("step_size", config.step_size)
    if "clamp" in fields and config.clamp is not None:
        options.setdefault("clamp", list(config.clamp))
    if "warmup_steps" in fields:
        # The base adapts only when asked: the ladder's steps follow step_scaling.
        options.setdefault("warmup_steps", 0)
    base_config = structure(options, base_spec.config, source="sampler.base_options")
    return base_spec.create(base_config, ctx)


def _rescale(state: Any, factor: Array) -> Any:
    """A base state whose tempered ``energy``/``grad`` move to another temperature."""
    event_ndim = state.position.ndim - 1
    g_factor = factor.reshape(factor.shape + (1,) * event_ndim)
    return state._replace(energy=state.energy * factor, grad=state.grad * g_factor)


class ReplicaExchangeSampler(BoundSampler):
    """Replica exchange bound to a :class:`ReplicaExchangeConfig`.

    Attributes:
        temperatures: the ladder ``[L]``, coldest first.
        base: the base sampler (built from ``base`` and ``base_options``).
        tunables: the base sampler's tunables (its ``step_size`` at ``T = 1``),
            and ``replica_tunables``: per-replica values (leading ``[L]``)
            that replace them, which an adaptive base's adaptation supplies.
        equilibration_steps: steps a fresh ladder needs on a unit-scale target
            (:class:`~ebmkit.types.Equilibrating`).
    """

    def __init__(self, config: ReplicaExchangeConfig, ctx: Any = None):
        if config.temperatures is not None:
            self.temperatures = np.asarray(config.temperatures, np.float32)
        else:
            self.temperatures = ladder(config.num_replicas, config.max_temperature)
        self.base = build_base(config, ctx)
        exponent = config.step_scaling if config.step_scaling is not None else STEP_SCALING.get(config.base, 1.0)
        self.step_scaling = float(exponent)
        #: Steps for a fresh ladder to reach its temperatures on a unit-scale target.
        self.equilibration_steps = int(math.ceil(5.0 / config.step_size))
        tunables = {**dict(self.base.tunables), "replica_tunables": None}
        if "step_size" in tunables:
            tunables["step_size"] = config.step_size
        super().__init__(config, init=self._ladder_init, kernel=self._ladder_kernel, tunables=tunables)

    # -- the pure functions ------------------------------------------------------------

    def _ladder_init(self, position: Array, energy_fn: EnergyFn) -> ReplicaExchangeState:
        temps = jnp.asarray(self.temperatures, jnp.float32)

        def one(t: Array) -> Any:
            return self.base.init(position, lambda x: energy_fn(x) / t)

        states = jax.vmap(one)(temps)
        energy = states.energy * temps[:, None]
        cold_grad = states.grad[0] * temps[0]
        return ReplicaExchangeState(
            position=states.position[0],
            energy=energy[0],
            grad=cold_grad,
            ladder=states,
            ladder_energy=energy,
            parity=jnp.zeros((), jnp.int32),
        )

    def _replica_tunables(self, tunables: dict[str, Any]) -> dict[str, Array]:
        """Per-replica tunables (leading ``[L]``) from the T = 1 values."""
        temps = jnp.asarray(self.temperatures, jnp.float32)
        out = {}
        for k, v in tunables.items():
            if v is None:
                continue
            v = jnp.asarray(v, jnp.float32)
            scale = temps ** self.step_scaling if k == "step_size" else jnp.ones_like(temps)
            out[k] = scale.reshape((-1,) + (1,) * v.ndim) * v[None]
        return out

    def _ladder_kernel(
        self,
        rng_key: PRNGKey,
        state: ReplicaExchangeState,
        energy_fn: EnergyFn,
        replica_tunables: Any = None,
        **tunables: Any,
    ) -> tuple[ReplicaExchangeState, ReplicaExchangeInfo]:
        temps_np = self.temperatures
        num = len(temps_np)
        temps = jnp.asarray(temps_np, jnp.float32)
        per_replica = self._replica_tunables(tunables)
        if replica_tunables is not None:
            per_replica.update(replica_tunables)
        move_key, swap_key = jax.random.split(rng_key)
        keys = jax.random.split(move_key, num)

        # 1. The base kernel on every replica, target E / T_l.
        def one(key: PRNGKey, sub: Any, t: Array, kw: dict[str, Array]) -> tuple[Any, Any]:
            return self.base.kernel(key, sub, lambda x: energy_fn(x) / t, **kw)

        ladder_state, replica_info = jax.vmap(one)(keys, state.ladder, temps, per_replica)
        e = ladder_state.energy * temps[:, None]  # untempered [L, B]

        # 2. Swaps between neighbours (l, l+1) with l of this step's parity.
        lower = jnp.arange(num - 1)
        proposed = (lower % 2) == state.parity  # [L-1]
        beta = 1.0 / temps
        log_swap = (beta[:-1, None] - beta[1:, None]) * (e[:-1] - e[1:])  # [L-1, B]
        log_swap = jnp.where(jnp.isfinite(log_swap), log_swap, -jnp.inf)
        swap_prob = jnp.exp(jnp.minimum(log_swap, 0.0))
        swap = (jax.random.uniform(swap_key, log_swap.shape) < swap_prob) & proposed[:, None]
        # Replica l takes l+1's state where pair (l, l+1) swaps, and l+1 takes l's.
        up = jnp.concatenate([swap, jnp.zeros_like(swap[:1])], axis=0)
        down = jnp.concatenate([jnp.zeros_like(swap[:1]), swap], axis=0)
        source = jnp.arange(num)[:, None] + up.astype(jnp.int32) - down.astype(jnp.int32)  # [L, B]

        def take(leaf: Array) -> Array:
            if leaf.ndim < 2 or leaf.shape[:2] != source.shape:
                return leaf  # per-replica constants (no chain axis) stay put
            idx = source.reshape(source.shape + (1,) * (leaf.ndim - 2))
            return jnp.take_along_axis(leaf, idx, axis=0)

        moved = jax.tree.map(take, ladder_state)
        # A state that changed temperature carries energies tempered by its old T.
        factor = temps[source] / temps[:, None]  # [L, B]
        ladder_state = jax.vmap(_rescale)(moved, factor)
        e = jnp.take_along_axis(e, source, axis=0)
        pairs = jnp.maximum(jnp.sum(proposed), 1)
        swap_rate = jnp.sum(swap, axis=0).astype(jnp.float32) / pairs.astype(jnp.float32)

        x0, e0 = ladder_state.position[0], e[0]
        g0 = ladder_state.grad[0] * temps[0]
        grad_norm, non_finite = per_chain_diagnostics(x0, e0, g0)
        non_finite = non_finite | jnp.any(~jnp.isfinite(e), axis=0)
        evals = getattr(replica_info, "num_grad_evals", None)
        evals = jnp.full((num, x0.shape[0]), 1.0) if evals is None else jnp.asarray(evals, jnp.float32)
        new_state = ReplicaExchangeState(
            position=x0, energy=e0, grad=g0, ladder=ladder_state, ladder_energy=e, parity=1 - state.parity
        )
        return new_state, ReplicaExchangeInfo(
            acceptance_rate=replica_info.acceptance_rate[0].astype(jnp.float32),
            grad_norm=grad_norm,
            non_finite=non_finite,
            swap_rate=swap_rate,
            pair_swap_rate=swap_prob.T.astype(jnp.float32),
            num_grad_evals=jnp.sum(evals, axis=0),
            replica_info=replica_info,
        )


class AdaptiveReplicaExchangeSampler(ReplicaExchangeSampler):
    """Replica exchange over an adaptive base kernel: every replica adapts on
    its own (the adaptation state has a leading ``[L]`` axis)."""

    def __init__(self, config: ReplicaExchangeConfig, ctx: Any = None):
        super().__init__(config, ctx)
        self.warmup_steps = int(self.base.warmup_steps)

    def init_adaptation(self, position: Array) -> Any:
        one = self.base.init_adaptation(position)
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (len(self.temperatures),) + jnp.shape(a)), one)

    def adapted_tunables(self, adaptation: Any) -> dict[str, Any]:
        return {"replica_tunables": dict(jax.vmap(self.base.adapted_tunables)(adaptation))}

    def adapt(self, adaptation: Any, info: ReplicaExchangeInfo, step_index: Array) -> Any:
        return jax.vmap(self.base.adapt, in_axes=(0, 0, None))(adaptation, info.replica_info, step_index)


def build(config: ReplicaExchangeConfig, ctx: Any = None) -> ReplicaExchangeSampler:
    """Replica exchange bound to ``config``: adaptive when its base kernel is."""
    plain = ReplicaExchangeSampler(config, ctx)
    if isinstance(plain.base, Adaptive):
        return AdaptiveReplicaExchangeSampler(config, ctx)
    return plain


spec = ComponentSpec(
    kind="sampler",
    name="replica_exchange",
    config=ReplicaExchangeConfig,
    build=build,
    summary="Parallel tempering over any sampler (mala by default): separated modes get their weights right",
)
