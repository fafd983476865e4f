"""Protocols and state containers shared by every component kind.

These are the contracts of DESIGN.md ("Contracts"). Everything here is pure and
jit-able; randomness is always an explicit ``jax.random.key`` passed in as the
first argument.

Shapes: ``B`` is the batch (or chain) axis, ``event`` the shape of one sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

Array = jax.Array
PRNGKey = jax.Array
#: ``x[B, *event] -> E[B]``; rows independent (no batch statistics).
EnergyFn = Callable[[Array], Array]

__all__ = [
    "Array",
    "PRNGKey",
    "EnergyFn",
    "SamplerState",
    "SamplerInfo",
    "Sampler",
    "BufferState",
    "Buffer",
    "LossContext",
    "Loss",
    "EnergyBuilder",
]


class SamplerState(NamedTuple):
    """What the next MCMC step needs. Samplers may define richer states, but
    every state has ``position`` (``[B, *event]``)."""

    position: Array
    energy: Array
    grad: Array


class SamplerInfo(NamedTuple):
    """Per-chain diagnostics of one kernel call (not carried forward).

    Every sampler's info has at least these fields, each of shape ``[B]``.
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array


@runtime_checkable
class Sampler(Protocol):
    """A BlackJAX-shaped MCMC sampler over a batch of independent chains.

    ``tunables`` are the numeric defaults from the config (e.g. ``step_size``);
    callers may pass others to each ``kernel`` call, so schedules work.
    """

    tunables: Mapping[str, float | None]
    num_steps: int

    def init(self, position: Array, energy_fn: EnergyFn) -> Any: ...

    def kernel(self, rng_key: PRNGKey, state: Any, energy_fn: EnergyFn, **tunables: Any) -> tuple[Any, Any]: ...


class BufferState(NamedTuple):
    """A fixed-capacity replay buffer on the device.

    Attributes:
        data: ``[capacity, *event]`` stored chain states.
        filled: ``[capacity]`` bool, which slots hold a written chain.
    """

    data: Array
    filled: Array


@runtime_checkable
class Buffer(Protocol):
    """An optax-shaped replay buffer (pure functions over a state)."""

    capacity: int

    def init(self, rng_key: PRNGKey, example: Array) -> Any:
        """``example`` is one sample, shape ``event`` (its dtype is kept)."""

    def sample(self, rng_key: PRNGKey, state: Any, n: int) -> tuple[Array, Array]:
        """Draw ``n`` chain starts and the slots they came from (``int32[n]``)."""

    def update(self, state: Any, x: Array, slots: Array) -> Any:
        """Write chains ``x`` back into ``slots``."""

    def fresh(self, rng_key: PRNGKey, n: int) -> Array:
        """``n`` draws from the init distribution (fresh chains for ``generate``)."""


class LossContext(NamedTuple):
    """What a loss may use besides the energy and the data batch.

    Attributes:
        sampler: the bound sampler.
        num_steps: MCMC steps per update (K), static.
        tunables: the sampler's numeric settings for this update.
        sample_energy_fn: the energy with parameters detached; chains run on it
            so that no gradient ever flows through the MCMC chain.
        buffer: the replay buffer, or ``None``.
        buffer_state: its state, or ``None``; losses return the updated one.
    """

    sampler: Any
    num_steps: int
    tunables: Mapping[str, Any]
    sample_energy_fn: EnergyFn
    buffer: Any = None
    buffer_state: Any = None


class Loss(Protocol):
    """``(rng_key, energy_fn, x_pos, ctx) -> (loss, metrics, ctx)``.

    ``metrics`` always includes ``loss``, ``real_energy_mean``,
    ``fake_energy_mean`` and ``energy_gap`` (scalars).
    """

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, x_pos: Array, ctx: LossContext) -> tuple[Array, dict[str, Array], LossContext]: ...


class EnergyBuilder(Protocol):
    """An energy spec's ``build``: ``build(config, *, event_shape, rngs) -> nnx.Module``.

    The module maps ``x[B, *event_shape] -> E[B]``.
    """

    def __call__(self, config: Any, *, event_shape: tuple[int, ...], rngs: Any) -> Any: ...
