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
import numpy as np

from ebmkit.types import Adaptive, Array, EnergyFn, PRNGKey, Scheduled

__all__ = [
    "ChainSummary", "ChainTrace", "run_chain", "trace_chain", "warmup", "per_row_energy_and_grad", "tunables_for",
    "check_binary_starts",
]


class ChainSummary(NamedTuple):
    """Per-chain diagnostics aggregated over a chain's steps (all ``[B]``).

    Attributes:
        acceptance_rate: mean acceptance over steps (1 for unadjusted samplers).
        grad_norm: mean gradient norm over steps.
        non_finite: True where any step produced a non-finite position or energy.
        initial_energy: energy at the start of the chain.
        final_energy: energy at the end of the chain (``None`` when the chain
            ran with ``final_energy=False``).
        adaptation: the adaptive sampler's state after the chain (``None``
            for samplers that do not adapt).
        num_grad_evals: gradient evaluations per chain over the chain (the
            kernel's ``info.num_grad_evals`` summed, or one per step).
        divergences: divergent transitions per chain, for samplers whose
            info has ``is_divergent`` (``None`` otherwise).
    """

    acceptance_rate: Array
    grad_norm: Array
    non_finite: Array
    initial_energy: Array
    final_energy: Array | None
    adaptation: Any = None
    num_grad_evals: Any = None
    divergences: Any = None


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


class ChainTrace(NamedTuple):
    """Draws recorded along a chain (every ``thin``-th step).

    Attributes:
        position: ``[T, B, *event]``, the chains' positions after steps
            ``thin, 2·thin, ..., num_steps``.
        energy: ``[T, B]`` at those positions.
        acceptance_rate: ``[T, B]``, the acceptance of the recorded steps.
        thin: steps between recorded draws.
    """

    position: Array
    energy: Array
    acceptance_rate: Array
    thin: int


def _scan_chain(
    rng_key: PRNGKey,
    sampler: Any,
    position: Array,
    energy_fn: EnergyFn,
    num_steps: int,
    schedule: Callable[[Array], Mapping[str, Any]] | None,
    adaptation: Any,
    adapt: bool,
    tunables: Mapping[str, Any],
    thin: int | None,
    final_energy: bool = True,
) -> tuple[Array, ChainSummary, ChainTrace | None]:
    """The one loop behind :func:`run_chain` and :func:`trace_chain`."""
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
    divergence_reported = [False]

    def step(carry, inputs):
        state, adaptation, acc, gnorm, bad, grads, divergent = carry
        i, key = inputs
        kw = dict(tunables)
        if adaptation is not None:
            kw.update(sampler.adapted_tunables(adaptation))
        if schedule is not None:
            kw.update(schedule(i))
        state, info = sampler.kernel(key, state, energy_fn, **kw)
        if adapt:
            adaptation = sampler.adapt(adaptation, info, i)
        evals = getattr(info, "num_grad_evals", None)
        evals = jnp.ones((batch,), jnp.float32) if evals is None else jnp.asarray(evals, jnp.float32)
        flag = getattr(info, "is_divergent", None)
        if flag is not None:
            divergence_reported[0] = True
            divergent = divergent + jnp.asarray(flag, jnp.float32)
        out = (state.position, state.energy, info.acceptance_rate.astype(jnp.float32)) if thin else None
        return (
            state,
            adaptation,
            acc + info.acceptance_rate.astype(jnp.float32),
            gnorm + info.grad_norm.astype(jnp.float32),
            bad | info.non_finite,
            grads + evals,
            divergent,
        ), out

    trace = None
    if num_steps > 0:
        keys = jax.random.split(rng_key, num_steps)
        carry = (state, adaptation, zeros, zeros, jnp.zeros((batch,), bool), zeros, zeros)
        xs = (jnp.arange(num_steps), keys)
        if thin:
            if num_steps % thin:
                raise ValueError(f"num_steps = {num_steps} is not a multiple of thin = {thin}")

            def block(carry, xs_block):
                carry, outs = jax.lax.scan(step, carry, xs_block)
                return carry, jax.tree.map(lambda a: a[-1], outs)

            blocks = jax.tree.map(lambda a: a.reshape((num_steps // thin, thin) + a.shape[1:]), xs)
            carry, (pos, en, ac) = jax.lax.scan(block, carry, blocks)
            trace = ChainTrace(position=pos, energy=en, acceptance_rate=ac, thin=int(thin))
        elif final_energy or num_steps == 1:
            carry, _ = jax.lax.scan(step, carry, xs)
        else:
            # The last step outside the loop: only its positions (and what they
            # depend on) are read below, so XLA drops the rest of it (for
            # Langevin, the energy and gradient at the final positions).
            carry, _ = jax.lax.scan(step, carry, jax.tree.map(lambda a: a[:-1], xs))
            kept_gnorm, kept_bad = carry[3], carry[4]
            carry, _ = step(carry, jax.tree.map(lambda a: a[-1], xs))
            axes = tuple(range(1, carry[0].position.ndim))
            # grad_norm over the K - 1 evaluated steps; non_finite from the
            # final positions instead of the last step's energy and gradient.
            carry = (*carry[:3], kept_gnorm * (num_steps / (num_steps - 1.0)),
                     kept_bad | ~jnp.all(jnp.isfinite(carry[0].position), axis=axes), *carry[5:])
        state, adaptation, acc, gnorm, bad, grads, divergent = carry
        n = float(num_steps)
        acc, gnorm = acc / n, gnorm / n
    else:
        acc, gnorm, grads, divergent = jnp.ones((batch,), jnp.float32), zeros, zeros, zeros
        bad = ~jnp.isfinite(initial_energy)
        if thin:
            raise ValueError("trace_chain needs num_steps > 0")
    evaluated = final_energy or num_steps <= 1 or bool(thin)
    summary = ChainSummary(
        acceptance_rate=acc,
        grad_norm=gnorm,
        non_finite=bad | ~jnp.isfinite(state.energy) if evaluated else bad,
        initial_energy=initial_energy,
        final_energy=state.energy if evaluated else None,
        adaptation=adaptation,
        num_grad_evals=grads,
        divergences=divergent if divergence_reported[0] else None,
    )
    return state.position, summary, trace


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
    final_energy: bool = True,
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
        final_energy: evaluate the sampler's state at the final positions
            (default). ``False`` is for callers that only need the positions
            (a training loss that evaluates the energy there itself, or
            ``generate``): the last step runs outside the loop, so whatever
            the final positions do not depend on (the energy and gradient an
            unadjusted Langevin step computes for its *next* step) is never
            computed: ``K`` gradient evaluations instead of ``K + 1``. The
            summary's ``final_energy`` is then ``None``, its ``grad_norm``
            the mean over the first ``K - 1`` steps, and ``non_finite`` checks
            the final positions instead of the last step's energy and
            gradient. A sampler whose positions need them (an accept/reject
            step) computes them all the same. One-step chains are unaffected.
        **tunables: numeric settings passed to every kernel call (scalars or
            per-chain arrays).

    Returns:
        The final positions and a :class:`ChainSummary` (its ``adaptation``
        holds the final adaptation state).
    """
    x, summary, _ = _scan_chain(
        rng_key, sampler, position, energy_fn, num_steps, schedule, adaptation, adapt, tunables, None,
        final_energy=final_energy,
    )
    return x, summary


def trace_chain(
    rng_key: PRNGKey,
    sampler: Any,
    position: Array,
    energy_fn: EnergyFn,
    num_steps: int,
    *,
    thin: int = 1,
    schedule: Callable[[Array], Mapping[str, Any]] | None = None,
    adaptation: Any = None,
    adapt: bool = False,
    **tunables: Any,
) -> tuple[Array, ChainSummary, ChainTrace]:
    """:func:`run_chain` that also records every ``thin``-th draw, in the same
    compiled program (the draws stay on the device; ``num_steps / thin`` of
    them, so mind the memory for large events).

    Returns:
        The final positions, the :class:`ChainSummary` and a :class:`ChainTrace`.

    Raises:
        ValueError: ``thin`` is not positive or does not divide ``num_steps``.
    """
    if int(thin) < 1:
        raise ValueError(f"thin must be a positive integer, got {thin}")
    return _scan_chain(
        rng_key, sampler, position, energy_fn, num_steps, schedule, adaptation, adapt, tunables, int(thin)
    )


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


def check_binary_starts(position: Array, who: str) -> None:
    """Refuse concrete chain starts outside {0, 1} for a sampler of binary data
    (traced starts cannot be read and pass).

    Raises:
        ValueError: naming ``who``, how many values are not bits, and one of them.
    """
    if isinstance(position, jax.core.Tracer):
        return
    values = np.asarray(position)
    if not np.all((values == 0) | (values == 1)):
        bad = values[(values != 0) & (values != 1)]
        raise ValueError(
            f"{who} samples binary data: chain starts must hold only 0 and 1, got "
            f"{bad.size} other value(s) such as {bad.ravel()[0]!r}; start the chains from "
            "binary data (or round the starts)"
        )
