"""Running MCMC chains: the one loop every sampler shares.

A sampler only knows how to take one step (``kernel``); :func:`run_chain` turns
that into ``num_steps`` steps inside one ``lax.scan`` so the whole chain is one
compiled program with no Python loop per step and no host sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ebmkit.types import Adaptive, Array, EnergyFn, PRNGKey, Scheduled

__all__ = ["ChainSummary", "run_chain", "warmup", "per_row_energy_and_grad", "tunables_for"]


class ChainSummary(NamedTuple):
    """Per-chain diagnostics aggregated over a chain's steps (all ``[B]``).

    Attributes:
        acceptance_rate: mean acceptance over steps (1 for unadjusted samplers).
        grad_norm: mean gradient norm over steps.
        non_finite: True where any step produced a non-finite position or energy.
        initial_energy: energy at the start of the chain.
        final_energy: energy at the end of the chain.
        adaptation: the adaptive sampler's state after the chain (``None``
            for samplers that do not adapt).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    initial_energy: Array
    final_energy: Array
    adaptation: Any = None


def per_row_energy_and_grad(energy_fn: EnergyFn, x: Array) -> tuple[Array, Array]:
    """``E[B]`` and ``dE/dx[B, *event]`` in one pass.

    Rows are independent, so the gradient of the *sum* of energies is the
    per-row gradient; one backward pass serves the whole batch.
    """

    def total(x_: Array) -> tuple[Array, Array]:
        e = energy_fn(x_)
        return jnp.sum(e), e

    grad, energy = jax.grad(total, has_aux=True)(x)
    return energy, grad


def tunables_for(sampler: Any, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sampler's default tunables updated with non-``None`` overrides.

    Raises:
        TypeError: an override names a tunable the sampler does not have.
    """
    out = dict(sampler.tunables)
    for k, v in (overrides or {}).items():
        # ``None`` keeps the default; arrays (per-chain values) are never None.
        if v is None:
            continue
        if k not in out:
            raise TypeError(
                f"{type(sampler).__name__} has no tunable {k!r}; it has {sorted(out)}"
            )
        out[k] = v
    return out


def run_chain(
    rng_key: PRNGKey,
    sampler: Any,
    position: Array,
    energy_fn: EnergyFn,
    num_steps: int,
    *,
    schedule: Callable[[Array], Mapping[str, Any]] | None = None,
    adaptation: Any = None,
    adapt: bool = False,
    **tunables: Any,
) -> tuple[Array, ChainSummary]:
    """Run ``num_steps`` kernel steps on every chain (row) of ``position``.

    Args:
        rng_key: a ``jax.random.key``; split once per step.
        sampler: an object with ``init``, ``kernel`` and ``tunables``.
        position: ``[B, *event]`` chain starts.
        energy_fn: ``x[B, *event] -> E[B]``.
        num_steps: static number of steps (0 returns the starts).
        schedule: optional ``step_index -> {tunable: value}`` evaluated inside
            the loop (e.g. an annealed step size). Defaults to the sampler's own
            schedule when it is :class:`~ebmkit.types.Scheduled`.
        adaptation: an :class:`~ebmkit.types.Adaptive` sampler's state; the
            kernel runs with ``sampler.adapted_tunables(adaptation)``.
        adapt: update ``adaptation`` after every step (the adaptation phase,
            or continued adaptation during training).
        **tunables: numeric settings passed to every kernel call (scalars or
            per-chain arrays).

    Returns:
        The final positions and a :class:`ChainSummary` (its ``adaptation``
        holds the final adaptation state).
    """
    if schedule is None and isinstance(sampler, Scheduled):

        def schedule(i: Array) -> Mapping[str, Any]:
            return sampler.schedule(i, num_steps)

    if adapt and adaptation is None:
        if not isinstance(sampler, Adaptive):
            raise TypeError(f"{type(sampler).__name__} does not adapt (it is not an ebmkit.types.Adaptive)")
        adaptation = sampler.init_adaptation(position)

    state = sampler.init(position, energy_fn)
    initial_energy = state.energy
    batch = position.shape[0]
    zeros = jnp.zeros((batch,), jnp.float32)

    def step(carry, inputs):
        state, adaptation, acc, gnorm, bad = carry
        i, key = inputs
        kw = dict(tunables)
        if adaptation is not None:
            kw.update(sampler.adapted_tunables(adaptation))
        if schedule is not None:
            kw.update(schedule(i))
        state, info = sampler.kernel(key, state, energy_fn, **kw)
        if adapt:
            adaptation = sampler.adapt(adaptation, info, i)
        return (
            state,
            adaptation,
            acc + info.acceptance_rate.astype(jnp.float32),
            gnorm + info.grad_norm.astype(jnp.float32),
            bad | info.non_finite,
        ), None

    if num_steps > 0:
        keys = jax.random.split(rng_key, num_steps)
        (state, adaptation, acc, gnorm, bad), _ = jax.lax.scan(
            step,
            (state, adaptation, zeros, zeros, jnp.zeros((batch,), bool)),
            (jnp.arange(num_steps), keys),
        )
        n = float(num_steps)
        acc, gnorm = acc / n, gnorm / n
    else:
        acc, gnorm = jnp.ones((batch,), jnp.float32), zeros
        bad = ~jnp.isfinite(initial_energy)
    summary = ChainSummary(
        acceptance_rate=acc,
        grad_norm=gnorm,
        non_finite=bad | ~jnp.isfinite(state.energy),
        initial_energy=initial_energy,
        final_energy=state.energy,
        adaptation=adaptation,
    )
    return state.position, summary


def warmup(
    rng_key: PRNGKey,
    sampler: Any,
    position: Array,
    energy_fn: EnergyFn,
    num_steps: int | None = None,
    *,
    adaptation: Any = None,
    **tunables: Any,
) -> tuple[Array, Any]:
    """The adaptation phase of an :class:`~ebmkit.types.Adaptive` sampler.

    Runs ``num_steps`` (default ``sampler.warmup_steps``) adapting steps from
    ``position`` and returns the final positions and adaptation state. A
    sampler that does not adapt returns ``(position, None)`` unchanged.
    """
    if not isinstance(sampler, Adaptive):
        return position, None
    steps = sampler.warmup_steps if num_steps is None else num_steps
    if adaptation is None:
        adaptation = sampler.init_adaptation(position)
    if steps <= 0:
        return position, adaptation
    x, summary = run_chain(
        rng_key, sampler, position, energy_fn, steps, adaptation=adaptation, adapt=True, **tunables
    )
    return x, summary.adaptation
