"""Building blocks of sampler adaptation, run inside the compiled chain.

* **Dual averaging** (Nesterov's primal-dual scheme as Stan and BlackJAX use it
  for step sizes): drives a step size toward a target acceptance rate. Each
  update moves ``log ε`` against the running mean of ``target − accept``;
  the *averaged* iterate ``log ε̄`` is what the chain keeps once adaptation
  stops. The state may be per chain (``[B]``) or shared (scalars).
* **Pooled variance** (Welford/Chan): the running mean and variance of the
  chains' positions over steps and chains, for a diagonal inverse mass matrix.
* :func:`window_schedule`: Stan's warm-up windows (a fast initial window, slow
  windows that double, a fast terminal window), as static per-step flags.

All functions are pure and traceable; samplers call them from ``adapt``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ebmkit.types import Array

__all__ = [
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "adapt_step_size",
    "StepSizeAdaptation",
    "VarianceState",
    "variance_init",
    "variance_update",
    "regularized_variance",
    "window_schedule",
]

#: Dual-averaging constants (Hoffman & Gelman's defaults, as in Stan).
GAMMA, T0, KAPPA = 0.05, 10.0, 0.75


class DualAveragingState(NamedTuple):
    """Dual averaging of ``log ε`` (all the same shape: ``[B]`` or scalar).

    Attributes:
        log_step: the current iterate (what the chain runs with while adapting).
        log_step_avg: the averaged iterate (what it keeps afterwards).
        error_avg: the running mean of ``target − acceptance``.
        mu: the shrinkage point, ``log(10 ε₀)``.
        count: updates so far.
    """

    log_step: Array
    log_step_avg: Array
    error_avg: Array
    mu: Array
    count: Array


def dual_averaging_init(step_size: float | Array, shape: tuple[int, ...] = ()) -> DualAveragingState:
    """A fresh state starting at ``step_size`` (broadcast to ``shape``)."""
    log_step = jnp.broadcast_to(jnp.log(jnp.asarray(step_size, jnp.float32)), shape)
    zeros = jnp.zeros(shape, jnp.float32)
    return DualAveragingState(
        log_step=log_step,
        log_step_avg=log_step,
        error_avg=zeros,
        mu=jnp.log(10.0) + log_step,
        count=jnp.zeros(shape, jnp.float32),
    )


def dual_averaging_update(
    state: DualAveragingState, acceptance: Array, target: float, max_step: float | None = None
) -> DualAveragingState:
    """One update from an acceptance probability (same shape as the state).

    A non-finite acceptance counts as 0 (a divergent proposal), so the step
    shrinks. ``max_step`` caps both iterates: on an energy that is flat where
    the chains are (an EBM at initialisation), every proposal is accepted and
    the uncapped step grows without bound.
    """
    acceptance = jnp.where(jnp.isfinite(acceptance), jnp.clip(acceptance, 0.0, 1.0), 0.0)
    t = state.count + 1.0
    weight = 1.0 / (t + T0)
    error_avg = (1.0 - weight) * state.error_avg + weight * (target - acceptance)
    log_step = state.mu - jnp.sqrt(t) / GAMMA * error_avg
    eta = t ** (-KAPPA)
    if max_step is not None:
        log_step = jnp.minimum(log_step, math.log(max_step))
    log_step_avg = eta * log_step + (1.0 - eta) * state.log_step_avg
    return DualAveragingState(log_step, log_step_avg, error_avg, state.mu, t)


def adapt_step_size(
    state: DualAveragingState,
    acceptance: Array,
    *,
    warmup_steps: int,
    target: float,
    max_step: float | None = None,
    shared: bool = False,
    keep_adapting: bool = False,
) -> DualAveragingState:
    """The adaptation phase of a sampler whose one tunable is a step size.

    One :func:`dual_averaging_update` from this step's per-chain
    ``acceptance`` (its mean over the finite ones when ``shared``). At the
    end of the phase (``warmup_steps`` updates) each chain keeps its averaged
    step, and nothing moves afterwards, so the kernel is fixed and exact from
    then on; ``keep_adapting`` never freezes.
    """
    if shared:
        acceptance = jnp.mean(jnp.where(jnp.isfinite(acceptance), acceptance, 0.0))
    new = dual_averaging_update(state, acceptance, target, max_step)
    if keep_adapting:
        return new
    done = new.count >= warmup_steps
    new = new._replace(log_step=jnp.where(done, new.log_step_avg, new.log_step))
    active = state.count < warmup_steps
    return DualAveragingState(*(jnp.where(active, n, o) for n, o in zip(new, state, strict=True)))


class StepSizeAdaptation:
    """The :class:`~ebmkit.types.Adaptive` methods of a sampler whose one
    adapted tunable is ``step_size``, for a bound sampler whose ``config``
    has ``step_size``, ``warmup_steps``, ``adaptation`` (``"per_chain"`` or
    ``"shared"``), ``target_acceptance``, ``max_step_size`` and optionally
    ``keep_adapting``; its ``info`` must have ``acceptance_rate``.

    Mix it in before the sampler class: ``class AdaptiveX(StepSizeAdaptation,
    XSampler)``. The adaptation state is a :class:`DualAveragingState`
    (``[B]`` per chain, scalars when shared).
    """

    config: Any

    @property
    def warmup_steps(self) -> int:
        return int(self.config.warmup_steps)

    def init_adaptation(self, position: Array) -> DualAveragingState:
        shape = (position.shape[0],) if self.config.adaptation == "per_chain" else ()
        return dual_averaging_init(self.config.step_size, shape)

    def adapted_tunables(self, adaptation: DualAveragingState) -> dict[str, Array]:
        return {"step_size": jnp.exp(adaptation.log_step)}

    def adapt(self, adaptation: DualAveragingState, info: Any, step_index: Array) -> DualAveragingState:
        c = self.config
        return adapt_step_size(
            adaptation, info.acceptance_rate, warmup_steps=self.warmup_steps, target=c.target_acceptance,
            max_step=c.max_step_size, shared=c.adaptation == "shared",
            keep_adapting=bool(getattr(c, "keep_adapting", False)),
        )


class VarianceState(NamedTuple):
    """Running mean and sum of squared deviations over ``count`` draws (``[*event]``)."""

    mean: Array
    m2: Array
    count: Array


def variance_init(event_shape: tuple[int, ...]) -> VarianceState:
    zeros = jnp.zeros(event_shape, jnp.float32)
    return VarianceState(zeros, zeros, jnp.zeros((), jnp.float32))


def variance_update(state: VarianceState, x: Array) -> VarianceState:
    """Fold a batch ``x[B, *event]`` of draws in (Chan et al.'s parallel update)."""
    x = x.astype(jnp.float32)
    n_b = jnp.asarray(x.shape[0], jnp.float32)
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
    n = state.count + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + jnp.square(delta) * (state.count * n_b / n)
    return VarianceState(mean, m2, n)


def regularized_variance(state: VarianceState, draws_per_chain: Array | float) -> Array:
    """Stan's shrunk variance estimate ``(n/(n+5)) σ̂² + 10⁻³ · 5/(n+5)``.

    ``n`` is the number of draws per chain in the window (pooled chains give a
    better ``σ̂²``, but the shrinkage follows one chain's count, as in Stan).
    """
    var = state.m2 / jnp.maximum(state.count - 1.0, 1.0)
    n = jnp.asarray(draws_per_chain, jnp.float32)
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


def window_schedule(num_steps: int, initial: int = 75, terminal: int = 50, base: int = 25) -> np.ndarray:
    """Stan's warm-up windows as ``[num_steps, 2]`` int flags per step:
    ``(in_slow_window, ends_slow_window)``.

    A fast initial window (step size only), slow windows of ``base``, ``2 base``,
    ... steps (variance estimated; the mass matrix is set at each window's end
    and the step size's adaptation restarts), and a fast terminal window. Too
    short a warm-up for that (under 20 steps) gets no slow window; under
    ``initial + terminal + base`` steps, the windows shrink to 15 % / 75 % / 10 %
    as in Stan.
    """
    flags = np.zeros((max(int(num_steps), 0), 2), np.int32)
    if num_steps < 20:
        return flags
    if initial + terminal + base > num_steps:
        initial = int(math.floor(0.15 * num_steps))
        terminal = int(math.floor(0.1 * num_steps))
        base = num_steps - initial - terminal
    end_slow = num_steps - terminal
    start, size = initial, base
    while start < end_slow:
        stop = start + size
        # The last slow window takes the rest if the next would not fit.
        if stop + 2 * size > end_slow:
            stop = end_slow
        flags[start:stop, 0] = 1
        flags[stop - 1, 1] = 1
        start, size = stop, 2 * size
    return flags
