"""Behaviour checks of an energy.

The energy builds on some event shape (the one given, or the first of
:data:`DEFAULT_EVENT_SHAPES` it accepts), returns finite float energies ``E[B]``,
and is jit-able, deterministic, free of batch statistics and differentiable
in its input.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.common import _BATCH, _TOL, _context
from ebmkit.testing.conformance.recorder import _Recorder, _require

#: Event shapes tried, in order, when an energy is checked without one: a 2-D
#: point first, then small images (``H, W, C``) for convolutional energies.
DEFAULT_EVENT_SHAPES: tuple[tuple[int, ...], ...] = ((2,), (16, 16, 1), (32, 32, 3))


def _energy_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder, event_shape: tuple[int, ...] | None) -> None:
    from flax import nnx

    shapes = [tuple(event_shape)] if event_shape is not None else list(DEFAULT_EVENT_SHAPES)
    module, shape, x, energy = None, None, None, None
    with rec.check("create(cfg, ctx) builds and evaluates on some event shape", fatal=True):
        attempts = []
        for candidate in shapes:
            try:
                # Two classes: a conditional energy (classifier) takes K from the data.
                module = spec.create(cfg, _context(candidate, num_classes=2))
                x = jax.random.normal(jax.random.key(1), (_BATCH, *candidate), jnp.float32)
                energy = module(x)
            except Exception as exc:  # noqa: BLE001 - try the next shape, report all
                attempts.append(f"event_shape={candidate}: {type(exc).__name__}: {exc}")
                module = None
                continue
            shape = candidate
            break
        _require(module is not None, "; ".join(attempts))
    with rec.check("build returns an nnx.Module"):
        _require(isinstance(module, nnx.Module), f"got {type(module).__name__}")
    with rec.check("output is float E[B]", fatal=True):
        _require(hasattr(energy, "shape") and energy.shape == (_BATCH,), f"x{tuple(x.shape)} gave shape {getattr(energy, 'shape', None)}, expected ({_BATCH},)")
        _require(jnp.issubdtype(energy.dtype, jnp.floating), f"dtype {energy.dtype} is not floating")
        _require(bool(jnp.all(jnp.isfinite(energy))), f"non-finite energies {energy}")
    # Everything below runs compiled: eager NNX calls compile op by op, which is
    # slow for convolutional energies, and jit is how training calls them anyway.
    graphdef, state = nnx.split(module)

    @jax.jit
    def apply(state: Any, x_: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(x_)

    jitted = None
    with rec.check("jit-able via nnx.split/merge + jax.jit, matching eager", fatal=True):
        jitted = apply(state, x)
        _require(np.allclose(jitted, energy, **_TOL), f"jit {jitted} != eager {energy}")
    with rec.check("deterministic (same input, same energy)"):
        _require(np.array_equal(apply(state, x), jitted), "two calls on the same batch differ")
    with rec.check("rows independent (no batch statistics)"):
        rows = jnp.concatenate([apply(state, x[i : i + 1]) for i in range(_BATCH)])
        _require(np.allclose(rows, jitted, **_TOL), f"batched {jitted} != row by row {rows}")
        perturbed = apply(state, x.at[0].add(1.0))
        _require(np.allclose(perturbed[1:], jitted[1:], **_TOL), "changing row 0 changed other rows")
    with rec.check("gradient dE/dx is finite with the input's shape"):
        grad = jax.jit(jax.grad(lambda s, x_: jnp.sum(apply(s, x_)), argnums=1))(state, x)
        _require(grad.shape == x.shape, f"grad shape {grad.shape} != {x.shape}")
        _require(bool(jnp.all(jnp.isfinite(grad))), "non-finite gradient")
    rec.passed.append(f"(energy checked with event_shape={shape})")
