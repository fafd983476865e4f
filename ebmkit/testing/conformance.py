"""Conformance checks a plugin author runs against their own components.

One suite, run over every member of a family (as optax runs one suite over all
its optimisers): the same checks apply to ebmkit's built-ins and to any
third-party plugin, with no special casing. The checks use only the contracts
in :mod:`ebmkit.types` and :mod:`ebmkit.data`.

Two layers:

* **spec checks** (every kind): the :class:`~ebmkit.registry.ComponentSpec` is
  valid (kind, name, API version, config base, keyword-only fields, reserved
  names); its config class builds with defaults, or documents the fields it
  requires; the default config survives ``structure(unstructure(cfg)) == cfg``,
  also through TOML and JSON text; no other component of the kind shares the
  config class (a resolved config remembers its component by its class).
* **behaviour checks** (per kind): the built component honours its contract on
  small inputs, eagerly and under ``jax.jit``.

Use from a plugin's own tests::

    from ebmkit.testing import conformance_test

    test_conformance = conformance_test(dist="my-plugin-dist")

or call :func:`check_component` / :func:`check_spec` directly; both raise
:class:`ConformanceError` (an ``AssertionError``) listing every failure.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, NamedTuple

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import tomli_w

from ebmkit import registry
from ebmkit.config.base import KIND_BASES
from ebmkit.config.converter import structure, unstructure
from ebmkit.errors import ComponentConflictError, EbmkitError, PluginLoadError
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import run_chain
from ebmkit.types import LossContext

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "RegisteredComponent",
    "DEFAULT_EVENT_SHAPES",
    "REQUIRED_LOSS_METRICS",
    "REQUIRED_SAMPLER_INFO",
    "check_component",
    "check_spec",
    "conformance_test",
    "iter_registered",
]

#: Event shapes tried, in order, when an energy is checked without one: a 2-D
#: point first, then small images (``H, W, C``) for convolutional energies.
DEFAULT_EVENT_SHAPES: tuple[tuple[int, ...], ...] = ((2,), (16, 16, 1), (32, 32, 3))
#: Metrics every loss reports (DESIGN.md, "Contracts").
REQUIRED_LOSS_METRICS = ("loss", "real_energy_mean", "fake_energy_mean", "energy_gap")
#: Per-chain diagnostics every sampler's ``info`` carries.
REQUIRED_SAMPLER_INFO = ("acceptance_rate", "grad_norm", "non_finite")

_BATCH = 4
_CHAINS = 8
_TOL = {"rtol": 1e-4, "atol": 1e-5}


class ConformanceError(AssertionError):
    """A component broke its contract. ``failures`` lists each broken check."""

    def __init__(self, subject: str, failures: Iterable[str]):
        self.subject = subject
        self.failures = tuple(failures)
        lines = [f"{subject} failed {len(self.failures)} conformance check(s):"]
        lines += [f"  - {f}" for f in self.failures]
        super().__init__("\n".join(lines))


@attrs.frozen
class ConformanceReport:
    """What a passing run checked.

    Attributes:
        subject: which component (kind, name, provider).
        passed: names of the checks that ran and passed.
        skipped: why behaviour checks did not run, if they did not (e.g. a
            data set whose config needs a user file). Spec checks always run.
    """

    subject: str
    passed: tuple[str, ...]
    skipped: tuple[str, ...] = ()


class _Skip(Exception):
    """Internal: the behaviour checks cannot run here (reason in args[0])."""


class _Stop(Exception):
    """Internal: a check failed that later checks of the same group need."""


class _Recorder:
    def __init__(self, subject: str):
        self.subject = subject
        self.passed: list[str] = []
        self.failures: list[str] = []
        self.skipped: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str, *, fatal: bool = False) -> Iterator[None]:
        """Run the body as one named check; an exception records a failure."""
        try:
            yield
        except (_Skip, _Stop):
            raise
        except Exception as exc:  # noqa: BLE001 - any exception is a failed check
            message = str(exc) if isinstance(exc, AssertionError) and str(exc) else f"{type(exc).__name__}: {exc}"
            self.failures.append(f"{name}: {message}")
            if fatal:
                raise _Stop from exc
        else:
            self.passed.append(name)

    def report(self) -> ConformanceReport:
        if self.failures:
            raise ConformanceError(self.subject, self.failures)
        return ConformanceReport(self.subject, tuple(self.passed), tuple(self.skipped))


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- spec checks ------------------------------------------------------------------------


def _required_fields(config: type) -> list[str]:
    return [a.name for a in attrs.fields(config) if a.init and a.default is attrs.NOTHING]


def _default_config(spec: ComponentSpec, rec: _Recorder) -> Any:
    """The default config, or ``None`` when it needs documented required fields."""
    required = _required_fields(spec.config)
    if required:
        with rec.check("config documents its required fields"):
            doc = inspect.getdoc(spec.config) or ""
            undocumented = [f for f in required if f not in doc]
            _require(
                not undocumented,
                f"{spec.config.__qualname__} has required fields {undocumented} that its "
                "docstring does not describe (give them defaults or document them under "
                "'Attributes:')",
            )
        rec.skipped.append(
            f"behaviour checks need a config: {spec.config.__qualname__} requires "
            f"{required}; pass config=... to check_spec or check_component to run them"
        )
        return None
    cfg = None
    with rec.check("config builds with defaults", fatal=True):
        cfg = spec.config()
    return cfg


def _shared_config_class(spec: ComponentSpec) -> list[str]:
    """Other components of the kind whose spec uses ``spec.config`` too."""
    reg = registry.get_registry(spec.kind)
    shared = []
    for name, providers in reg.all_providers().items():
        if name == spec.name:
            continue
        for p in providers:
            try:
                other = reg.load(p)
            except PluginLoadError:
                continue
            if other.config is spec.config:
                shared.append(p.qualified_name)
    return shared


def _spec_checks(spec: Any, rec: _Recorder) -> Any:
    """Spec-level checks; returns the default config (or ``None``)."""
    with rec.check("is a valid ComponentSpec", fatal=True):
        _require(isinstance(spec, ComponentSpec), f"expected a ComponentSpec, got {type(spec).__name__}")
        _require(
            spec.kind in registry.KIND_GROUPS,
            f"kind {spec.kind!r} is not one of {sorted(registry.KIND_GROUPS)}",
        )
        registry.validate_spec(spec, kind=spec.kind, name=spec.name, where=rec.subject)
    with rec.check("summary is one line of text"):
        _require(
            isinstance(spec.summary, str) and "\n" not in spec.summary,
            f"summary must be a single-line string, got {spec.summary!r}",
        )
    with rec.check("config class is not shared with another component"):
        shared = _shared_config_class(spec)
        _require(
            not shared,
            f"{spec.config.__qualname__} is also the config of {shared}; give each component "
            "its own config class (subclass a shared base), since a resolved config names "
            "its component through its class",
        )
    cfg = _default_config(spec, rec)
    if cfg is not None:
        _round_trip(spec, cfg, rec)
    return cfg


def _round_trip(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    base = KIND_BASES[spec.kind]
    # The overlay makes the plain name select exactly this spec, whether or not
    # it is installed, shadowed or in conflict with another provider.
    with registry.overlay(spec, replace=True):
        data = None
        with rec.check("structure(unstructure(cfg)) == cfg", fatal=True):
            data = unstructure(cfg)
            _require(data.get("name") == spec.name, f"unstructure names {data.get('name')!r}, not {spec.name!r}")
            back = structure(data, base)
            _require(back == cfg, f"round trip changed the config: {cfg!r} -> {back!r}")
        with rec.check("config round-trips through TOML and JSON text"):
            from_toml = tomllib.loads(tomli_w.dumps({"component": data}))["component"]
            from_json = json.loads(json.dumps(data))
            for fmt, loaded in (("TOML", from_toml), ("JSON", from_json)):
                back = structure(loaded, base)
                _require(back == cfg, f"{fmt} round trip changed the config: {cfg!r} -> {back!r}")


# -- behaviour: energy ------------------------------------------------------------------


def _energy_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder, event_shape: tuple[int, ...] | None) -> None:
    from flax import nnx

    with rec.check("build(cfg, event_shape=..., rngs=...) signature", fatal=True):
        inspect.signature(spec.build).bind(cfg, event_shape=(2,), rngs=None)
    shapes = [tuple(event_shape)] if event_shape is not None else list(DEFAULT_EVENT_SHAPES)
    module, shape, x, energy = None, None, None, None
    with rec.check("builds and evaluates on some event shape", fatal=True):
        attempts = []
        for candidate in shapes:
            try:
                module = spec.build(cfg, event_shape=candidate, rngs=nnx.Rngs(0))
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


# -- behaviour: sampler -----------------------------------------------------------------


def _gaussian_energy(x: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum(x**2, axis=tuple(range(1, x.ndim)))


def _sampler_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    sampler = None
    with rec.check("build(cfg) returns a sampler", fatal=True):
        sampler = spec.build(cfg)
        for attr in ("init", "kernel"):
            _require(callable(getattr(sampler, attr, None)), f"{type(sampler).__name__} has no callable {attr!r}")
    with rec.check("has tunables (a mapping of names) and num_steps", fatal=True):
        tunables = getattr(sampler, "tunables", None)
        _require(isinstance(tunables, Mapping), f"tunables is {tunables!r}, expected a mapping")
        _require(all(isinstance(k, str) for k in tunables), f"tunable names must be strings: {list(tunables)}")
        n = getattr(sampler, "num_steps", None)
        _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, f"num_steps is {n!r}, expected an int >= 0")
    tunables = dict(sampler.tunables)
    x = 2.0 * jax.random.normal(jax.random.key(1), (_CHAINS, 2), jnp.float32)
    with rec.check("init and one kernel step keep shapes; info is per chain", fatal=True):
        state = sampler.init(x, _gaussian_energy)
        _require(state.position.shape == x.shape, f"init position {state.position.shape} != {x.shape}")
        _require(state.energy.shape == (_CHAINS,), f"init energy shape {state.energy.shape}")
        new, info = sampler.kernel(jax.random.key(2), state, _gaussian_energy, **tunables)
        _require(new.position.shape == x.shape, f"kernel position {new.position.shape} != {x.shape}")
        _require(new.position.dtype == x.dtype, f"kernel changed dtype {x.dtype} -> {new.position.dtype}")
        for field in REQUIRED_SAMPLER_INFO:
            value = getattr(info, field, None)
            _require(value is not None, f"info has no {field!r} ({type(info).__name__})")
            _require(jnp.shape(value) == (_CHAINS,), f"info.{field} shape {jnp.shape(value)}, expected ({_CHAINS},)")
        _require(info.non_finite.dtype == jnp.bool_, f"info.non_finite dtype {info.non_finite.dtype}, expected bool")
        acc = np.asarray(info.acceptance_rate)
        _require(np.all((acc >= 0) & (acc <= 1)), f"acceptance_rate outside [0, 1]: {acc}")
        _require(not np.any(info.non_finite), "non_finite set on a standard Gaussian")

    def chain(rng_key: jax.Array, x0: jax.Array, tunables: dict[str, Any], num_steps: int = 3):
        return run_chain(rng_key, sampler, x0, _gaussian_energy, num_steps, **tunables)

    key = jax.random.key(3)
    eager = None
    with rec.check("run_chain keeps shapes and reports [B] diagnostics", fatal=True):
        eager = chain(key, x, tunables)
        final, summary = eager
        _require(final.shape == x.shape, f"final positions {final.shape} != {x.shape}")
        _require(bool(jnp.all(jnp.isfinite(final))), "non-finite positions on a standard Gaussian")
        for field, value in summary._asdict().items():
            _require(value.shape == (_CHAINS,), f"summary.{field} shape {value.shape}")
    with rec.check("run_chain under jax.jit (tunables traced) matches eager"):
        final, _ = eager
        jitted, _ = jax.jit(chain, static_argnums=3)(key, x, tunables, 3)
        _require(np.allclose(jitted, final, rtol=1e-4, atol=1e-4), "jit and eager chains differ")
        again, _ = jax.jit(chain, static_argnums=3)(key, x, tunables, 3)
        _require(np.array_equal(again, jitted), "same key gave different chains")
    with rec.check("chains move toward low energy (sign of the gradient)"):
        far = jnp.full((_CHAINS, 2), 4.0, jnp.float32)
        final, summary = jax.jit(chain, static_argnums=3)(jax.random.key(4), far, tunables, 100)
        start, end = float(jnp.mean(summary.initial_energy)), float(jnp.mean(summary.final_energy))
        _require(end < start, f"mean energy went from {start:.3g} to {end:.3g} in 100 steps from x=4")


# -- behaviour: buffer ------------------------------------------------------------------


def _buffer_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder, event_shape: tuple[int, ...] | None) -> None:
    shape = tuple(event_shape) if event_shape is not None else (2,)
    buffer = None
    with rec.check("build(cfg, event_shape=..., bounds=None) returns a buffer", fatal=True):
        inspect.signature(spec.build).bind(cfg, event_shape=shape, bounds=None)
        buffer = spec.build(cfg, event_shape=shape, bounds=None)
        for attr in ("init", "sample", "update"):
            _require(callable(getattr(buffer, attr, None)), f"{type(buffer).__name__} has no callable {attr!r}")
        cap = getattr(buffer, "capacity", None)
        _require(isinstance(cap, int) and not isinstance(cap, bool) and cap > 0, f"capacity is {cap!r}")
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


# -- behaviour: loss --------------------------------------------------------------------


def _loss_context_parts(event_shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """The langevin sampler and replay buffer, resolved through the registry."""

    def get(kind: str, name: str) -> ComponentSpec:
        try:
            return registry.get_spec(kind, name)
        except ComponentConflictError:
            # Another plugin offers the same name: the built-in is the reference.
            return registry.get_spec(kind, f"ebmkit-jax:{name}")

    sampler_spec = get("sampler", "langevin")
    buffer_spec = get("buffer", "replay")
    sampler = sampler_spec.build(sampler_spec.config())
    buffer = buffer_spec.build(buffer_spec.config(), event_shape=event_shape, bounds=None)
    buffer_state = buffer.init(jax.random.key(0), jnp.zeros(event_shape, jnp.float32))
    return sampler, buffer, buffer_state


def _quadratic_energy(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    z = (x - params["mean"]) * jnp.exp(-params["log_scale"])
    return 0.5 * jnp.sum(z**2, axis=-1)


def _loss_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    loss_fn = None
    with rec.check("build(cfg) returns (rng_key, energy_fn, x_pos, ctx) -> ...", fatal=True):
        loss_fn = spec.build(cfg)
        _require(callable(loss_fn), f"{type(loss_fn).__name__} is not callable")
        inspect.signature(loss_fn).bind(jax.random.key(0), _gaussian_energy, None, None)
    parts = None
    with rec.check("langevin sampler and replay buffer from the registry", fatal=True):
        parts = _loss_context_parts((2,))
    sampler, buffer, buffer_state = parts
    params = {"mean": jnp.array([0.5, -0.5], jnp.float32), "log_scale": jnp.zeros((2,), jnp.float32)}
    x_pos = jax.random.normal(jax.random.key(1), (_CHAINS, 2), jnp.float32)
    returned: list[Any] = []

    def objective(params: Any, rng_key: jax.Array, x_pos: jax.Array, buffer_state: Any):
        ctx = LossContext(
            sampler=sampler,
            num_steps=3,
            tunables=dict(sampler.tunables),
            sample_energy_fn=partial(_quadratic_energy, jax.lax.stop_gradient(params)),
            buffer=buffer,
            buffer_state=buffer_state,
        )
        out = loss_fn(rng_key, partial(_quadratic_energy, params), x_pos, ctx)
        returned.append(out)
        loss, metrics, new_ctx = out
        return loss, (metrics, getattr(new_ctx, "buffer_state", None))

    value_and_grad = jax.value_and_grad(objective, has_aux=True)
    eager = None
    with rec.check("returns (loss, metrics, ctx) with ctx a LossContext", fatal=True):
        eager = value_and_grad(params, jax.random.key(2), x_pos, buffer_state)
        out = returned[-1]
        _require(isinstance(out, tuple) and len(out) == 3, f"returned {type(out).__name__} of length {len(out) if isinstance(out, tuple) else '?'}")
        _require(isinstance(out[2], LossContext), f"third value is {type(out[2]).__name__}, expected LossContext")
    (loss, (metrics, new_buffer_state)), grads = eager
    with rec.check("loss is a finite scalar"):
        _require(jnp.shape(loss) == (), f"loss shape {jnp.shape(loss)}")
        _require(bool(jnp.isfinite(loss)), f"loss is {loss}")
    with rec.check(f"metrics include {', '.join(REQUIRED_LOSS_METRICS)} as finite scalars"):
        _require(isinstance(metrics, Mapping), f"metrics is {type(metrics).__name__}")
        missing = [k for k in REQUIRED_LOSS_METRICS if k not in metrics]
        _require(not missing, f"missing metrics {missing}; got {sorted(metrics)}")
        for k, v in metrics.items():
            _require(jnp.shape(v) == (), f"metric {k!r} has shape {jnp.shape(v)}, expected a scalar")
        for k in REQUIRED_LOSS_METRICS:
            _require(bool(jnp.isfinite(metrics[k])), f"metric {k!r} is {metrics[k]}")
        _require(np.allclose(metrics["loss"], loss, **_TOL), f"metrics['loss'] {metrics['loss']} != loss {loss}")
    with rec.check("gradient w.r.t. energy parameters is finite and non-zero"):
        leaves = jax.tree.leaves(grads)
        _require(all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), f"non-finite gradient {grads}")
        _require(any(bool(jnp.any(g != 0)) for g in leaves), "gradient is zero everywhere")
    with rec.check("buffer state keeps its structure and shapes"):
        before = jax.tree.map(lambda a: (a.shape, a.dtype), buffer_state)
        after = jax.tree.map(lambda a: (a.shape, a.dtype), new_buffer_state)
        _require(before == after, f"buffer state changed from {before} to {after}")
    with rec.check("jit-able, and matches eager"):
        (loss_j, (metrics_j, _)), grads_j = jax.jit(value_and_grad)(params, jax.random.key(2), x_pos, buffer_state)
        _require(np.allclose(loss_j, loss, rtol=1e-4, atol=1e-4), f"jit loss {loss_j} != eager {loss}")
        for a, b in zip(jax.tree.leaves(grads_j), jax.tree.leaves(grads), strict=True):
            _require(np.allclose(a, b, rtol=1e-3, atol=1e-4), "jit gradient differs from eager")


# -- behaviour: dataset -----------------------------------------------------------------


def _dataset_checks(spec: ComponentSpec, cfg: Any, rec: _Recorder) -> None:
    from ebmkit.data import Dataset

    dataset = None
    with rec.check("build(cfg) returns an ebmkit.data.Dataset", fatal=True):
        try:
            dataset = spec.build(cfg)
        except (ImportError, OSError) as exc:
            # Optional dependency or data file missing: the environment, not the
            # plugin. Spec checks above still ran.
            raise _Skip(
                f"behaviour checks skipped: building {spec.name!r} with its default config "
                f"needs something this environment lacks ({type(exc).__name__}: {exc})"
            ) from exc
        _require(isinstance(dataset, Dataset), f"got {type(dataset).__name__}")
    event = None
    with rec.check("event_shape is a tuple of positive ints; modality is known", fatal=True):
        event = dataset.event_shape
        _require(
            isinstance(event, tuple) and all(isinstance(d, int) and d > 0 for d in event),
            f"event_shape is {event!r}",
        )
        _require(dataset.modality in ("points", "image"), f"modality is {dataset.modality!r}")
        b = dataset.bounds
        _require(b is None or (len(b) == 2 and b[0] < b[1]), f"bounds is {b!r}, expected None or (low, high)")
    n = 16
    x = None
    with rec.check("sample(rng, n) is float32[n, *event_shape] and finite", fatal=True):
        x = dataset.sample(np.random.default_rng(0), n)
        _require(isinstance(x, np.ndarray), f"got {type(x).__name__}, expected a numpy array")
        _require(x.shape == (n, *event), f"shape {x.shape} != {(n, *event)}")
        _require(x.dtype == np.float32, f"dtype {x.dtype}")
        _require(np.all(np.isfinite(x)), "non-finite samples")
    with rec.check("sample is reproducible with the same Generator seed"):
        _require(np.array_equal(dataset.sample(np.random.default_rng(0), n), x), "same seed, different samples")
    with rec.check("held_out(n) works and is reproducible"):
        held = dataset.held_out(8)
        _require(isinstance(held, np.ndarray), f"got {type(held).__name__}")
        _require(held.ndim == len(event) + 1 and held.shape[1:] == event, f"shape {held.shape}")
        _require(1 <= held.shape[0] <= 8, f"held_out(8) returned {held.shape[0]} rows")
        _require(held.dtype == np.float32 and np.all(np.isfinite(held)), "not finite float32")
        _require(np.array_equal(dataset.held_out(8), held), "two calls differ")
        if dataset.modality == "image":
            _require(held.min() >= -1 and held.max() <= 1, "image values outside [-1, 1]")


# -- public API -------------------------------------------------------------------------


def _subject(spec: Any, provider: registry.Provider | None = None) -> str:
    if not isinstance(spec, ComponentSpec):
        return f"{spec!r}"
    where = f" from {provider}" if provider is not None else ""
    return f"{spec.kind} {spec.name!r}{where}"


def check_spec(
    spec: ComponentSpec,
    *,
    event_shape: tuple[int, ...] | None = None,
    config: Any = None,
) -> ConformanceReport:
    """Check ``spec`` and the component it builds against ebmkit's contracts.

    The spec need not be installed: the checks make it selectable in-process
    for their duration.

    Args:
        spec: the plugin's :class:`~ebmkit.registry.ComponentSpec`.
        event_shape: the event shape energies and buffers are checked with;
            by default ``(2,)``, then small image shapes for energies.
        config: the config behaviour checks build with (default: the config
            class's defaults). Needed when the config has required fields.

    Returns:
        A :class:`ConformanceReport`; ``skipped`` says why behaviour checks did
        not run, if they did not.

    Raises:
        ConformanceError: listing every failed check.
    """
    return _run_checks(spec, _subject(spec), event_shape=event_shape, config=config)


def _run_checks(
    spec: Any, subject: str, *, event_shape: tuple[int, ...] | None, config: Any
) -> ConformanceReport:
    rec = _Recorder(subject)
    try:
        cfg = _spec_checks(spec, rec)
        if config is not None:
            with rec.check("given config is an instance of the spec's config class", fatal=True):
                _require(isinstance(config, spec.config), f"got {type(config).__name__}")
            if cfg is None:
                _round_trip(spec, config, rec)
            cfg, rec.skipped = config, []
        if cfg is not None:
            behaviour: dict[str, Callable[[], None]] = {
                "energy": lambda: _energy_checks(spec, cfg, rec, event_shape),
                "sampler": lambda: _sampler_checks(spec, cfg, rec),
                "buffer": lambda: _buffer_checks(spec, cfg, rec, event_shape),
                "loss": lambda: _loss_checks(spec, cfg, rec),
                "dataset": lambda: _dataset_checks(spec, cfg, rec),
            }
            behaviour[spec.kind]()
    except _Stop:
        pass
    except _Skip as skip:
        rec.skipped.append(str(skip))
    return rec.report()


def check_component(
    kind: str, name: str, *, event_shape: tuple[int, ...] | None = None, config: Any = None
) -> ConformanceReport:
    """Load the registered component ``name`` (plain or ``"dist:name"``) and check it.

    Raises:
        ConformanceError: it cannot be loaded, or it fails checks.
    """
    reg = registry.get_registry(kind)
    try:
        provider = reg.resolve(name)
        spec = reg.load(provider)
    except EbmkitError as exc:
        raise ConformanceError(f"{kind} {name!r}", [f"cannot be selected: {exc}"]) from exc
    return _run_checks(spec, _subject(spec, provider), event_shape=event_shape, config=config)


class RegisteredComponent(NamedTuple):
    """One selectable provider, as :func:`iter_registered` yields it.

    ``selector`` is the string that selects exactly this provider: the plain
    name, or ``"dist:name"`` when several distributions offer the name.
    """

    kind: str
    name: str
    selector: str
    dist: str
    version: str | None

    @property
    def id(self) -> str:
        """A short pytest id, e.g. ``sampler:mala``."""
        return f"{self.kind}:{self.selector}"


def iter_registered(
    kinds: Iterable[str] | None = None, *, dist: str | None = None
) -> list[RegisteredComponent]:
    """Every selectable component (installed or registered in-process).

    Reads entry-point metadata only: nothing is imported. Disabled providers
    (``EBMKIT_DISABLE_PLUGINS``) are left out.

    Args:
        kinds: restrict to these kinds (default: all).
        dist: restrict to one distribution (a plugin's own tests).
    """
    out = []
    for kind in kinds or registry.KIND_GROUPS:
        reg = registry.get_registry(kind)
        for name, providers in reg.all_providers().items():
            for p in providers:
                if dist is not None and registry.normalize_dist(p.dist) != registry.normalize_dist(dist):
                    continue
                selector = p.qualified_name if len(providers) > 1 else name
                out.append(RegisteredComponent(kind, name, selector, p.dist, p.version))
    return out


def conformance_test(
    kinds: Iterable[str] | None = None,
    *,
    dist: str | None = None,
    specs: Iterable[ComponentSpec] = (),
    event_shape: tuple[int, ...] | None = None,
) -> Callable[[Any], None]:
    """A pytest test function parametrized over registered components.

    Assign it to a ``test_*`` name in a test module::

        test_conformance = conformance_test(dist="ebmkit-mala")

    Args:
        kinds: restrict to these kinds.
        dist: restrict to one distribution's components.
        specs: extra, not necessarily installed, specs to check as well.
        event_shape: passed to :func:`check_spec`.
    """
    import pytest

    params = [pytest.param(c, id=c.id) for c in iter_registered(kinds, dist=dist)]
    params += [pytest.param(s, id=f"{s.kind}:{s.name}") for s in specs]

    @pytest.mark.parametrize("component", params)
    def test_conformance(component: RegisteredComponent | ComponentSpec) -> None:
        if isinstance(component, ComponentSpec):
            report = check_spec(component, event_shape=event_shape)
        else:
            report = check_component(component.kind, component.selector, event_shape=event_shape)
        if report.skipped:
            pytest.skip(f"{report.subject}: spec checks passed; " + "; ".join(report.skipped))

    return test_conformance
