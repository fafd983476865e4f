"""Behaviour and known-answer checks of a sampler on binary data.

A sampler whose spec declares ``binary`` among its ``supports`` is built in a
binary :class:`~ebmkit.types.BuildContext` and run on a small Ising energy
over ``{0, 1}^4`` whose 16 states are enumerated, so its law is known
exactly. Checked: ``init``, ``kernel`` and ``info`` keep their shapes; the
positions keep their dtype and hold only 0 and 1; the chains are the same
under ``jax.jit`` as eagerly, and a function of the key (same key, same
chains; another key, other chains); they move toward low energy; and, the
known answer, chains started at exact draws of the target still follow it
after :data:`_INVARIANCE_STEPS` steps, by total variation over all 16 states.

The bound on the total variation is non-asymptotic. With ``N`` independent
chains whose final states are exact draws from ``p``, the empirical law
``p̂`` has ``E|p̂_s − p_s| ≤ sqrt(p_s (1 − p_s) / N)`` (Jensen), so
``E TV(p̂, p) ≤ ½ Σ_s sqrt(p_s (1 − p_s) / N)``; and one chain moves TV by
at most ``1/N``, so (McDiarmid) ``P(TV > E TV + t) ≤ exp(−2 N t²)``. With
``t = sqrt(log(1/δ) / (2N))`` and ``δ`` = 10⁻⁶, a sampler that leaves ``p``
invariant fails with probability below 10⁻⁶.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.registry import ComponentSpec
from ebmkit.sampling import run_chain, warmup
from ebmkit.testing.conformance.common import _CHAINS, _protocol_check
from ebmkit.testing.conformance.recorder import _Recorder, _require, _rounded, _Skip
from ebmkit.testing.conformance.sampler import (
    _check_chain_summary,
    _check_kernel_info,
    _sampler_checks,
)
from ebmkit.types import Adaptive, BuildContext, Equilibrating, Support

# Name of the known-answer check, as reports list it.
BINARY_INVARIANT = "leaves a binary (Ising) target invariant (law over all states)"

#: Bits of the check's Ising target (2^4 = 16 states, enumerated).
_BITS = 4
_INVARIANCE_CHAINS = 16384
_INVARIANCE_STEPS = 20
#: False-alarm probability of the total-variation bound.
_FALSE_ALARM = 1e-6

# E(x) = −xᵀ W x − bᵀ x: couplings of both signs and fields that make the
# law uneven (its most likely states have p ≈ 0.16, its least p ≈ 0.006).
_W = np.array(
    [[0.0, 0.6, -0.4, 0.2], [0.6, 0.0, 0.3, -0.5], [-0.4, 0.3, 0.0, 0.4], [0.2, -0.5, 0.4, 0.0]],
    np.float32,
)
_B = np.array([0.5, -0.3, 0.2, -0.6], np.float32)


def _ising_energy(x: jax.Array, y: Any = None) -> jax.Array:
    """``−xᵀ W x − bᵀ x`` per row of ``x[B, 4]``."""
    w, b = jnp.asarray(_W), jnp.asarray(_B)
    return -jnp.einsum("bi,ij,bj->b", x, w, x) - x @ b


def _states() -> np.ndarray:
    """All ``2^_BITS`` states ``[S, _BITS]``, state ``s`` holding the bits of ``s`` (most significant first)."""
    return np.array(list(itertools.product((0.0, 1.0), repeat=_BITS)), np.float32)


def _exact_law() -> np.ndarray:
    """``p(s) ∝ exp(−E(s))`` over :func:`_states`, in float64."""
    s = _states()
    energy = -np.einsum("si,ij,sj->s", s, _W.astype(np.float64), s) - s @ _B.astype(np.float64)
    p = np.exp(-(energy - energy.min()))
    return p / p.sum()


def _state_index(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x).reshape(len(x), -1) @ (2 ** np.arange(_BITS)[::-1])).round().astype(int)


def total_variation_bound(p: np.ndarray, n: int, false_alarm: float = _FALSE_ALARM) -> float:
    """A bound the total variation between ``p`` and the empirical law of ``n``
    exact draws from it exceeds with probability below ``false_alarm``
    (Jensen for its mean, McDiarmid for its spread; see the module docstring)."""
    p = np.asarray(p, np.float64)
    return 0.5 * float(np.sum(np.sqrt(p * (1.0 - p) / n))) + math.sqrt(math.log(1.0 / false_alarm) / (2.0 * n))


def _binary_context() -> BuildContext:
    """The build context of the binary checks: ``{0, 1}^4`` in float32."""
    from flax import nnx

    return BuildContext(
        event_shape=(_BITS,), support=Support(kind="binary"), bounds=(0.0, 1.0), rngs=nnx.Rngs(0)
    )


def _require_binary(x: Any, dtype: Any, where: str) -> None:
    _require(x.dtype == dtype, f"{where} changed dtype {dtype} -> {x.dtype}")
    values = np.asarray(x)
    _require(
        np.all((values == 0) | (values == 1)),
        f"{where} holds values other than 0 and 1: {sorted(set(np.unique(values).tolist()) - {0.0, 1.0})[:5]}",
    )


def _sampler_checks_by_support(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    """The sampler checks of every support the spec declares: the continuous
    ones (a Gaussian target) and the binary ones (an Ising target)."""
    supported = spec.supported()
    if "continuous" in supported:
        _sampler_checks(spec, cfg, rec)
    if "binary" in supported:
        _binary_sampler_checks(spec, cfg, rec)
    if not {"continuous", "binary"} & set(supported):
        raise _Skip(
            f"no behaviour checks for samplers of {', '.join(supported)} data yet (only continuous and binary)"
        )


def _binary_sampler_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    sampler = None
    with rec.check("create(cfg, ctx) returns a sampler (binary data)", fatal=True):
        sampler = spec.create(cfg, _binary_context())
        for attr in ("init", "kernel"):
            _require(callable(getattr(sampler, attr, None)), f"{type(sampler).__name__} has no callable {attr!r}")
    with rec.check("has tunables (a mapping of names) and num_steps (binary data)", fatal=True):
        tunables = getattr(sampler, "tunables", None)
        _require(isinstance(tunables, Mapping), f"tunables is {tunables!r}, expected a mapping")
        _require(all(isinstance(k, str) for k in tunables), f"tunable names must be strings: {list(tunables)}")
        n = getattr(sampler, "num_steps", None)
        _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, f"num_steps is {n!r}, expected an int >= 0")
    _protocol_check("sampler", sampler, rec)
    tunables = dict(sampler.tunables)
    x = (jax.random.uniform(jax.random.key(1), (_CHAINS, _BITS)) < 0.5).astype(jnp.float32)
    with rec.check("init and one kernel step keep shapes and bits; info is per chain", fatal=True):
        state = sampler.init(x, _ising_energy)
        _require(state.position.shape == x.shape, f"init position {state.position.shape} != {x.shape}")
        _require(state.energy.shape == (_CHAINS,), f"init energy shape {state.energy.shape}")
        new, info = sampler.kernel(jax.random.key(2), state, _ising_energy, **tunables)
        _require(new.position.shape == x.shape, f"kernel position {new.position.shape} != {x.shape}")
        _require_binary(new.position, x.dtype, "the kernel's position")
        _check_kernel_info(info, "a finite Ising energy")

    def chain(rng_key: jax.Array, x0: jax.Array, tunables: dict[str, Any], num_steps: int = 3):
        return run_chain(rng_key, sampler, x0, _ising_energy, num_steps, **tunables)

    jitted_chain = jax.jit(chain, static_argnums=3)
    key = jax.random.key(3)
    eager = None
    with rec.check("run_chain on bits keeps shapes, bits and [B] diagnostics", fatal=True):
        eager = chain(key, x, tunables)
        final, summary = eager
        _require(final.shape == x.shape, f"final positions {final.shape} != {x.shape}")
        _require_binary(final, x.dtype, "run_chain's final positions")
        _check_chain_summary(summary)
    with rec.check("run_chain on bits under jax.jit (tunables traced) matches eager"):
        jitted, _ = jitted_chain(key, x, tunables, 3)
        _require(np.array_equal(jitted, eager[0]), "jit and eager chains differ")
    with rec.check("reproducible by key on bits: same key, same chains; another key, other chains"):
        # Many chains and steps, so that another key leaving all of them
        # where the first key did is (for a sampler that uses its key) all
        # but impossible.
        xs = jnp.tile(x, (64, 1))
        first, _ = jitted_chain(key, xs, tunables, 5)
        again, _ = jitted_chain(key, xs, tunables, 5)
        _require(np.array_equal(again, first), "the same key gave different chains")
        other, _ = jitted_chain(jax.random.key(33), xs, tunables, 5)
        _require(
            not np.array_equal(other, first),
            "another key gave the same chains (the kernel ignores rng_key, or draws from a fixed key)",
        )
    # One compiled run serves the last two checks (rows are independent
    # chains): n chains started at exact draws of the target, and _CHAINS at
    # its highest-energy state.
    states, p = _states(), _exact_law()
    n = _INVARIANCE_CHAINS
    draws = jax.random.choice(jax.random.key(5), len(p), (n,), p=jnp.asarray(p, jnp.float32))
    worst = states[int(np.argmin(p))]
    starts = jnp.concatenate([jnp.asarray(states)[draws], jnp.tile(jnp.asarray(worst)[None], (_CHAINS, 1))])
    steps = _INVARIANCE_STEPS + (int(sampler.equilibration_steps) if isinstance(sampler, Equilibrating) else 0)
    run = jax.jit(lambda k, x_, t: run_chain(k, sampler, x_, _ising_energy, steps, schedule=lambda i: {}, **t))
    results: list[Any] = []
    with rec.check("chains on bits move toward low energy (sign of the gradient)"):
        final, summary = run(jax.random.key(6), starts, tunables)
        results.append(final)
        start = float(jnp.mean(summary.initial_energy[n:]))
        end = float(jnp.mean(summary.final_energy[n:]))
        _require(end < start, f"mean energy went from {start:.3g} to {end:.3g} in {steps} steps from the least likely state")
    if not results:
        return
    with rec.check(BINARY_INVARIANT):
        final = np.asarray(results[0][:n])
        _require_binary(final, x.dtype, "the chains")
        empirical = np.bincount(_state_index(final), minlength=len(p)) / n
        tv = 0.5 * float(np.sum(np.abs(empirical - p)))
        bound = total_variation_bound(p, n)
        _require(
            tv <= bound,
            f"from exact draws of a 4-bit Ising target, {steps} steps of {n} chains at the default "
            f"tunables {tunables} ended {tv:.4f} in total variation from it (allowed {bound:.4f}; "
            f"exact law {_rounded(p, 3)}, chains' {_rounded(empirical, 3)}): the kernel does not "
            "leave the target invariant (proposal or acceptance ratio is off)",
        )
    if isinstance(sampler, Adaptive):
        with rec.check("adaptation (warmup) on bits runs and keeps its state's structure"):
            xw, adaptation = jax.jit(lambda k, x_: warmup(k, sampler, x_, _ising_energy, 5))(jax.random.key(7), x)
            _require(xw.shape == x.shape, f"warmup positions {xw.shape} != {x.shape}")
            _require_binary(xw, x.dtype, "warmup's positions")
            fresh = sampler.init_adaptation(x)
            _require(
                jax.tree.structure(adaptation) == jax.tree.structure(fresh),
                "adapt changed the adaptation state's structure",
            )
