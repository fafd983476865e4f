"""Annealed importance sampling (Neal 2001) of ``log Z = log ∫ exp(−E(x)) dx``.

The chains anneal along the geometric path between a Gaussian base
``p₀ = N(0, σ² I)``, whose normaliser is known, and the target ``exp(−E)``:

    f_β(x) = exp(−(1 − β) |x|² / (2σ²) − β E(x)),   0 = β₀ < β₁ < … < β_T = 1.

Forward AIS starts from exact base samples, adds ``log f_{t}(x) − log f_{t−1}(x)``
to each chain's log-weight and then moves the chain with HMC that leaves
``f_{β_t}`` invariant (Metropolis-corrected, so the weights stay exact). The mean
weight is an unbiased estimate of ``Z / Z₀``, hence by Jensen ``log`` of it
is a *stochastic lower bound* on ``log Z``.

Reverse AIS runs the same path backwards from exact samples of the target
(available for synthetic targets, or data that the model fits exactly): its
mean weight is unbiased for ``Z₀ / Z`` and gives a *stochastic upper bound*
(Grosse et al., "Sandwiching the marginal likelihood", 2015).

All temperatures of one run are one ``lax.scan`` inside one ``jax.jit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.sampling import per_row_energy_and_grad
from ebmkit.types import Array, EnergyFn, PRNGKey

__all__ = ["AISResult", "ais_log_z", "annealing_schedule", "reverse_ais_log_z"]


class AISResult(NamedTuple):
    """The outcome of one AIS run.

    Attributes:
        log_z: the estimate of ``log Z`` (a stochastic lower bound for forward
            AIS, an upper bound for reverse AIS).
        stderr: its standard error by the delta method,
            ``std(w) / (√n · mean(w))`` over the chains' weights ``w``; trust it
            only when ``effective_sample_size`` is a sizeable fraction of the chains.
        log_weights: ``[num_chains]`` log importance weights (forward: of
            ``Z/Z₀``; reverse: of ``Z₀/Z``).
        log_z_base: ``log Z₀`` of the Gaussian base.
        effective_sample_size: ``(Σw)² / Σw²``, between 1 and ``num_chains``.
        acceptance_rate: mean HMC acceptance probability over chains and temperatures.
        betas: ``[T + 1]`` inverse temperatures from 0 (base) to 1 (target).
        step_sizes: ``[T + 1]`` HMC step size used at each ``beta`` (the two
            ends, where no transition runs, repeat their neighbours).
        num_non_finite: chains whose weight is not finite (left out of ``log_z``).
        direction: ``"forward"`` or ``"reverse"``.
        reverse: the reverse run when ``ais_log_z`` got ``reverse_samples``, else ``None``.
    """

    log_z: float
    stderr: float
    log_weights: np.ndarray
    log_z_base: float
    effective_sample_size: float
    acceptance_rate: float
    betas: np.ndarray
    step_sizes: np.ndarray
    num_non_finite: int
    direction: str
    reverse: AISResult | None = None


def annealing_schedule(num_temperatures: int, kind: str = "sigmoid", *, sharpness: float = 4.0) -> np.ndarray:
    """``num_temperatures + 1`` inverse temperatures from exactly 0 to exactly 1.

    Args:
        num_temperatures: number of annealing steps ``T`` (≥ 1).
        kind: ``"sigmoid"`` (Grosse et al. 2015: dense near both ends, where the
            distributions change fastest) or ``"linear"``.
        sharpness: the sigmoid's ``δ``; larger crowds more steps at the ends.
    """
    if isinstance(num_temperatures, bool) or int(num_temperatures) != num_temperatures or num_temperatures < 1:
        raise ValueError(f"num_temperatures must be a positive integer, got {num_temperatures!r}")
    t = np.linspace(-1.0, 1.0, int(num_temperatures) + 1)
    if kind == "linear":
        betas = (t + 1.0) / 2.0
    elif kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-sharpness * t))
        betas = (s - s[0]) / (s[-1] - s[0])
    else:
        raise ValueError(f"unknown schedule {kind!r}; use 'sigmoid' or 'linear'")
    betas[0], betas[-1] = 0.0, 1.0
    return betas


class _Chain(NamedTuple):
    position: Array
    energy: Array  # target energy E(x), [B]
    grad: Array  # dE/dx


def _per_row(mask: Array, x: Array) -> Array:
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _base_energy(x: Array, base_std: float) -> Array:
    axes = tuple(range(1, x.ndim))
    return 0.5 * jnp.sum(jnp.square(x), axis=axes) / base_std**2


def _hmc_step(
    rng_key: PRNGKey, chain: _Chain, energy_fn: EnergyFn, beta: Array, step_size: Array,
    base_std: float, num_leapfrog: int,
) -> tuple[_Chain, Array]:
    """One Metropolis-corrected HMC transition leaving ``f_β`` invariant, per chain."""
    key_p, key_u, key_j = jax.random.split(rng_key, 3)
    x0 = chain.position
    axes = tuple(range(1, x0.ndim))
    inv_var = 1.0 / base_std**2
    # Each chain's step size is jittered by ±20 %: a fixed trajectory length can
    # resonate with a direction's period and leave it unmixed (Neal 2011, §5.4.2.2).
    jitter = jax.random.uniform(key_j, x0.shape[:1], x0.dtype, 0.8, 1.2)
    step_size = _per_row(step_size * jitter, x0)

    def potential_grad(x, grad_e):
        return (1.0 - beta) * inv_var * x + beta * grad_e

    def leapfrog(_, carry):
        x, p, _, g = carry
        p = p - 0.5 * step_size * potential_grad(x, g)
        x = x + step_size * p
        e, g = per_row_energy_and_grad(energy_fn, x)
        p = p - 0.5 * step_size * potential_grad(x, g)
        return x, p, e, g

    p0 = jax.random.normal(key_p, x0.shape, x0.dtype)
    x1, p1, e1, g1 = jax.lax.fori_loop(0, num_leapfrog, leapfrog, (x0, p0, chain.energy, chain.grad))

    def hamiltonian(x, e, p):
        u = (1.0 - beta) * _base_energy(x, base_std) + beta * e
        return u + 0.5 * jnp.sum(jnp.square(p), axis=axes)

    log_ratio = hamiltonian(x0, chain.energy, p0) - hamiltonian(x1, e1, p1)
    finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(g1), axis=axes)
    accept_prob = jnp.where(finite, jnp.exp(jnp.minimum(jnp.where(finite, log_ratio, 0.0), 0.0)), 0.0)
    accepted = jax.random.uniform(key_u, accept_prob.shape) < accept_prob
    new = _Chain(
        position=jnp.where(_per_row(accepted, x0), x1, x0),
        energy=jnp.where(accepted, e1, chain.energy),
        grad=jnp.where(_per_row(accepted, x0), g1, chain.grad),
    )
    return new, accept_prob


def _anneal(
    energy_fn: EnergyFn, *, base_std: float, num_leapfrog: int, adapt: bool, target_accept: float
) -> Callable[..., tuple[Array, Array, Array]]:
    """The pure annealing run ``(key, x0, betas, step_sizes) -> (log_w, accept, steps)``.

    ``betas`` is the path in the order travelled (ascending for forward AIS,
    descending for reverse); the transition after the last increment is skipped.
    With ``adapt``, ``step_sizes[0]`` is the initial value and each temperature's
    step size is nudged towards ``target_accept`` (used for pilot runs only:
    adapting inside the estimating run would make the weights inexact).
    """

    def run(rng_key, x0, betas, step_sizes):
        e0, g0 = per_row_energy_and_grad(energy_fn, x0)
        chain = _Chain(x0, e0, g0)
        log_w = jnp.zeros(x0.shape[:1], jnp.float32)
        keys = jax.random.split(rng_key, betas.shape[0] - 2)

        def body(carry, inputs):
            chain, log_w, log_eps = carry
            key, beta_prev, beta, eps = inputs
            # log f_β(x) − log f_β'(x) = −(β − β')(E(x) − E₀(x)), before moving x.
            log_w = log_w - (beta - beta_prev) * (chain.energy - _base_energy(chain.position, base_std))
            step = jnp.exp(log_eps) if adapt else eps
            chain, acc = _hmc_step(key, chain, energy_fn, beta, step, base_std, num_leapfrog)
            used = step
            if adapt:
                mean_acc = jnp.mean(acc)
                log_eps = log_eps + jnp.clip(mean_acc - target_accept, -0.8, 0.8)
                used = jnp.exp(log_eps)
            return (chain, log_w, log_eps), (jnp.mean(acc), used)

        init = (chain, log_w, jnp.log(step_sizes[0]))
        inputs = (keys, betas[:-2], betas[1:-1], step_sizes[1:-1])
        (chain, log_w, _), (acc, used) = jax.lax.scan(body, init, inputs)
        log_w = log_w - (betas[-1] - betas[-2]) * (chain.energy - _base_energy(chain.position, base_std))
        return log_w, acc, used

    return run


def _log_mean_exp_and_stderr(log_w: np.ndarray) -> tuple[float, float, float]:
    m = np.max(log_w)
    w = np.exp(log_w - m)
    n = len(w)
    mean = np.mean(w)
    stderr = float(np.std(w, ddof=1) / (math.sqrt(n) * mean)) if n > 1 else math.inf
    ess = float(np.sum(w) ** 2 / np.sum(w**2))
    return float(m + np.log(mean)), stderr, ess


def _check_positive(name: str, value: Any) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def _step_size_schedule(
    rng_key: PRNGKey, energy_fn: EnergyFn, event_shape: tuple[int, ...], betas: np.ndarray,
    hmc_step_size: Any, *, base_std: float, num_leapfrog: int, adapt: bool,
    num_pilot_chains: int, target_accept: float,
) -> np.ndarray:
    """Per-temperature step sizes ``[T + 1]`` aligned with ascending ``betas``."""
    steps = np.asarray(hmc_step_size, dtype=np.float64)
    if steps.ndim == 1:
        if steps.shape != betas.shape:
            raise ValueError(
                f"hmc_step_size has {steps.shape[0]} entries; a per-temperature schedule "
                f"needs num_temperatures + 1 = {betas.shape[0]}"
            )
        if not np.all(steps > 0):
            raise ValueError("hmc_step_size entries must be positive")
        return steps
    steps = np.full(betas.shape, _check_positive("hmc_step_size", steps))
    if not adapt:
        return steps
    # A pilot run with its own key chooses the step sizes; the estimate then uses
    # them frozen, so its weights are exact.
    run = jax.jit(_anneal(energy_fn, base_std=base_std, num_leapfrog=num_leapfrog, adapt=True,
                          target_accept=target_accept))
    key_x, key_run = jax.random.split(rng_key)
    x0 = base_std * jax.random.normal(key_x, (num_pilot_chains, *event_shape), jnp.float32)
    _, _, used = run(key_run, x0, jnp.asarray(betas, jnp.float32), jnp.asarray(steps, jnp.float32))
    used = np.asarray(used, dtype=np.float64)
    return np.concatenate([used[:1], used, used[-1:]])


def _run(
    direction: str, rng_key: PRNGKey, energy_fn: EnergyFn, x0: Array, betas: np.ndarray,
    step_sizes: np.ndarray, *, base_std: float, num_leapfrog: int,
) -> AISResult:
    event_shape = tuple(x0.shape[1:])
    d = math.prod(event_shape)
    log_z_base = 0.5 * d * math.log(2.0 * math.pi * base_std**2)
    path, steps = (betas, step_sizes) if direction == "forward" else (betas[::-1], step_sizes[::-1])
    run = jax.jit(_anneal(energy_fn, base_std=base_std, num_leapfrog=num_leapfrog, adapt=False, target_accept=0.0))
    log_w, acc, _ = run(rng_key, x0, jnp.asarray(path, jnp.float32), jnp.asarray(steps, jnp.float32))
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    if not np.any(finite):
        raise FloatingPointError(f"AIS ({direction}): every chain's log-weight is non-finite; the energy overflows or is NaN")
    lme, stderr, ess = _log_mean_exp_and_stderr(log_w[finite])
    log_z = log_z_base + lme if direction == "forward" else log_z_base - lme
    return AISResult(
        log_z=float(log_z),
        stderr=stderr,
        log_weights=log_w,
        log_z_base=log_z_base,
        effective_sample_size=ess,
        acceptance_rate=float(np.mean(np.asarray(acc))),
        betas=np.asarray(betas, dtype=np.float64),
        step_sizes=np.asarray(step_sizes, dtype=np.float64),
        num_non_finite=int(np.sum(~finite)),
        direction=direction,
    )


def _betas(num_temperatures: int, schedule: Any) -> np.ndarray:
    if isinstance(schedule, str):
        return annealing_schedule(num_temperatures, schedule)
    betas = np.asarray(schedule, dtype=np.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("an explicit schedule must be increasing, start at 0.0 and end at 1.0")
    return betas


def ais_log_z(
    rng_key: PRNGKey,
    energy_fn: EnergyFn,
    event_shape: tuple[int, ...] | int,
    *,
    num_chains: int = 256,
    num_temperatures: int = 500,
    schedule: str | Any = "sigmoid",
    base_std: float = 1.0,
    hmc_step_size: float | Any = 0.1,
    num_leapfrog: int = 5,
    adapt_step_size: bool = True,
    num_pilot_chains: int = 32,
    target_accept: float = 0.9,
    reverse_samples: Any = None,
) -> AISResult:
    """Estimate ``log Z = log ∫ exp(−E(x)) dx`` by forward annealed importance sampling.

    Args:
        rng_key: a ``jax.random.key``.
        energy_fn: ``x[B, *event_shape] -> E[B]``, jit-able (e.g. ``model.energy``).
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(28, 28, 1)``.
        num_chains: independent annealing chains (the weights' sample size).
        num_temperatures: annealing steps ``T``; the estimate's bias and variance
            fall roughly as ``1/T``.
        schedule: ``"sigmoid"``, ``"linear"`` or an explicit increasing array of
            betas from 0 to 1 (then ``num_temperatures`` is ignored).
        base_std: σ of the Gaussian base ``N(0, σ² I)``; pick it to cover the
            target's mass (too narrow or too wide both cost variance).
        hmc_step_size: the HMC step size: a number (the start value when
            ``adapt_step_size``), or ``[T + 1]`` per-temperature values (e.g. a
            previous result's ``step_sizes``), used as given.
        num_leapfrog: leapfrog steps per HMC transition (one transition per temperature).
        adapt_step_size: choose per-temperature step sizes by a pilot run of
            ``num_pilot_chains`` chains aiming at ``target_accept``; the estimating
            run then uses them unchanged, so its weights are exact.
        reverse_samples: exact samples ``[N, *event_shape]`` of ``exp(−E)/Z``; when
            given, reverse AIS runs too (same path and step sizes) and its upper
            bound is attached as ``result.reverse``.

    Returns:
        An :class:`AISResult`; ``log_z ± stderr`` is a stochastic lower bound.

    Raises:
        FloatingPointError: every chain's weight is non-finite.
    """
    event_shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(s) for s in event_shape)
    base_std = _check_positive("base_std", base_std)
    num_chains, num_leapfrog = int(num_chains), int(num_leapfrog)
    if num_chains < 2 or num_leapfrog < 1:
        raise ValueError(f"need num_chains >= 2 and num_leapfrog >= 1, got {num_chains} and {num_leapfrog}")
    betas = _betas(num_temperatures, schedule)
    key_pilot, key_x, key_run, key_rev = jax.random.split(rng_key, 4)
    step_sizes = _step_size_schedule(
        key_pilot, energy_fn, event_shape, betas, hmc_step_size, base_std=base_std,
        num_leapfrog=num_leapfrog, adapt=adapt_step_size, num_pilot_chains=int(num_pilot_chains),
        target_accept=float(target_accept),
    )
    x0 = base_std * jax.random.normal(key_x, (num_chains, *event_shape), jnp.float32)
    result = _run("forward", key_run, energy_fn, x0, betas, step_sizes, base_std=base_std, num_leapfrog=num_leapfrog)
    if reverse_samples is not None:
        reverse = reverse_ais_log_z(
            key_rev, energy_fn, reverse_samples, schedule=betas, base_std=base_std,
            hmc_step_size=step_sizes, num_leapfrog=num_leapfrog,
        )
        result = result._replace(reverse=reverse)
    return result


def reverse_ais_log_z(
    rng_key: PRNGKey,
    energy_fn: EnergyFn,
    samples: Any,
    *,
    num_temperatures: int = 500,
    schedule: str | Any = "sigmoid",
    base_std: float = 1.0,
    hmc_step_size: float | Any = 0.1,
    num_leapfrog: int = 5,
    adapt_step_size: bool = True,
    num_pilot_chains: int = 32,
    target_accept: float = 0.9,
) -> AISResult:
    """A stochastic *upper* bound on ``log Z`` by reverse AIS from exact target samples.

    The chains start at ``samples`` (which must be exact draws from
    ``exp(−E)/Z``; approximate ones void the bound) and anneal to the base.
    Arguments are those of :func:`ais_log_z`; one chain runs per sample. The
    step-size pilot, if any, runs forward from the base.
    """
    x0 = jnp.asarray(samples, jnp.float32)
    if x0.ndim < 2 or x0.shape[0] < 2:
        raise ValueError(f"samples must be [N >= 2, *event_shape], got shape {list(x0.shape)}")
    base_std = _check_positive("base_std", base_std)
    num_leapfrog = int(num_leapfrog)
    betas = _betas(num_temperatures, schedule)
    key_pilot, key_run = jax.random.split(rng_key)
    step_sizes = _step_size_schedule(
        key_pilot, energy_fn, tuple(x0.shape[1:]), betas, hmc_step_size, base_std=base_std,
        num_leapfrog=num_leapfrog, adapt=adapt_step_size, num_pilot_chains=int(num_pilot_chains),
        target_accept=float(target_accept),
    )
    return _run("reverse", key_run, energy_fn, x0, betas, step_sizes, base_std=base_std, num_leapfrog=num_leapfrog)
