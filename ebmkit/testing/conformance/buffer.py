"""Behaviour checks of a replay buffer.

``init``, ``sample`` and ``update`` keep shapes, dtypes and the state's
structure, draw slots in range, write where they are told, and are jit-able.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.common import _CHAINS, _context, _protocol_check
from ebmkit.testing.conformance.recorder import _Recorder, _require


def _buffer_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder, event_shape: tuple[int, ...] | None) -> None:
    shape = tuple(event_shape) if event_shape is not None else (2,)
    buffer = None
    with rec.check("create(cfg, ctx) returns a buffer", fatal=True):
        buffer = spec.create(cfg, _context(shape))
        for attr in ("init", "sample", "update"):
            _require(callable(getattr(buffer, attr, None)), f"{type(buffer).__name__} has no callable {attr!r}")
        cap = getattr(buffer, "capacity", None)
        _require(isinstance(cap, int) and not isinstance(cap, bool) and cap > 0, f"capacity is {cap!r}")
    _protocol_check("buffer", buffer, rec)
    n = min(_CHAINS, buffer.capacity)
    example = jnp.zeros(shape, jnp.float32)
    state = x0 = slots = None
    with rec.check("init and sample: x0[n, *event], int slots in range", fatal=True):
        state = buffer.init(jax.random.key(0), example)
        x0, slots = buffer.sample(jax.random.key(1), state, n)
        _require(x0.shape == (n, *shape), f"x0 shape {x0.shape} != {(n, *shape)}")
        _require(x0.dtype == example.dtype, f"x0 dtype {x0.dtype} != {example.dtype}")
        _require(bool(jnp.all(jnp.isfinite(x0))), "non-finite chain starts")
        _require(slots.shape == (n,), f"slots shape {slots.shape} != ({n},)")
        _require(jnp.issubdtype(slots.dtype, jnp.integer), f"slots dtype {slots.dtype} is not an integer")
        _require(bool(jnp.all((slots >= 0) & (slots < buffer.capacity))), f"slots out of [0, {buffer.capacity}): {slots}")
    with rec.check("update keeps the state's structure and shapes"):
        written = jnp.arange(n, dtype=jnp.int32)
        x_new = jnp.full((n, *shape), 0.5, jnp.float32)
        new_state = buffer.update(state, x_new, written)
        before = jax.tree.map(lambda a: (a.shape, a.dtype), state)
        after = jax.tree.map(lambda a: (a.shape, a.dtype), new_state)
        _require(before == after, f"state changed from {before} to {after}")
        data = getattr(new_state, "data", None)
        if data is not None:
            _require(np.allclose(data[:n], x_new), "update did not write x into the given slots")
    with rec.check("init, sample and update are jit-able"):
        init = jax.jit(buffer.init)
        sample = jax.jit(buffer.sample, static_argnums=2)
        update = jax.jit(buffer.update)
        s = init(jax.random.key(0), example)
        x_j, slots_j = sample(jax.random.key(1), s, n)
        _require(np.allclose(x_j, x0) and np.array_equal(slots_j, slots), "jit sample differs from eager")
        s = update(s, x_j + 1.0, slots_j)
        _require(jax.tree.structure(s) == jax.tree.structure(state), "jit update changed the state's structure")
