"""Behaviour and known-answer checks of a sampler.

The sampler's ``init``, ``kernel`` and ``info`` keep their shapes on small
inputs, eagerly and under ``jax.jit``; its chains are a function of the key
(same key, same chains; another key, other chains), move toward low energy and
leave a Gaussian target's mean and variance invariant; an adaptive sampler's
warm-up keeps its state's structure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.registry import ComponentSpec
from ebmkit.sampling import run_chain, warmup
from ebmkit.testing.conformance.common import _CHAINS, _context, _protocol_check
from ebmkit.testing.conformance.recorder import _Recorder, _require, _rounded
from ebmkit.types import Adaptive, Equilibrating

#: Per-chain diagnostics every sampler's ``info`` carries.
REQUIRED_SAMPLER_INFO = ("acceptance_rate", "grad_norm", "non_finite")

# Name of the known-answer check, as reports list it.
INVARIANT = "leaves a Gaussian target invariant (mean and variance)"

# Sampler invariance: chains started at exact N(0, I) draws in 2-D.
_INVARIANCE_CHAINS = 16384
_INVARIANCE_STEPS = 20
#: Standard errors allowed: 5 keeps a false alarm below ~1e-6 per statistic.
_INVARIANCE_SIGMAS = 5.0


def _check_kernel_info(info: Any, target: str) -> None:
    """One kernel call's info: every required field per chain, ``non_finite``
    boolean and unset on a finite ``target``, acceptance in ``[0, 1]``."""
    for field in REQUIRED_SAMPLER_INFO:
        value = getattr(info, field, None)
        _require(value is not None, f"info has no {field!r} ({type(info).__name__})")
        _require(jnp.shape(value) == (_CHAINS,), f"info.{field} shape {jnp.shape(value)}, expected ({_CHAINS},)")
    _require(info.non_finite.dtype == jnp.bool_, f"info.non_finite dtype {info.non_finite.dtype}, expected bool")
    acc = np.asarray(info.acceptance_rate)
    _require(np.all((acc >= 0) & (acc <= 1)), f"acceptance_rate outside [0, 1]: {acc}")
    _require(not np.any(info.non_finite), f"non_finite set on {target}")


def _check_chain_summary(summary: Any) -> None:
    """``run_chain``'s summary: every diagnostic per chain."""
    for field in ("acceptance_rate", "grad_norm", "non_finite", "initial_energy", "final_energy"):
        value = getattr(summary, field)
        _require(value.shape == (_CHAINS,), f"summary.{field} shape {value.shape}")


def _gaussian_energy(x: jax.Array, y: Any = None) -> jax.Array:
    """``N(0, I)``: ``0.5 |x|^2`` per row."""
    return 0.5 * jnp.sum(x**2, axis=tuple(range(1, x.ndim)))


def _no_schedule(step_index: jax.Array) -> Mapping[str, Any]:
    """A constant schedule: the kernel runs at its default tunables throughout."""
    return {}


def _step_size_allowance(tunables: Mapping[str, Any]) -> float:
    """How far an unadjusted sampler's stationary variance may sit from 1.

    Unadjusted Langevin with step h on ``N(0, 1)`` is stationary at variance
    ``1 / (1 - h/2) ~ 1 + h/2``; allowing ``h`` covers it twice over and any
    other first-order scheme of the same step. Samplers without a scalar
    ``step_size`` get none (exact samplers have no bias to allow for).
    """
    h = tunables.get("step_size")
    try:
        return abs(float(h)) if h is not None and np.ndim(h) == 0 else 0.0
    except (TypeError, ValueError):
        return 0.0


def _sampler_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    sampler = None
    with rec.check("create(cfg, ctx) returns a sampler", fatal=True):
        sampler = spec.create(cfg, _context((2,)))
        for attr in ("init", "kernel"):
            _require(callable(getattr(sampler, attr, None)), f"{type(sampler).__name__} has no callable {attr!r}")
    with rec.check("has tunables (a mapping of names) and num_steps", fatal=True):
        tunables = getattr(sampler, "tunables", None)
        _require(isinstance(tunables, Mapping), f"tunables is {tunables!r}, expected a mapping")
        _require(all(isinstance(k, str) for k in tunables), f"tunable names must be strings: {list(tunables)}")
        n = getattr(sampler, "num_steps", None)
        _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, f"num_steps is {n!r}, expected an int >= 0")
    _protocol_check("sampler", sampler, rec)
    tunables = dict(sampler.tunables)
    x = 2.0 * jax.random.normal(jax.random.key(1), (_CHAINS, 2), jnp.float32)
    with rec.check("init and one kernel step keep shapes; info is per chain", fatal=True):
        state = sampler.init(x, _gaussian_energy)
        _require(state.position.shape == x.shape, f"init position {state.position.shape} != {x.shape}")
        _require(state.energy.shape == (_CHAINS,), f"init energy shape {state.energy.shape}")
        new, info = sampler.kernel(jax.random.key(2), state, _gaussian_energy, **tunables)
        _require(new.position.shape == x.shape, f"kernel position {new.position.shape} != {x.shape}")
        _require(new.position.dtype == x.dtype, f"kernel changed dtype {x.dtype} -> {new.position.dtype}")
        _check_kernel_info(info, "a standard Gaussian")

    def chain(rng_key: jax.Array, x0: jax.Array, tunables: dict[str, Any], num_steps: int = 3):
        return run_chain(rng_key, sampler, x0, _gaussian_energy, num_steps, **tunables)

    jitted_chain = jax.jit(chain, static_argnums=3)
    key = jax.random.key(3)
    eager = None
    with rec.check("run_chain keeps shapes and reports [B] diagnostics", fatal=True):
        eager = chain(key, x, tunables)
        final, summary = eager
        _require(final.shape == x.shape, f"final positions {final.shape} != {x.shape}")
        _require(bool(jnp.all(jnp.isfinite(final))), "non-finite positions on a standard Gaussian")
        _check_chain_summary(summary)
    with rec.check("run_chain under jax.jit (tunables traced) matches eager"):
        jitted, _ = jitted_chain(key, x, tunables, 3)
        _require(np.allclose(jitted, eager[0], rtol=1e-4, atol=1e-4), "jit and eager chains differ")
    with rec.check("reproducible by key: same key, same chains; another key, other chains"):
        first, _ = jitted_chain(key, x, tunables, 3)
        again, _ = jitted_chain(key, x, tunables, 3)
        _require(np.array_equal(again, first), "the same key gave different chains")
        other, _ = jitted_chain(jax.random.key(33), x, tunables, 3)
        _require(
            not np.array_equal(other, first),
            "another key gave the same chains (the kernel ignores rng_key, or draws from a fixed key)",
        )
    # One compiled run serves the last two checks (rows are independent
    # chains): n chains started at exact N(0, I) draws, and _CHAINS at x = 4.
    # Annealing is checked at the default (final) tunables: a schedule is meant
    # to move the law.
    n = _INVARIANCE_CHAINS
    starts = jnp.concatenate(
        [jax.random.normal(jax.random.key(5), (n, 2), jnp.float32), jnp.full((_CHAINS, 2), 4.0, jnp.float32)]
    )
    # A sampler with auxiliary state that starts out of equilibrium (replica
    # exchange's hot replicas) is invariant once that state has equilibrated.
    steps = _INVARIANCE_STEPS + (int(sampler.equilibration_steps) if isinstance(sampler, Equilibrating) else 0)
    run = jax.jit(
        lambda k, x_, t: run_chain(k, sampler, x_, _gaussian_energy, steps, schedule=_no_schedule, **t)
    )
    results: list[Any] = []
    with rec.check("chains move toward low energy (sign of the gradient)"):
        final, summary = run(jax.random.key(6), starts, tunables)
        results.append(final)
        start = float(jnp.mean(summary.initial_energy[n:]))
        end = float(jnp.mean(summary.final_energy[n:]))
        _require(end < start, f"mean energy went from {start:.3g} to {end:.3g} in {steps} steps from x=4")
    if not results:
        return
    with rec.check(INVARIANT):
        # A kernel that leaves N(0, I) invariant keeps every chain's marginal
        # N(0, I), and chains are independent, so the sample mean has standard
        # error 1/sqrt(n) and the sample variance sqrt(2/n).
        final = np.asarray(results[0][:n], np.float64)
        mean, var = final.mean(axis=0), final.var(axis=0)
        mean_tol = _INVARIANCE_SIGMAS / math.sqrt(n)
        var_tol = _INVARIANCE_SIGMAS * math.sqrt(2.0 / n) + _step_size_allowance(tunables)
        _require(np.all(np.isfinite(final)), "non-finite positions")
        _require(
            np.all(np.abs(mean) <= mean_tol) and np.all(np.abs(var - 1.0) <= var_tol),
            f"from exact N(0, I) starts, {steps} steps of {n} chains at the default "
            f"tunables {tunables} ended with mean {_rounded(mean, 4)} (allowed +-{mean_tol:.3f}) "
            f"and variance {_rounded(var, 4)} (allowed 1 +- {var_tol:.3f}): the kernel does "
            "not leave the target invariant (noise scale, drift or acceptance step is off)",
        )
    if isinstance(sampler, Adaptive):
        with rec.check("adaptation (warmup) runs and keeps its state's structure"):
            xw, adaptation = jax.jit(lambda k, x_: warmup(k, sampler, x_, _gaussian_energy, 5))(jax.random.key(7), x)
            _require(xw.shape == x.shape, f"warmup positions {xw.shape} != {x.shape}")
            fresh = sampler.init_adaptation(x)
            _require(
                jax.tree.structure(adaptation) == jax.tree.structure(fresh),
                "adapt changed the adaptation state's structure",
            )
