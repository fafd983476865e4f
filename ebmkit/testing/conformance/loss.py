"""Behaviour checks of a loss, and the order the loss checks run in.

The loss builds from its config with the slots it ``needs``, returns
``(loss, metrics, ctx)`` with a finite scalar loss and every required or
declared metric, keeps its own state's and the buffer's structure, is jit-able
and gives finite, non-zero gradients. It is checked with ebmkit's own sampler
(``langevin``) and buffer (``replay``), so that a failure is the loss's, not its
partners'. The loss's known-answer checks run from here too: no gradient
through the chains (:mod:`~ebmkit.testing.conformance.loss_chains`), write-back into the
buffer (:mod:`~ebmkit.testing.conformance.loss_write_back`) and recovery of a
Gaussian (:mod:`~ebmkit.testing.conformance.loss_known_answer`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit import registry
from ebmkit.errors import ComponentConflictError
from ebmkit.registry import ComponentSpec
from ebmkit.testing.conformance.common import _CHAINS, _TOL, _context
from ebmkit.testing.conformance.loss_chains import _chain_checks, _ChainProbe
from ebmkit.testing.conformance.loss_known_answer import (
    _KA_BUFFER,
    _energy_params,
    _known_answer_check,
    _quadratic_energy,
)
from ebmkit.testing.conformance.loss_write_back import _RecordingBuffer, _write_back_check
from ebmkit.testing.conformance.recorder import _Recorder, _require
from ebmkit.testing.conformance.sampler import _gaussian_energy
from ebmkit.types import LOSS_SLOTS, Batch, BuildContext, LossContext, OwnsParameters, OwnsState

#: Metrics every loss reports; anything else is optional and declared on the
#: loss (:class:`~ebmkit.types.DeclaresMetrics`).
REQUIRED_LOSS_METRICS = ("loss",)

# Loss behaviour checks: chain length of the loss context. The leak a gradient
# through the chains adds grows with K * step_size; 5 Langevin steps of the
# default size make it a few per cent of the gradient, far above round-off.
_LOSS_CHECK_STEPS = 5


def _reference_component(kind: str, name: str, data: BuildContext, **fields: Any) -> Any:
    """A built-in component the loss checks run with, resolved through the registry."""
    try:
        spec = registry.get_spec(kind, name)
    except ComponentConflictError:
        # Another plugin offers the same name: the built-in is the reference.
        spec = registry.get_spec(kind, f"ebmkit-jax:{name}")
    return spec.create(spec.config(**fields), data)


def _loss_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    from ebmkit.training.step import make_loss_context

    needs: frozenset[str] = frozenset()
    with rec.check("needs_of(config) names known slots", fatal=True):
        needs = spec.needs_of(cfg)
        _require(needs <= set(LOSS_SLOTS), f"needs {sorted(needs)} must be a subset of {LOSS_SLOTS}")
    labelled = "labels" in needs
    num_classes = 2 if labelled else None
    data = _context((2,), num_classes=num_classes)
    loss_fn = None
    with rec.check("create(cfg, ctx) returns (rng_key, energy_fn, batch, ctx) -> ...", fatal=True):
        loss_fn = spec.create(cfg, data)
        _require(callable(loss_fn), f"{type(loss_fn).__name__} is not callable")
        inspect.signature(loss_fn).bind(jax.random.key(0), _gaussian_energy, Batch(None), LossContext())
    sampler = buffer = None
    if needs & {"sampler", "buffer"}:
        # The loss is checked with ebmkit's own sampler and buffer, so that a
        # failure is the loss's, not its partners'.
        with rec.check("reference sampler (langevin) and buffer (replay) from the registry", fatal=True):
            if "sampler" in needs:
                sampler = _reference_component("sampler", "langevin", data)
            if "buffer" in needs:
                buffer = _reference_component("buffer", "replay", data, **_KA_BUFFER)
    loss_params = loss_state = None
    if isinstance(loss_fn, (OwnsParameters, OwnsState)):
        with rec.check("init_params / init_state give the loss's own parameters and state", fatal=True):
            if isinstance(loss_fn, OwnsParameters):
                loss_params = loss_fn.init_params(jax.random.key(10), data)
            if isinstance(loss_fn, OwnsState):
                loss_state = loss_fn.init_state(jax.random.key(11), data)
    declared = getattr(loss_fn, "metrics", None)

    energy_params = _energy_params((0.5, -0.5), 1.0, num_classes)
    trainable = (energy_params, loss_params)
    x_pos = jax.random.normal(jax.random.key(1), (_CHAINS, 2), jnp.float32)
    y = jax.random.randint(jax.random.key(3), (_CHAINS,), 0, num_classes) if labelled else None
    batch = Batch(x_pos, y)
    buffer_state = None if buffer is None else buffer.init(jax.random.key(0), jnp.zeros((2,), jnp.float32))
    args = (jax.random.key(2), batch, buffer_state, loss_state)
    # One sampler and buffer serve every call: the probe can detach the chains
    # (a traced flag, so one compiled program computes both gradients) and
    # tells which energy a chain evaluates; the recorder sees the slots.
    probe = None if sampler is None else _ChainProbe(sampler)
    recorder = None if buffer is None else _RecordingBuffer(buffer)
    in_chain: list[bool] = []
    returned: list[Any] = []

    def objective(trainable: Any, detach: Any, rng_key: jax.Array, batch: Batch, buffer_state: Any, state: Any):
        energy_params, params = trainable
        if probe is not None:
            probe.detach = detach
        ctx = make_loss_context(
            sampler=probe,
            sample_energy_fn=partial(_quadratic_energy, jax.lax.stop_gradient(energy_params)),
            buffer=recorder,
            buffer_state=buffer_state,
            num_steps=_LOSS_CHECK_STEPS if probe is not None else None,
            params=params,
            state=state,
            data=data,
        )

        def energy_fn(x: jax.Array, y: Any = None) -> jax.Array:
            in_chain.append(probe is not None and probe.depth > 0)
            return _quadratic_energy(energy_params, x, y)

        out = loss_fn(rng_key, energy_fn, batch, ctx)
        returned.append(out)
        _require(
            isinstance(out, tuple) and len(out) == 3,
            f"returned {type(out).__name__}{f' of length {len(out)}' if isinstance(out, tuple) else ''}, "
            "expected (loss, metrics, ctx)",
        )
        value, metrics, new_ctx = out
        return value, (metrics, getattr(new_ctx, "buffer_state", None), getattr(new_ctx, "state", None))

    eager = None
    with rec.check("returns (loss, metrics, ctx) with ctx a LossContext", fatal=True):
        eager = objective(trainable, False, *args)
        jax.effects_barrier()
        out = returned[-1]
        _require(isinstance(out[2], LossContext), f"third value is {type(out[2]).__name__}, expected LossContext")
    loss, (metrics, new_buffer_state, new_state) = eager
    with rec.check("loss is a finite scalar"):
        _require(jnp.shape(loss) == (), f"loss shape {jnp.shape(loss)}")
        _require(bool(jnp.isfinite(loss)), f"loss is {loss}")
    with rec.check("metrics include loss and every declared metric, as finite scalars"):
        _require(isinstance(metrics, Mapping), f"metrics is {type(metrics).__name__}")
        if declared is not None:
            _require(
                isinstance(declared, tuple) and all(isinstance(k, str) for k in declared),
                f"{type(loss_fn).__name__}.metrics must be a tuple of names, got {declared!r}",
            )
        expected = [*REQUIRED_LOSS_METRICS, *(k for k in declared or () if k not in REQUIRED_LOSS_METRICS)]
        missing = [k for k in expected if k not in metrics]
        _require(not missing, f"missing metrics {missing} (required or declared); got {sorted(metrics)}")
        for k, v in metrics.items():
            _require(jnp.shape(v) == (), f"metric {k!r} has shape {jnp.shape(v)}, expected a scalar")
        for k in expected:
            _require(bool(jnp.isfinite(metrics[k])), f"metric {k!r} is {metrics[k]}")
        _require(np.allclose(metrics["loss"], loss, **_TOL), f"metrics['loss'] {metrics['loss']} != loss {loss}")
    if loss_state is not None:
        with rec.check("returned ctx.state keeps the loss state's structure and shapes"):
            before = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), loss_state)
            after = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), new_state)
            _require(before == after, f"loss state changed from {before} to {after}")
    if buffer is not None:
        with rec.check("buffer state keeps its structure and shapes"):
            before = jax.tree.map(lambda a: (a.shape, a.dtype), buffer_state)
            after = jax.tree.map(lambda a: (a.shape, a.dtype), new_buffer_state)
            _require(before == after, f"buffer state changed from {before} to {after}")
        _write_back_check(recorder, buffer_state, new_buffer_state, rec)

    value_and_grad = jax.jit(jax.value_and_grad(objective, has_aux=True))
    grads = None
    with rec.check("jit-able, and matches eager", fatal=True):
        (loss_j, (metrics_j, _, _)), grads = value_and_grad(trainable, False, *args)
        _require(np.allclose(loss_j, loss, rtol=1e-4, atol=1e-4), f"jit loss {loss_j} != eager {loss}")
        for k, v in metrics.items():
            _require(np.allclose(metrics_j[k], v, rtol=1e-3, atol=1e-4), f"jit metric {k!r} {metrics_j[k]} != eager {v}")
    with rec.check("gradient w.r.t. energy parameters is finite and non-zero"):
        leaves = jax.tree.leaves(grads[0])
        _require(all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), f"non-finite gradient {grads[0]}")
        _require(any(bool(jnp.any(g != 0)) for g in leaves), "gradient is zero everywhere")
    if loss_params is not None:
        with rec.check("gradient w.r.t. the loss's own parameters is finite"):
            leaves = jax.tree.leaves(grads[1])
            _require(all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), f"non-finite gradient {grads[1]}")

    if probe is not None:
        _chain_checks(value_and_grad, trainable, args, grads, in_chain, rec)

    if labelled:
        rec.skipped.append(
            "known answer (Gaussian recovery) not checked: the loss needs labels, and the "
            "reference problem is an unlabelled Gaussian"
        )
        return
    _known_answer_check(loss_fn, sampler, buffer, data, loss_params, loss_state, rec)
