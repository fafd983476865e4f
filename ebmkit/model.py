"""``EBM`` and ``DeepEBM``: an energy network wired to a sampler, a loss, a
replay buffer and an optimiser, with the surface of Artifex's EBM guide.

The module holds state; the work is done by pure functions compiled once:

* :func:`make_train_step` — draw starts, K sampler steps, stop_gradient, loss
  and grads, optax update, buffer write-back: one ``jax.jit`` program.
* :meth:`EBM.generate` — fresh chains, one program per (n, shape, n_steps).

Both take a :class:`TrainState` (parameters, optimiser state, buffer state,
key), so the trainer can keep the state on the device and skip the module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ebmkit.components import build_component
from ebmkit.config import Config, load_config
from ebmkit.data import batch_from
from ebmkit.optim import lr_schedule, make_optimizer
from ebmkit.sampling import per_row_energy_and_grad, run_chain, tunables_for
from ebmkit.types import LossContext

__all__ = ["EBM", "DeepEBM", "TrainState", "make_train_step", "SampleBuffer"]


class BufferVar(nnx.Variable):
    """Replay-buffer state: device arrays, not parameters."""


class OptVar(nnx.Variable):
    """Optimiser state of the model's own optimiser."""


class KeyVar(nnx.Variable):
    """The model's MCMC key, split on every ``train_step``/``generate``."""


class TrainState(NamedTuple):
    """Everything one training step reads and writes (a pytree of arrays)."""

    params: Any
    rest: Any
    opt_state: Any
    buffer_state: Any
    rng_key: jax.Array


def _unwrap(tree: Any) -> Any:
    return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def _wrap(tree: Any, cls: type[nnx.Variable]) -> Any:
    return nnx.data(jax.tree.map(cls, tree))


_EVAL_GRAPHDEFS: dict[Any, Any] = {}


def _eval_view(module: nnx.Module) -> nnx.Module:
    """The module with dropout off and statistics frozen, sharing variables."""
    view = module
    for attr, value in (("deterministic", True), ("update_stats", False)):
        try:
            view = nnx.view(view, **{attr: value})
        except (ValueError, AttributeError, TypeError):
            pass
    return view


def _stream_key(rngs: nnx.Rngs, *names: str) -> jax.Array:
    """A key from the first stream of ``names`` that ``rngs`` has, else params."""
    for name in (*names, "default", "params"):
        if name in rngs:
            return rngs[name]()
    raise ValueError("rngs has no usable stream; pass nnx.Rngs(0) or nnx.Rngs(params=0)")


def _check_batch(x: Any, event_shape: tuple[int, ...], what: str) -> jax.Array:
    x = batch_from(x)
    shape = tuple(np.shape(x))
    if len(shape) != len(event_shape) + 1 or shape[1:] != event_shape:
        hint = ""
        if math.prod(shape[1:]) == math.prod(event_shape) and len(shape) >= 1:
            hint = f"; reshape with x.reshape(len(x), *{event_shape})"
        raise ValueError(
            f"{what}: expected shape [batch, {', '.join(map(str, event_shape))}], got {list(shape)}{hint}"
        )
    if shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what}: expected numbers, got dtype {x.dtype}")
    return jnp.asarray(x, dtype=jnp.float32)


def _check_finite(x: Any, what: str) -> None:
    # Host data is checked on the host: no device round trip, no stall of the
    # queue of steps already dispatched. Device data costs one small sync.
    if isinstance(x, jax.Array):
        bad = int(jnp.size(x) - jnp.count_nonzero(jnp.isfinite(x)))
    else:
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"{what}: contains {bad} non-finite values (NaN or inf)")


def _split_tunables(tunables: Mapping[str, Any]) -> tuple[dict[str, Any], tuple]:
    """Numbers travel as traced arguments (no recompile when they change);
    ``None`` and other structural values are static."""
    traced = {k: jnp.asarray(v, jnp.float32) for k, v in tunables.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    static = tuple(sorted((k, v) for k, v in tunables.items() if k not in traced))
    return traced, static


def make_train_step(
    graphdef: Any,
    eval_graphdef: Any,
    *,
    sampler: Any,
    loss: Any,
    buffer: Any,
    tx: optax.GradientTransformation,
    num_steps: int,
    tunables: Mapping[str, Any] | None = None,
    axis_name: str | None = None,
):
    """The pure training step ``(state, x_pos) -> (state, metrics)``.

    Args:
        graphdef: the energy network's graph in training mode.
        eval_graphdef: the same network in eval mode; MCMC chains run on it so
            the sampled density is deterministic (no dropout noise).
        sampler, loss, buffer: built components.
        tx: the optax transformation.
        num_steps: MCMC steps per update (static).
        tunables: the sampler's numeric settings (default: its own).
        axis_name: the mesh axis of data-parallel training (see
            :mod:`ebmkit.distributed`); gradients and metrics are averaged over
            it. ``None`` (default) for a step that sees the whole batch.

    Returns:
        An un-jitted pure function; wrap it in ``jax.jit`` (or scan it).
    """
    tunables = dict(sampler.tunables if tunables is None else tunables)

    def step(state: TrainState, x_pos: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        key, loss_key = jax.random.split(state.rng_key)
        frozen = jax.lax.stop_gradient(state.params)

        def sample_energy_fn(x):
            return nnx.merge(eval_graphdef, frozen, state.rest)(x)

        ctx = LossContext(
            sampler=sampler,
            num_steps=num_steps,
            tunables=tunables,
            sample_energy_fn=sample_energy_fn,
            buffer=buffer,
            buffer_state=state.buffer_state,
        )

        def loss_of(params):
            box = {}

            def energy_fn(x):
                module = nnx.merge(graphdef, params, state.rest)
                energy = module(x)
                # Keep state the call updated (dropout counters, norm statistics).
                box["rest"] = nnx.to_pure_dict(nnx.state(module, nnx.Not(nnx.Param)))
                return energy

            value, metrics, out_ctx = loss(loss_key, energy_fn, x_pos, ctx)
            return value, (metrics, out_ctx.buffer_state, box.get("rest", state.rest))

        (_, (metrics, buffer_state, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params
        )
        if axis_name is not None:
            # Each device saw an equal slice of the batch: the mean of the local
            # gradients is the gradient of the global-batch loss, and every
            # device then applies the same update to its copy of the parameters.
            grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        if axis_name is not None:
            metrics = {k: _mean_over(v, axis_name) for k, v in metrics.items()}
        metrics["grad_norm"] = optax.tree.norm(grads)  # of the averaged gradient
        return TrainState(params, rest, opt_state, buffer_state, key), metrics

    return step


def _mean_over(value: jax.Array, axis_name: str) -> jax.Array:
    """A metric averaged over the devices (flags: true on any device)."""
    value = jnp.asarray(value)
    if value.dtype == jnp.bool_:
        return jax.lax.pmax(value, axis_name)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32)
    return jax.lax.pmean(value, axis_name)


@functools.lru_cache(maxsize=32)
def _jitted_train_step(graphdef, eval_graphdef, sampler, loss, buffer, tx, num_steps, static_tunables):
    tunables = dict(static_tunables)
    return jax.jit(
        make_train_step(
            graphdef, eval_graphdef, sampler=sampler, loss=loss, buffer=buffer, tx=tx,
            num_steps=num_steps, tunables=tunables,
        ),
        donate_argnums=(0,),
    )


@functools.lru_cache(maxsize=64)
def _jitted_generate(eval_graphdef, sampler, buffer, n_samples, n_steps, static_tunables):
    def generate(params, rest, rng_key, advance, traced_tunables):
        # With ``advance`` the key is the model's own: split it here, in the
        # compiled program (an eager split costs a dispatch per call), and hand
        # back its successor. Otherwise it is the caller's key, used as given.
        next_key, sub = jax.random.split(rng_key)
        rng_key = jax.lax.select(advance, sub, rng_key)
        init_key, chain_key = jax.random.split(rng_key)

        def energy_fn(x):
            return nnx.merge(eval_graphdef, params, rest)(x)

        x0 = buffer.fresh(init_key, n_samples)
        x, summary = run_chain(
            chain_key, sampler, x0, energy_fn, n_steps, **dict(static_tunables), **traced_tunables
        )
        return x, summary, next_key

    return jax.jit(generate)


@functools.lru_cache(maxsize=16)
def _jitted_energy(eval_graphdef):
    def energy(params, rest, x):
        return nnx.merge(eval_graphdef, params, rest)(x)

    def energy_and_score(params, rest, x):
        e, g = per_row_energy_and_grad(lambda y: nnx.merge(eval_graphdef, params, rest)(y), x)
        return e, -g

    return jax.jit(energy), jax.jit(energy_and_score)


class SampleBuffer:
    """The guide's view of the replay buffer (``model.sample_buffer``).

    ``buffer`` is the array of filled slots, so ``len(model.sample_buffer.buffer)``
    counts them; assigning ``[]`` (or calling :meth:`clear`) empties it.
    """

    def __init__(self, model: EBM):
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
        x = _check_batch(value, self._model.event_shape, "sample_buffer.buffer")
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


class EBM(nnx.Module):
    """An energy-based model ``p(x) ∝ exp(-E(x))`` with its sampler, loss,
    replay buffer and optimiser.

    Args:
        config: an :class:`ebmkit.Config` (or a mapping/file for one), or the
            guide's ``EBMConfig``/``DeepEBMConfig``.
        rngs: ``nnx.Rngs``; any streams work (``nnx.Rngs(0)``,
            ``nnx.Rngs(params=0, noise=1, sample=2)``). Defaults to the
            config's ``train.seed``.
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(28, 28, 1)``;
            required unless the config implies it.
        data_bounds: ``(low, high)`` of the data, for the buffer's fresh starts.
        optimizer: overrides ``config.train.optimizer`` (a name or an optax
            transformation) for :meth:`train_step`.
    """

    def __init__(
        self,
        config: Any = None,
        *,
        rngs: nnx.Rngs | None = None,
        event_shape: tuple[int, ...] | None = None,
        data_bounds: tuple[float, float] | None = None,
        optimizer: str | optax.GradientTransformation | None = None,
    ):
        run_config, implied_shape = _resolve(config)
        self.config = run_config
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
        rngs = rngs if rngs is not None else nnx.Rngs(run_config.train.seed)

        self.energy_net = build_component(run_config.energy, event_shape=event_shape, rngs=rngs)
        self._sampler = build_component(run_config.sampler)
        self._loss = build_component(run_config.loss)
        self._buffer = build_component(run_config.buffer, event_shape=event_shape, bounds=data_bounds)
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
        self.buffer_state = _wrap(
            self._buffer.init(self._next_key(), jnp.zeros(event_shape, jnp.float32)), BufferVar
        )
        self.opt_state = _wrap(self._tx.init(self._params_rest()[0]), OptVar)

    # -- components ----------------------------------------------------------------

    @property
    def sampler(self) -> Any:
        return self._sampler

    @property
    def loss_fn(self) -> Any:
        return self._loss

    @property
    def sample_buffer(self) -> SampleBuffer:
        return SampleBuffer(self)

    @property
    def num_steps(self) -> int:
        return int(self._sampler.num_steps)

    def _next_key(self) -> jax.Array:
        key, sub = jax.random.split(self.rng_key.get_value())
        self.rng_key.set_value(key)
        return sub

    def _graphdefs(self) -> tuple[Any, Any]:
        graphdef = nnx.graphdef(self.energy_net)
        # nnx.view walks and copies the module: remember its graphdef per
        # training graphdef (equal structure gives an equal eval structure).
        eval_graphdef = _EVAL_GRAPHDEFS.get(graphdef)
        if eval_graphdef is None:
            eval_graphdef = nnx.graphdef(_eval_view(self.energy_net))
            if len(_EVAL_GRAPHDEFS) > 64:
                _EVAL_GRAPHDEFS.clear()
            _EVAL_GRAPHDEFS[graphdef] = eval_graphdef
        return graphdef, eval_graphdef

    def _params_rest(self) -> tuple[Any, Any]:
        # Pure nested dicts of arrays: plain pytrees for jit, optax and storage.
        _, params, rest = nnx.split(self.energy_net, nnx.Param, ...)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    # -- energy and score ----------------------------------------------------------

    def energy(self, x: Any) -> jax.Array:
        """``E(x)`` for a batch ``x[B, *event_shape]`` (eval mode, compiled once)."""
        x = _check_batch(x, self.event_shape, "energy(x)")
        params, rest = self._params_rest()
        return _jitted_energy(self._graphdefs()[1])[0](params, rest, x)

    def score(self, x: Any) -> jax.Array:
        """``-∇ₓE(x)``, the score of the model density, per row."""
        return self(x)["score"]

    def __call__(self, x: Any) -> dict[str, jax.Array]:
        """``{"energy": E[B], "score": -∇E[B, *event]}``."""
        x = _check_batch(x, self.event_shape, "model(x)")
        params, rest = self._params_rest()
        energy, score = _jitted_energy(self._graphdefs()[1])[1](params, rest, x)
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
    ) -> jax.Array:
        """Draw ``n_samples`` by running fresh chains for ``n_steps`` steps.

        Chains start from the buffer's init distribution. One compiled program
        per ``(n_samples, shape, n_steps)``: new step sizes reuse it.

        Args:
            n_samples: number of chains (> 0).
            shape: the event shape; must equal the model's (default).
            n_steps: chain length (default: the sampler's ``num_steps``).
            step_size, noise_scale: override the sampler's tunables.
            rng_key: a ``jax.random.key``; default: the model's own key.
            preset: ``quick``, ``standard`` or ``quality``: the guide's chain
                length, step size and noise (explicit arguments win).
            return_info: also return the chain summary.
        """
        if preset is not None:
            from ebmkit.guide import sampling_preset

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
            tunables = tunables_for(self._sampler, {"step_size": step_size, "noise_scale": noise_scale})
        except TypeError as exc:
            raise ValueError(f"generate: {exc}") from None
        traced, static = _split_tunables(tunables)
        own_key = rng_key is None
        params, rest = self._params_rest()
        fn = _jitted_generate(self._graphdefs()[1], self._sampler, self._buffer, int(n_samples), int(n_steps), static)
        x, summary, next_key = fn(params, rest, self.rng_key.get_value() if own_key else rng_key, own_key, traced)
        if own_key:
            self.rng_key.set_value(next_key)
        return (x, summary) if return_info else x

    def sample_from_buffer(self, n_samples: int = 16, *, rng_key: jax.Array | None = None) -> jax.Array:
        """``n_samples`` stored chain states drawn (with replacement) from filled slots.

        Raises:
            RuntimeError: the buffer is empty (train first).
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
            raise ValueError(f"sample_from_buffer: n_samples must be a positive integer, got {n_samples!r}")
        state = _unwrap(self.buffer_state)
        filled = np.flatnonzero(np.asarray(state.filled))
        if filled.size == 0:
            raise RuntimeError("sample_from_buffer: the replay buffer is empty; run train_step first")
        key = self._next_key() if rng_key is None else rng_key
        idx = jax.random.choice(key, jnp.asarray(filled), (n_samples,), replace=True)
        return state.data[idx]

    # -- training ------------------------------------------------------------------

    def train_state(self) -> TrainState:
        """The current state as a pytree of arrays (for pure training loops)."""
        params, rest = self._params_rest()
        return TrainState(
            params, rest, _unwrap(self.opt_state), _unwrap(self.buffer_state), self.rng_key.get_value()
        )

    def load_train_state(self, state: TrainState) -> None:
        """Write a state produced by :meth:`train_step_fn` back into the module."""
        nnx.update(self.energy_net, state.params, state.rest)
        self.opt_state = _wrap(state.opt_state, OptVar)
        self.buffer_state = _wrap(state.buffer_state, BufferVar)
        self.rng_key.set_value(state.rng_key)

    def train_step_fn(self, *, jit: bool = True):
        """The compiled pure step ``(TrainState, x) -> (TrainState, metrics)``."""
        graphdef, eval_graphdef = self._graphdefs()
        if jit:
            return _jitted_train_step(
                graphdef, eval_graphdef, self._sampler, self._loss, self._buffer, self._tx,
                self.num_steps, tuple(sorted(self._sampler.tunables.items())),
            )
        return make_train_step(
            graphdef, eval_graphdef, sampler=self._sampler, loss=self._loss, buffer=self._buffer,
            tx=self._tx, num_steps=self.num_steps,
        )

    def train_step(self, batch: Any) -> dict[str, jax.Array]:
        """One real update of the parameters with the model's own optimiser.

        Args:
            batch: ``x[B, *event_shape]`` or a dict with an ``image`` or ``data`` entry.

        Returns:
            The metrics dict (``loss``, ``real_energy_mean``, ``fake_energy_mean``,
            ``energy_gap``, ...), as device scalars (no host sync).
        """
        raw = batch_from(batch)
        x = _check_batch(raw, self.event_shape, "train_step(batch)")
        _check_finite(raw, "train_step(batch)")
        step = self.train_step_fn()
        state, metrics = step(self.train_state(), x)
        self.load_train_state(state)
        return metrics


class DeepEBM(EBM):
    """An :class:`EBM` over a convolutional energy for images (``H, W, C``)."""

    def __init__(self, config: Any = None, *, rngs: nnx.Rngs | None = None, **kwargs: Any):
        super().__init__(config, rngs=rngs, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(f"DeepEBM expects image events (H, W, C), got {self.event_shape}")
