"""``EBM`` and ``DeepEBM``: an energy network wired to the components a run
needs (sampler, loss, replay buffer) and an optimiser, with the surface of
Artifex's EBM guide.

The module holds state; the work is done by pure functions compiled once:

* the training step of :mod:`ebmkit.training.step` — one ``jax.jit`` program;
* :meth:`EBM.generate` — fresh chains, one program per (n, shape, n_steps);
* :func:`ebmkit.nn.energy_programs` — energy and score in eval mode.

All of them take the model's state as a :class:`~ebmkit.training.TrainState`,
so the trainer can keep the state on the device and skip the module.

With ``train.ema_decay`` the model also holds a moving average of the energy's
parameters (:attr:`EBM.ema_params`), and :meth:`EBM.energy`, :meth:`EBM.score`,
``model(x)`` and :meth:`EBM.generate` — so every evaluation, diagnostic and
plot built on them — use the average (:attr:`EBM.evaluate_with`); training
(:meth:`EBM.train_step`, the trainer) and ``model.energy_net`` itself keep the
live parameters.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Mapping
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ebmkit.components import build_component, build_dataset, check_fits, data_context
from ebmkit.config import Config, load_config
from ebmkit.data import batch_from, check_batch
from ebmkit.nn import (
    BoxBaseMeasure,
    GaussianBaseMeasure,
    data_statistics,
    energy_programs,
    graphdefs,
    split_energy,
)
from ebmkit.nn.eval import GraphSnapshot
from ebmkit.sampling import BoundEnergy, run_chain, tunables_for, warmup
from ebmkit.training.optim import lr_schedule, make_optimizer
from ebmkit.training.step import TrainState, jitted_train_step, make_train_step
from ebmkit.types import Adaptive, Batch, BuildContext, FreshStarts, OwnsParameters, OwnsState

__all__ = ["EBM", "DeepEBM", "SampleBuffer", "SAMPLING_PRESETS", "sampling_preset"]

#: The guide's sampling presets: chain length, step size and noise.
SAMPLING_PRESETS: dict[str, dict[str, float]] = {
    "quick": {"n_steps": 20, "step_size": 0.02, "noise_scale": 0.01},
    "standard": {"n_steps": 60, "step_size": 0.01, "noise_scale": 0.005},
    "quality": {"n_steps": 200, "step_size": 0.005, "noise_scale": 0.001},
}


def sampling_preset(name: str) -> dict[str, float]:
    """The settings of a named preset (``quick``, ``standard``, ``quality``)."""
    if name not in SAMPLING_PRESETS:
        from ebmkit.suggest import did_you_mean

        hint = did_you_mean(name, SAMPLING_PRESETS)
        raise ValueError(
            f"unknown sampling preset {name!r}" + (f"; {hint}" if hint else "")
            + f" known: {', '.join(SAMPLING_PRESETS)}"
        )
    return dict(SAMPLING_PRESETS[name])


class BufferVar(nnx.Variable):
    """Replay-buffer state: device arrays, not parameters."""


class OptVar(nnx.Variable):
    """Optimiser state of the model's own optimiser."""


class KeyVar(nnx.Variable):
    """The model's MCMC key, split on every ``train_step``/``generate``."""


class LossParam(nnx.Variable):
    """Trainable parameters owned by the loss (optimised with the energy's)."""


class LossStateVar(nnx.Variable):
    """Non-trainable state owned by the loss."""


class SamplerStateVar(nnx.Variable):
    """An adaptive sampler's persistent adaptation state."""


class EmaParam(nnx.Variable):
    """The moving average of the energy's parameters (not optimised)."""


#: What :attr:`EBM.evaluate_with` accepts.
PARAMETER_SETS = ("ema", "live")


def _unwrap(tree: Any) -> Any:
    if tree is None:
        return None
    return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def _wrap(tree: Any, cls: type[nnx.Variable]) -> Any:
    if tree is None:
        return None
    return nnx.data(jax.tree.map(cls, tree))


def _stream_key(rngs: nnx.Rngs, *names: str) -> jax.Array:
    """A key from the first stream of ``names`` that ``rngs`` has, else params."""
    for name in (*names, "default", "params"):
        if name in rngs:
            return rngs[name]()
    raise ValueError("rngs has no usable stream; pass nnx.Rngs(0) or nnx.Rngs(params=0)")


def _check_finite(x: Any, what: str) -> None:
    # Checked on the host. A device array is copied out (zero-copy on CPU): that
    # waits only for the array itself, where a check computed on the device
    # would queue behind the steps already dispatched and stall the loop.
    host = np.asarray(x)
    bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
    if bad:
        raise ValueError(f"{what}: contains {bad} non-finite values (NaN or inf)")


def _labels_of(batch: Any, n: int, what: str) -> jax.Array | None:
    """The labels of a batch given as ``(x, y)``, a Batch, or a dict with ``label``/``y``."""
    y = None
    if isinstance(batch, tuple) and len(batch) == 2:
        y = batch[1]
    elif isinstance(batch, dict):
        y = batch.get("label", batch.get("y"))
    if y is None:
        return None
    y = np.asarray(y) if not isinstance(y, jax.Array) else y
    if tuple(y.shape) != (n,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{what}: labels must be integers of shape [{n}], got {y.dtype}{list(y.shape)}")
    return jnp.asarray(y, jnp.int32)


def _split_tunables(tunables: Mapping[str, Any]) -> tuple[dict[str, Any], tuple]:
    """Numbers travel as traced arguments (no recompile when they change);
    ``None`` and other structural values are static."""
    # numpy scalars: a jnp.asarray here is an eager dispatch per call (90 µs).
    traced = {k: np.float32(v) for k, v in tunables.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    static = tuple(sorted((k, v) for k, v in tunables.items() if k not in traced))
    return traced, static


@attrs.frozen(eq=False)
class UniformStarts:
    """Fresh chain starts uniform in the data box, for runs without a buffer.

    Attributes:
        low, high: the box (``[-1, 1]`` without data bounds).
        event_shape: shape of one sample.
        bits: draw uniform random bits instead (binary data).
    """

    low: Any
    high: Any
    event_shape: tuple[int, ...]
    bits: bool = False

    def fresh(self, rng_key: jax.Array, n: int) -> jax.Array:
        if self.bits:  # binary data: uniform random bits
            return jax.random.bernoulli(rng_key, 0.5, (n, *self.event_shape)).astype(jnp.float32)
        u = jax.random.uniform(rng_key, (n, *self.event_shape), jnp.float32)
        return jnp.asarray(self.low, jnp.float32) + (jnp.asarray(self.high, jnp.float32) - jnp.asarray(self.low, jnp.float32)) * u


@functools.lru_cache(maxsize=64)
def _jitted_generate(eval_graphdef, sampler, starts, n_samples, n_steps, static_tunables, info=True):
    def generate(params, rest, rng_key, advance, traced_tunables, labels):
        # With ``advance`` the key is the model's own: split it here, in the
        # compiled program (an eager split costs a dispatch per call), and hand
        # back its successor. Otherwise it is the caller's key, used as given.
        next_key, sub = jax.random.split(rng_key)
        rng_key = jax.lax.select(advance, sub, rng_key)
        init_key, chain_key = jax.random.split(rng_key)

        def energy_fn(x):
            # With labels, every chain runs on its class-conditional energy E(x, y).
            net = nnx.merge(eval_graphdef, params, rest)
            return net(x) if labels is None else net(x, labels)

        if labels is None:  # bound: samplers may use what the network offers beyond E(x)
            energy_fn = BoundEnergy(nnx.merge(eval_graphdef, params, rest))  # noqa: F811

        tunables = {**dict(static_tunables), **traced_tunables}
        x0 = starts.fresh(init_key, n_samples)
        adaptation = None
        if isinstance(sampler, Adaptive):
            # The adaptation phase of an adaptive sampler, on these chains.
            warmup_key, chain_key = jax.random.split(chain_key)
            x0, adaptation = warmup(warmup_key, sampler, x0, energy_fn, **tunables)
        # Without ``return_info`` nothing reads the energies at the final
        # positions: the chain skips evaluating them (K gradients, not K + 1).
        x, summary = run_chain(
            chain_key, sampler, x0, energy_fn, n_steps, adaptation=adaptation, final_energy=info, **tunables
        )
        return x, (summary if info else None), next_key

    return jax.jit(generate)


def _with_base_measure(energy: nnx.Module, config: Any, data: BuildContext, dataset_config: Any = None) -> nnx.Module:
    """``energy`` plus the configured base measure (unchanged for ``kind = "none"``)."""
    if config.kind == "none":
        return energy
    if config.kind == "box":
        return _with_box(energy, config, data, dataset_config)
    shape = tuple(data.event_shape)
    mean, std = config.mean, config.std
    if mean is None or std is None:
        reference = _statistics_context(data, dataset_config, "reference").reference
        if reference is None:
            raise ValueError(
                "base_measure: the data's mean and std are unknown (the model was built without a data set); "
                "set base_measure.mean and base_measure.std, or build the model with data=data_context(dataset)"
            )
        data_mean, data_std = data_statistics(reference, shape)
        mean = data_mean if mean is None else mean
        std = data_std if std is None else std
    try:
        mean = np.broadcast_to(np.asarray(mean, np.float64), shape)
        std = np.broadcast_to(np.asarray(std, np.float64), shape)
    except ValueError:
        raise ValueError(f"base_measure: mean and std must broadcast to the event shape {shape}") from None
    return GaussianBaseMeasure(energy, mean=mean, std=std, scale=config.scale)


def _statistics_context(data: BuildContext, dataset_config: Any, field: str) -> BuildContext:
    """``data``, or when it lacks ``field`` (built without a data set) the
    context of the config's own data set, if its events have the same shape."""
    if getattr(data, field) is not None or dataset_config is None:
        return data
    dataset = build_dataset(dataset_config)
    return data_context(dataset) if tuple(dataset.event_shape) == tuple(data.event_shape) else data


def _with_box(energy: nnx.Module, config: Any, data: BuildContext, dataset_config: Any) -> nnx.Module:
    """``energy`` plus walls at the data's box (``base_measure.kind = "box"``)."""
    shape = tuple(data.event_shape)
    low, high = config.low, config.high
    if low is None or high is None:
        bounds = _statistics_context(data, dataset_config, "bounds").bounds
        if bounds is None:
            raise ValueError(
                "base_measure: the data's box is unknown (the data set declares no bounds, or the model was built "
                "without one); set base_measure.low and base_measure.high"
            )
        low = bounds[0] if low is None else low
        high = bounds[1] if high is None else high
    # One number (or a one-entry list) stands for every coordinate.
    low, high = (np.asarray(v, np.float64) for v in (low, high))
    low, high = (v.reshape(()) if v.size == 1 else v for v in (low, high))
    try:
        low, high = np.broadcast_to(low, shape), np.broadcast_to(high, shape)
    except ValueError:
        raise ValueError(f"base_measure: low and high must broadcast to the event shape {shape}") from None
    if not np.all(low < high):
        raise ValueError(f"base_measure: every low must be < its high, got low={low.tolist()}, high={high.tolist()}")
    return BoxBaseMeasure(energy, low=low, high=high, width=config.width * (high - low))


def _resolve(config: Any) -> tuple[Config, tuple[int, ...] | None]:
    if config is None or isinstance(config, (Config, Mapping, str)) or hasattr(config, "__fspath__"):
        return (config if isinstance(config, Config) else load_config(config)), None
    to_ebmkit = getattr(config, "to_ebmkit", None)
    if to_ebmkit is None:
        raise TypeError(
            f"config must be an ebmkit Config, EBMConfig, DeepEBMConfig, a mapping or a file path; "
            f"got {type(config).__name__}"
        )
    return to_ebmkit()


class SampleBuffer:
    """The guide's view of the replay buffer (``model.sample_buffer``).

    ``buffer`` is the array of filled slots, so ``len(model.sample_buffer.buffer)``
    counts them; assigning ``[]`` (or calling :meth:`clear`) empties it.
    """

    def __init__(self, model: EBM):
        if model._buffer is None:
            raise AttributeError("this model has no replay buffer (its loss needs none)")
        self._model = model

    @property
    def capacity(self) -> int:
        return self._model._buffer.capacity

    @property
    def reinit_prob(self) -> float:
        return float(getattr(self._model.config.buffer, "reinit_prob", float("nan")))

    @property
    def buffer(self) -> jax.Array:
        state = _unwrap(self._model.buffer_state)
        filled = np.asarray(state.filled)
        return state.data[np.flatnonzero(filled)]

    @buffer.setter
    def buffer(self, value: Any) -> None:
        if value is None or len(value) == 0:
            self.clear()
            return
        x = check_batch(value, self._model.event_shape, "sample_buffer.buffer")
        if len(x) > self.capacity:
            raise ValueError(f"sample_buffer.buffer: {len(x)} samples exceed the capacity {self.capacity}")
        self.clear()
        state = _unwrap(self._model.buffer_state)
        slots = jnp.arange(len(x), dtype=jnp.int32)
        self._model.buffer_state = _wrap(self._model._buffer.update(state, x, slots), BufferVar)

    def clear(self) -> None:
        """Forget every stored chain (fresh starts from the init distribution)."""
        model = self._model
        model.buffer_state = _wrap(
            model._buffer.init(model._next_key(), jnp.zeros(model.event_shape, jnp.float32)), BufferVar
        )

    def __len__(self) -> int:
        return int(np.count_nonzero(np.asarray(_unwrap(self._model.buffer_state).filled)))

    def __repr__(self) -> str:
        return f"SampleBuffer(filled={len(self)}, capacity={self.capacity})"


#: The attributes of an EBM that hold the rest of its training state (each a
#: pytree of nnx Variables, or None), by TrainState field.
_STATE_ATTRS = (
    ("loss_params", "loss_params"),
    ("loss_state", "loss_state"),
    ("opt_state", "opt_state"),
    ("buffer_state", "buffer_state"),
    ("sampler_state", "sampler_state"),
    ("ema_params", "ema_params"),
)


def _copy_dicts(tree: Any) -> Any:
    """``tree``'s nested dicts copied, its arrays shared."""
    if isinstance(tree, dict):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree


def _variables(tree: Any) -> list[nnx.Variable]:
    return jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


class _StepCache:
    """What :meth:`EBM.train_step` keeps between calls so that a call costs
    one dispatch of the compiled step, not a walk of the module.

    It holds the last :class:`TrainState` and, for every leaf of it, the nnx
    Variable that mirrors it in the module. A call is served from the cache
    only if the network is exactly as the last call left it (a
    :class:`~ebmkit.nn.eval.GraphSnapshot`: the same objects in every
    attribute, the same arrays in every Variable; identity, not equality) and
    the model's other state Variables hold the cached arrays:
    ``nnx.update``, an ``nnx.Optimizer`` step, a checkpoint restore or
    assigning an attribute all replace an array or an object, and the next
    call rebuilds the state from the module. After a step the new arrays are
    written into the same Variables, so the module is always current.
    """

    def __init__(self, model: EBM, state: TrainState, step: Any, key: tuple):
        self.step = step
        self.key = key
        self.snapshot = GraphSnapshot(model.energy_net)
        by_path = {path: v for path, v in nnx.iter_graph(model.energy_net) if isinstance(v, nnx.Variable)}
        self.energy_vars = []
        for tree in (state.energy_params, state.energy_state):
            paths = [tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
                     for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
            self.energy_vars.append([by_path[p] for p in paths])
        self.attrs = {name: getattr(model, name) for name, _ in _STATE_ATTRS}
        self.attr_vars = {name: _variables(self.attrs[name]) for name, _ in _STATE_ATTRS}
        self.state = state
        self.leaves = self._leaves(state)

    @staticmethod
    def _leaves(state: TrainState) -> list[Any]:
        return jax.tree.leaves(state)

    def _all_vars(self, model: EBM) -> list[nnx.Variable]:
        out = [*self.energy_vars[0], *self.energy_vars[1]]
        for name, _field in _STATE_ATTRS:
            out += self.attr_vars[name]
        out.append(model.rng_key)
        return out

    def _state_order(self, state: TrainState) -> list[Any]:
        """``state``'s leaves in the order of :meth:`_all_vars`."""
        out = [*jax.tree.leaves(state.energy_params), *jax.tree.leaves(state.energy_state)]
        for _, field in _STATE_ATTRS:
            out += jax.tree.leaves(getattr(state, field))
        out.append(state.rng_key)
        return out

    def valid(self, model: EBM, key: tuple) -> bool:
        if key != self.key or not self.snapshot.matches(model.energy_net):
            return False
        if any(getattr(model, name) is not self.attrs[name] for name, _ in _STATE_ATTRS):
            return False
        variables = self._all_vars(model)
        arrays = self._state_order(self.state)
        if len(variables) != len(arrays):
            return False
        return all(v.get_raw_value() is a for v, a in zip(variables, arrays, strict=True))

    def write(self, model: EBM, state: TrainState) -> bool:
        """Write ``state`` into the module's Variables in place; False when its
        structure differs from the cached one (the caller then loads it fully)."""
        if jax.tree.structure(state) != jax.tree.structure(self.state):
            return False
        variables = self._all_vars(model)
        arrays = self._state_order(state)
        if len(variables) != len(arrays):
            return False
        for v, a in zip(variables, arrays, strict=True):
            v.set_raw_value(a)
        self.snapshot.refresh_arrays()
        self.state = state
        return True


#: EBM -> its _StepCache. Kept outside the module: an attribute would become
#: part of the module's graph (and of every graphdef).
_STEP_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _EvalCache:
    """The network's graph definitions and variables as evaluation and
    sampling read them, kept while the network is untouched (a
    :class:`~ebmkit.nn.eval.GraphSnapshot` matches): splitting a module walks
    its whole graph (0.5 ms for a small MLP, several for a CNN), a cost every
    ``generate``, ``energy`` and ``model(x)`` call paid before. Also keeps
    the compiled ``generate`` programs looked up for these graphs."""

    def __init__(self, net: nnx.Module):
        self.graphdefs = graphdefs(net)
        self.params, self.rest = split_energy(net)
        self.snapshot = GraphSnapshot(net)
        self.programs: dict[tuple, Any] = {}

    @classmethod
    def of(cls, model: EBM) -> _EvalCache:
        cache = _EVAL_CACHES.get(model)
        if cache is None or not cache.snapshot.matches(model.energy_net):
            cache = _EVAL_CACHES[model] = cls(model.energy_net)
        return cache


#: EBM -> its _EvalCache (outside the module, as _STEP_CACHES).
_EVAL_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class EBM(nnx.Module):
    """An energy-based model ``p(x) ∝ exp(-E(x))`` with the components its
    config names (sampler, loss, replay buffer) and an optimiser.

    Args:
        config: an :class:`ebmkit.Config` (or a mapping/file for one), or the
            guide's ``EBMConfig``/``DeepEBMConfig``.
        rngs: ``nnx.Rngs``; any streams work (``nnx.Rngs(0)``,
            ``nnx.Rngs(params=0, noise=1, sample=2)``). Defaults to the
            config's ``train.seed``.
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(28, 28, 1)``;
            required unless ``data`` or the config implies it.
        data_bounds: ``(low, high)`` of the data, for fresh chain starts.
        optimizer: overrides ``config.train.optimizer`` (a name or an optax
            transformation) for :meth:`train_step`.
        data: the data's :class:`~ebmkit.types.BuildContext`
            (``ebmkit.components.data_context(dataset)``): event shape, support,
            bounds, labels, reference distribution. Components are checked
            against it (:func:`~ebmkit.components.check_fits`).

    Raises:
        ConfigError: a component does not fit the data.
    """

    def __init__(
        self,
        config: Any = None,
        *,
        rngs: nnx.Rngs | None = None,
        event_shape: tuple[int, ...] | None = None,
        data_bounds: tuple[float, float] | None = None,
        optimizer: str | optax.GradientTransformation | None = None,
        data: BuildContext | None = None,
    ):
        run_config, implied_shape = _resolve(config)
        self.config = run_config
        if event_shape is None and data is not None:
            event_shape = data.event_shape
        if event_shape is None:
            event_shape = implied_shape or getattr(run_config.energy, "input_shape", None)
        if event_shape is None:
            raise ValueError(
                "EBM needs event_shape, the shape of one sample (e.g. (2,) or (28, 28, 1)); "
                "ebmkit.assemble(...) takes it from the data set"
            )
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        event_shape = tuple(int(d) for d in event_shape)
        if not event_shape or any(d <= 0 for d in event_shape):
            raise ValueError(f"event_shape must be positive dimensions, got {event_shape}")
        self.event_shape = event_shape
        if data is None:
            # Built without a data set: a component that asks for the reference
            # distribution (nce's noise) gets the config's own data set's, as
            # the base measures do (computed only when asked).
            data = BuildContext(
                event_shape=event_shape, bounds=data_bounds,
                reference_factory=lambda: _statistics_context(
                    BuildContext(event_shape=event_shape), run_config.dataset, "reference"
                ).reference,
            )
        elif tuple(data.event_shape) != event_shape:
            raise ValueError(f"event_shape {event_shape} differs from the data's {tuple(data.event_shape)}")
        check_fits(run_config, data)
        self.data = data
        rngs = rngs if rngs is not None else nnx.Rngs(run_config.train.seed)

        self.energy_net = _with_base_measure(
            build_component(run_config.energy, data.replace(rngs=rngs)), run_config.base_measure, data,
            run_config.dataset,
        )
        self._sampler = build_component(run_config.sampler, data) if run_config.sampler is not None else None
        self._loss = build_component(run_config.loss, data)
        self._buffer = build_component(run_config.buffer, data) if run_config.buffer is not None else None

        if self._buffer is not None and isinstance(self._buffer, FreshStarts):
            self._starts = self._buffer
        else:
            low, high = data.bounds if data.bounds is not None else (-1.0, 1.0)
            self._starts = UniformStarts(
                np.asarray(low, np.float32), np.asarray(high, np.float32), event_shape,
                bits=data.support.kind == "binary",
            )
        train = run_config.train
        self._tx = make_optimizer(
            optimizer if optimizer is not None else train.optimizer,
            train.learning_rate,
            max_grad_norm=train.max_grad_norm,
            weight_decay=train.weight_decay,
            schedule=lr_schedule(
                train.lr_schedule, train.steps, warmup_steps=train.warmup_steps,
                final_fraction=train.final_lr_fraction,
            ),
        )
        self.rng_key = KeyVar(_stream_key(rngs, "sample", "noise"))
        self.buffer_state = (
            _wrap(self._buffer.init(self._next_key(), jnp.zeros(event_shape, jnp.float32)), BufferVar)
            if self._buffer is not None
            else None
        )
        self.loss_params = (
            _wrap(self._loss.init_params(self._next_key(), data), LossParam)
            if isinstance(self._loss, OwnsParameters) else None
        )
        self.loss_state = (
            _wrap(self._loss.init_state(self._next_key(), data), LossStateVar)
            if isinstance(self._loss, OwnsState) else None
        )
        self.sampler_state = (
            _wrap(
                self._sampler.init_adaptation(jnp.zeros((train.batch_size, *event_shape), jnp.float32)),
                SamplerStateVar,
            )
            if self._sampler is not None and isinstance(self._sampler, Adaptive)
            else None
        )
        self.opt_state = _wrap(self._tx.init((self._params_rest()[0], _unwrap(self.loss_params))), OptVar)
        #: ``train.ema_decay`` in force, or ``None`` when the model keeps no average.
        self.ema_decay = train.ema
        # The average starts when training does (at the parameters then, see
        # train_state); until a state is loaded it equals the live parameters.
        self.ema_params = None
        self._evaluate_with = "ema" if self.ema_decay is not None else "live"

    # -- components ----------------------------------------------------------------

    @property
    def sampler(self) -> Any:
        """The bound sampler, or ``None`` when the run has none."""
        return self._sampler

    @property
    def loss_fn(self) -> Any:
        return self._loss

    @property
    def buffer(self) -> Any:
        """The replay buffer, or ``None`` when the run has none."""
        return self._buffer

    @property
    def fresh_starts(self) -> Any:
        """What fresh chains start from: the buffer's init distribution, or
        uniform in the data box without a buffer (uniform random bits on
        binary data) (``fresh(rng_key, n)``)."""
        return self._starts

    @property
    def sample_buffer(self) -> SampleBuffer:
        return SampleBuffer(self)

    @property
    def num_steps(self) -> int:
        """K, the sampler's chain length (0 without a sampler)."""
        return int(self._sampler.num_steps) if self._sampler is not None else 0

    def _require_sampler(self, what: str) -> Any:
        if self._sampler is None:
            raise ValueError(
                f"{what}: this model has no sampler (its loss {type(self._loss).__name__} needs none); "
                'set sampler = "langevin" (or another) in the config to draw samples'
            )
        return self._sampler

    def _next_key(self) -> jax.Array:
        key, sub = jax.random.split(self.rng_key.get_value())
        self.rng_key.set_value(key)
        return sub

    def _graphdefs(self) -> tuple[Any, Any]:
        return _EvalCache.of(self).graphdefs

    def _params_rest(self) -> tuple[Any, Any]:
        cache = _EvalCache.of(self)
        # Fresh dicts around the same arrays: callers may rearrange them.
        return _copy_dicts(cache.params), _copy_dicts(cache.rest)

    # -- which parameters evaluation uses -----------------------------------------

    @property
    def evaluate_with(self) -> str:
        """Which parameters :meth:`energy`, :meth:`score`, ``model(x)`` and
        :meth:`generate` use: ``"ema"``, the moving average of
        ``train.ema_decay`` (the default when it is set), or ``"live"``, the
        optimiser's current parameters (the only choice without it).

        Evaluation, diagnostics and plots call those methods, so they follow
        this choice; training (:meth:`train_step`, the trainer's chains) and
        ``energy_net`` always hold the live parameters. Set it, or use
        :meth:`evaluating_with` for a block, to compare the two.

        Raises:
            ValueError: (on setting) an unknown name, or ``"ema"`` on a model
                without ``train.ema_decay``.
        """
        return self._evaluate_with

    @evaluate_with.setter
    def evaluate_with(self, which: str) -> None:
        self._evaluate_with = self._check_parameter_set(which)

    @contextlib.contextmanager
    def evaluating_with(self, which: str):
        """``with model.evaluating_with("live"): ...`` — :attr:`evaluate_with`
        for the block, restored afterwards."""
        before = self._evaluate_with
        self.evaluate_with = which
        try:
            yield self
        finally:
            self._evaluate_with = before

    def _check_parameter_set(self, which: str) -> str:
        if which not in PARAMETER_SETS:
            raise ValueError(f"evaluate_with: expected one of {', '.join(map(repr, PARAMETER_SETS))}, got {which!r}")
        if which == "ema" and self.ema_decay is None:
            raise ValueError(
                "evaluate_with: this model keeps no moving average of its parameters; "
                "set train.ema_decay (e.g. 0.999) and train it to have one"
            )
        return which

    def eval_variables(self, which: str | None = None) -> tuple[Any, Any]:
        """``(params, rest)`` of the energy network as evaluation sees them
        (pure dicts, for :func:`ebmkit.nn.energy_programs` and chains).

        Args:
            which: ``"ema"`` or ``"live"``; default :attr:`evaluate_with`.
                Before any training the average equals the live parameters.
        """
        params, rest = self._eval_arrays(which)
        return _copy_dicts(params), _copy_dicts(rest)

    def _eval_arrays(self, which: str | None = None, cache: _EvalCache | None = None) -> tuple[Any, Any]:
        """:meth:`eval_variables` without the copy (the cached dicts: read only)."""
        which = self._evaluate_with if which is None else self._check_parameter_set(which)
        cache = _EvalCache.of(self) if cache is None else cache
        params = cache.params
        if which == "ema" and self.ema_params is not None:
            params = _unwrap(self.ema_params)
        return params, cache.rest

    # -- energy and score ----------------------------------------------------------

    def energy(self, x: Any) -> jax.Array:
        """``E(x)`` for a batch ``x[B, *event_shape]`` (eval mode, compiled once)."""
        x = check_batch(x, self.event_shape, "energy(x)")
        cache = _EvalCache.of(self)
        params, rest = self._eval_arrays(cache=cache)
        return energy_programs(cache.graphdefs[1])[0](params, rest, x)

    def score(self, x: Any) -> jax.Array:
        """``-∇ₓE(x)``, the score of the model density, per row."""
        return self(x)["score"]

    def __call__(self, x: Any) -> dict[str, jax.Array]:
        """``{"energy": E[B], "score": -∇E[B, *event]}``."""
        x = check_batch(x, self.event_shape, "model(x)")
        cache = _EvalCache.of(self)
        params, rest = self._eval_arrays(cache=cache)
        energy, score = energy_programs(cache.graphdefs[1])[1](params, rest, x)
        return {"energy": energy, "score": score}

    # -- sampling ------------------------------------------------------------------

    def generate(
        self,
        n_samples: int = 16,
        shape: tuple[int, ...] | None = None,
        n_steps: int | None = None,
        step_size: float | None = None,
        noise_scale: float | None = None,
        *,
        rng_key: jax.Array | None = None,
        preset: str | None = None,
        return_info: bool = False,
        labels: Any = None,
    ) -> jax.Array:
        """Draw ``n_samples`` by running fresh chains for ``n_steps`` steps
        (on the parameters :attr:`evaluate_with` names).

        Chains start from the buffer's init distribution (uniform in the data
        box without a buffer); an adaptive sampler first runs its adaptation
        phase on them. One compiled program per ``(n_samples, shape,
        n_steps)``: new step sizes reuse it.

        Args:
            n_samples: number of chains (> 0).
            shape: the event shape; must equal the model's (default).
            n_steps: chain length (default: the sampler's ``num_steps``).
            step_size: overrides the sampler's tunable of that name.
            noise_scale: overrides the sampler's tunable of that name.
            rng_key: a ``jax.random.key``; default: the model's own key.
            preset: ``quick``, ``standard`` or ``quality``: the guide's chain
                length, step size and noise (explicit arguments win).
            return_info: also return the chain summary.
            labels: conditional generation: one label for every sample (an
                int) or one per sample (``int[n_samples]``); each chain then
                runs on the class-conditional energy ``E(x, y)`` of a
                conditional energy (``classifier``). ``None`` (default)
                samples the marginal ``E(x)``.

        Raises:
            ValueError: bad arguments, labels for an energy that takes no
                condition, or the model has no sampler.
        """
        sampler = self._require_sampler("generate")
        if preset is not None:
            p = sampling_preset(preset)
            n_steps = p["n_steps"] if n_steps is None else n_steps
            step_size = p["step_size"] if step_size is None else step_size
            noise_scale = p["noise_scale"] if noise_scale is None else noise_scale
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
            raise ValueError(f"generate: n_samples must be a positive integer, got {n_samples!r}")
        if shape is not None and tuple(shape) != self.event_shape:
            raise ValueError(
                f"generate: shape {tuple(shape)} does not match the model's event shape {self.event_shape}"
            )
        n_steps = self.num_steps if n_steps is None else n_steps
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"generate: n_steps must be an integer >= 0, got {n_steps!r}")
        try:
            tunables = tunables_for(sampler, {"step_size": step_size, "noise_scale": noise_scale})
        except TypeError as exc:
            raise ValueError(f"generate: {exc}") from None
        traced, static = _split_tunables(tunables)
        y = None if labels is None else self._generation_labels(labels, int(n_samples))
        own_key = rng_key is None
        cache = _EvalCache.of(self)
        params, rest = self._eval_arrays(cache=cache)
        # The compiled program, looked up once per graph (hashing a graphdef
        # for the lru_cache costs more than the rest of a call).
        lookup = (id(sampler), id(self._starts), int(n_samples), int(n_steps), static, bool(return_info))
        fn = cache.programs.get(lookup)
        if fn is None:
            fn = cache.programs[lookup] = _jitted_generate(
                cache.graphdefs[1], sampler, self._starts, int(n_samples), int(n_steps), static, bool(return_info)
            )
        try:
            x, summary, next_key = fn(
                params, rest, self.rng_key.get_value() if own_key else rng_key, own_key, traced, y
            )
        except ValueError as exc:
            if y is None:
                raise
            raise ValueError(
                "generate: labels need a conditional energy E(x, y) (e.g. energy = "
                f'{{name = "classifier", network = "mlp"}}); this energy refused them: {exc}'
            ) from None
        if own_key:
            self.rng_key.set_value(next_key)
        return (x, summary) if return_info else x

    def _generation_labels(self, labels: Any, n: int) -> jax.Array:
        """``labels`` (an int, or one per sample) as ``int32[n]``, range-checked."""
        arr = np.asarray(labels)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"generate: labels must be integers, got {arr.dtype}")
        if arr.ndim == 0:
            arr = np.full((n,), int(arr))
        if arr.shape != (n,):
            raise ValueError(f"generate: labels must be one int or one per sample, shape ({n},); got {arr.shape}")
        k = self.data.num_classes if self.data is not None else None
        k = getattr(self.energy_net, "num_classes", None) if k is None else k
        if arr.size and (arr.min() < 0 or (k is not None and arr.max() >= k)):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            known = f" 0..{k - 1}" if k is not None else " >= 0"
            raise ValueError(f"generate: label {bad} is out of range; labels are{known}")
        return jnp.asarray(arr, jnp.int32)

    def sample_from_buffer(self, n_samples: int = 16, *, rng_key: jax.Array | None = None) -> jax.Array:
        """``n_samples`` stored chain states drawn (with replacement) from filled slots.

        Raises:
            RuntimeError: the buffer is empty (train first), or there is none.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
            raise ValueError(f"sample_from_buffer: n_samples must be a positive integer, got {n_samples!r}")
        if self._buffer is None:
            raise RuntimeError("sample_from_buffer: this model has no replay buffer (its loss needs none)")
        state = _unwrap(self.buffer_state)
        filled = np.flatnonzero(np.asarray(state.filled))
        if filled.size == 0:
            raise RuntimeError("sample_from_buffer: the replay buffer is empty; run train_step first")
        key = self._next_key() if rng_key is None else rng_key
        idx = jax.random.choice(key, jnp.asarray(filled), (n_samples,), replace=True)
        return state.data[idx]

    # -- training ------------------------------------------------------------------

    def train_state(self) -> TrainState:
        """The current state as a pytree of arrays (for pure training loops).

        With ``train.ema_decay`` its ``ema_params`` is the model's average, or
        a copy of the current parameters when none has been kept yet (an
        average over no steps: no bias towards zero at the start).
        """
        params, rest = self._params_rest()
        ema = None
        if self.ema_decay is not None:
            ema = _unwrap(self.ema_params) if self.ema_params is not None else jax.tree.map(jnp.copy, params)
        return TrainState(
            energy_params=params,
            energy_state=rest,
            loss_params=_unwrap(self.loss_params),
            loss_state=_unwrap(self.loss_state),
            opt_state=_unwrap(self.opt_state),
            buffer_state=_unwrap(self.buffer_state),
            sampler_state=_unwrap(self.sampler_state),
            rng_key=self.rng_key.get_value(),
            ema_params=ema,
        )

    def load_train_state(self, state: TrainState) -> None:
        """Write a state produced by :meth:`train_step_fn` back into the module."""
        nnx.update(self.energy_net, state.energy_params, state.energy_state)
        self.loss_params = _wrap(state.loss_params, LossParam)
        self.loss_state = _wrap(state.loss_state, LossStateVar)
        self.opt_state = _wrap(state.opt_state, OptVar)
        self.buffer_state = _wrap(state.buffer_state, BufferVar)
        self.sampler_state = _wrap(state.sampler_state, SamplerStateVar)
        self.rng_key.set_value(state.rng_key)
        self.ema_params = _wrap(state.ema_params, EmaParam) if self.ema_decay is not None else None

    def train_step_fn(self, *, jit: bool = True):
        """The compiled pure step ``(TrainState, batch) -> (TrainState, metrics)``."""
        graphdef, eval_graphdef = self._graphdefs()
        if jit:
            static = None if self._sampler is None else tuple(sorted(self._sampler.tunables.items()))
            return jitted_train_step(
                graphdef, eval_graphdef, self._sampler, self._loss, self._buffer, self._tx,
                self.num_steps if self._sampler is not None else None, static, self.data, self.ema_decay,
            )
        return make_train_step(
            graphdef, eval_graphdef, sampler=self._sampler, loss=self._loss, buffer=self._buffer,
            tx=self._tx, data=self.data, ema_decay=self.ema_decay,
        )

    def train_step(self, batch: Any) -> dict[str, jax.Array]:
        """One real update of the parameters with the model's own optimiser.

        Args:
            batch: ``x[B, *event_shape]``, ``(x, y)`` with labels ``y[B]``, or a
                dict with an ``image`` or ``data`` entry (and ``label``).

        Returns:
            The metrics dict (``loss`` and what the loss declares), as device
            scalars (no host sync).
        """
        raw = batch_from(batch[0] if isinstance(batch, tuple) else batch)
        x = check_batch(raw, self.event_shape, "train_step(batch)")
        _check_finite(raw, "train_step(batch)")
        y = _labels_of(batch, x.shape[0], "train_step(batch)")
        # The state and the compiled step are reused while the module is
        # untouched (see _StepCache); otherwise both are rebuilt from it.
        key = self._step_key()
        cache = _STEP_CACHES.get(self)
        if cache is None or not cache.valid(self, key):
            cache = None
            _STEP_CACHES.pop(self, None)
            state, step = self.train_state(), self.train_step_fn()
        else:
            state, step = cache.state, cache.step
        new_state, metrics = step(state, Batch(x, y))
        if cache is None or not cache.write(self, new_state):
            self.load_train_state(new_state)
            _STEP_CACHES[self] = _StepCache(self, new_state, step, key)
        return metrics

    def _step_key(self) -> tuple:
        """What the compiled step depends on besides the network's structure."""
        static = None if self._sampler is None else tuple(sorted(self._sampler.tunables.items()))
        return (id(self._sampler), id(self._loss), id(self._buffer), id(self._tx), self.num_steps, static,
                id(self.data), self.ema_decay)


class DeepEBM(EBM):
    """An :class:`EBM` over a convolutional energy for images (``H, W, C``)."""

    def __init__(self, config: Any = None, *, rngs: nnx.Rngs | None = None, **kwargs: Any):
        super().__init__(config, rngs=rngs, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(f"DeepEBM expects image events (H, W, C), got {self.event_shape}")
