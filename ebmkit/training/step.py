"""One training step as one pure function, and the loss context it assembles.

``step(state, batch) -> (state, metrics)``:

1. the loss gets a :class:`~ebmkit.types.LossContext` (:func:`make_loss_context`):
   the sampler, the replay buffer and its state, the energy with parameters
   detached for chains (eval mode), the loss's own parameters and state, the
   sampler's adaptation state and the data's build context;
2. the loss draws its chain starts, runs the sampler, and returns its value,
   metrics and updated context;
3. gradients of the loss with respect to the energy's *and* the loss's
   parameters, averaged over devices under data parallelism;
4. the optax update; buffer, loss state and sampler state are written back;
5. with ``train.ema_decay``, the moving average of the energy's parameters
   (``TrainState.ema_params``) takes the updated parameters in. Nothing in the
   step reads it: chains always run on the live parameters.

The whole step is traced into one program (see :mod:`ebmkit.training.fusion`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ebmkit.sampling import BoundEnergy
from ebmkit.types import Batch, BuildContext, EnergyFn, LossContext

__all__ = ["TrainState", "make_loss_context", "make_train_step", "jitted_train_step", "as_batch"]


class TrainState(NamedTuple):
    """Everything one training step reads and writes (a pytree of arrays).

    Attributes:
        energy_params: the energy network's ``nnx.Param`` values (pure dict).
        energy_state: its other variables (dropout counters, spectral-norm
            vectors), as a pure dict.
        loss_params: trainable parameters the loss owns, or ``None``.
        loss_state: non-trainable state the loss owns, or ``None``.
        opt_state: the optax state over ``(energy_params, loss_params)``.
        buffer_state: the replay buffer's state, or ``None`` without a buffer.
        sampler_state: an adaptive sampler's adaptation state, or ``None``.
        rng_key: the key of every MCMC draw; split once per step.
        ema_params: the exponential moving average of ``energy_params``
            (``train.ema_decay``), shaped like them, or ``None`` when off.
            Written by the step, never read by it: sampling and evaluation
            after training use it, training's own chains do not.
    """

    energy_params: Any
    energy_state: Any
    loss_params: Any
    loss_state: Any
    opt_state: Any
    buffer_state: Any
    sampler_state: Any
    rng_key: jax.Array
    ema_params: Any = None

    @property
    def trainable(self) -> tuple[Any, Any]:
        """What the optimiser updates: ``(energy_params, loss_params)``."""
        return self.energy_params, self.loss_params


def as_batch(batch: Any) -> Batch:
    """``x`` or ``(x, y)`` (or a :class:`Batch`) as a :class:`Batch`."""
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, tuple) and len(batch) == 2:
        return Batch(*batch)
    return Batch(batch)


def make_loss_context(
    *,
    sampler: Any,
    sample_energy_fn: EnergyFn | None,
    buffer: Any = None,
    buffer_state: Any = None,
    tunables: Mapping[str, Any] | None = None,
    num_steps: int | None = None,
    params: Any = None,
    state: Any = None,
    sampler_state: Any = None,
    data: BuildContext | None = None,
) -> LossContext:
    """The :class:`~ebmkit.types.LossContext` a loss receives.

    The one place it is assembled: the trainer's step, the guide's
    ``EnergyTrainer`` and the conformance kit all call this.

    Args:
        sampler: the bound sampler, or ``None``.
        sample_energy_fn: the energy with parameters detached, in eval mode.
        buffer, buffer_state: the replay buffer and its state, or ``None``.
        tunables: the sampler's settings (default: its own).
        num_steps: K (default: the sampler's).
        params, state: the loss's own parameters and state.
        sampler_state: the sampler's adaptation state.
        data: the build context of the data.
    """
    if sampler is None:
        tunables, num_steps = {}, 0
    else:
        tunables = dict(sampler.tunables if tunables is None else tunables)
        num_steps = int(sampler.num_steps if num_steps is None else num_steps)
    return LossContext(
        sampler=sampler,
        num_steps=num_steps,
        tunables=tunables,
        sample_energy_fn=sample_energy_fn,
        buffer=buffer,
        buffer_state=buffer_state,
        params=params,
        state=state,
        sampler_state=sampler_state,
        data=data,
    )


def _energy_fn(module: nnx.Module) -> EnergyFn:
    """``module`` as ``energy_fn(x, y=None)``: the condition is passed only when
    given; samplers can reach the module (:func:`ebmkit.sampling.energy_module`)."""
    return BoundEnergy(module)


def make_train_step(
    graphdef: Any,
    eval_graphdef: Any,
    *,
    sampler: Any,
    loss: Any,
    buffer: Any,
    tx: optax.GradientTransformation,
    num_steps: int | None = None,
    tunables: Mapping[str, Any] | None = None,
    data: BuildContext | None = None,
    axis_name: str | None = None,
    ema_decay: float | None = None,
):
    """The pure training step ``(state, batch) -> (state, metrics)``.

    Args:
        graphdef: the energy network's graph in training mode.
        eval_graphdef: the same network in eval mode; MCMC chains run on it so
            the sampled density is deterministic (no dropout noise).
        sampler, loss, buffer: built components (``sampler``/``buffer`` may be
            ``None`` for a loss that needs none).
        tx: the optax transformation over ``(energy_params, loss_params)``.
        num_steps: MCMC steps per update (default: the sampler's).
        tunables: the sampler's numeric settings (default: its own).
        data: the build context of the data (given to the loss).
        axis_name: the mesh axis of data-parallel training (see
            :mod:`ebmkit.distributed`); gradients and metrics are averaged over
            it. ``None`` (default) for a step that sees the whole batch.
        ema_decay: keep ``state.ema_params`` as the moving average
            ``ema_decay * ema + (1 - ema_decay) * params`` of the updated
            parameters; ``None`` (or 0) leaves ``ema_params`` as it is. The
            state must then hold an average to update (start it at the
            initial parameters, as :meth:`ebmkit.EBM.train_state` does).

    Returns:
        An un-jitted pure function; wrap it in ``jax.jit`` (or scan it).
        ``batch`` is ``x``, ``(x, y)`` or a :class:`~ebmkit.types.Batch`.
    """

    decay = float(ema_decay) if ema_decay else None

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        if decay is not None and state.ema_params is None:
            raise ValueError(
                "train.ema_decay is set but the state has no ema_params to average into; start from "
                "model.train_state() (it begins the average at the current parameters)"
            )
        batch = as_batch(batch)
        key, loss_key = jax.random.split(state.rng_key)
        frozen = jax.lax.stop_gradient(state.energy_params)
        sample_energy_fn = _energy_fn(nnx.merge(eval_graphdef, frozen, state.energy_state))
        ctx = make_loss_context(
            sampler=sampler,
            sample_energy_fn=sample_energy_fn,
            buffer=buffer,
            buffer_state=state.buffer_state,
            tunables=tunables,
            num_steps=num_steps,
            state=state.loss_state,
            sampler_state=state.sampler_state,
            data=data,
        )

        def loss_of(trainable: tuple[Any, Any]):
            energy_params, loss_params = trainable

            def energy_fn(x: jax.Array, y: Any = None) -> jax.Array:
                return _energy_fn(nnx.merge(graphdef, energy_params, state.energy_state))(x, y)

            value, metrics, out_ctx = loss(loss_key, energy_fn, batch, ctx._replace(params=loss_params))
            return value, (metrics, out_ctx)

        trainable = state.trainable
        (_, (metrics, out_ctx)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        rest = _advanced_state(graphdef, frozen, state.energy_state, batch)
        if axis_name is not None:
            # Each device saw an equal slice of the batch: the mean of the local
            # gradients is the gradient of the global-batch loss, and every
            # device then applies the same update to its copy of the parameters.
            grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        energy_params, loss_params = optax.apply_updates(trainable, updates)
        metrics = dict(metrics)
        if axis_name is not None:
            metrics = {k: _mean_over(v, axis_name) for k, v in metrics.items()}
        metrics["grad_norm"] = optax.tree.norm(grads)  # of the averaged gradient
        ema_params = state.ema_params
        if decay is not None:
            # Every device applies the same update to the same parameters, so
            # the average needs no communication of its own.
            ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, energy_params)
        new_state = TrainState(
            energy_params=energy_params,
            energy_state=rest,
            loss_params=loss_params,
            loss_state=out_ctx.state,
            opt_state=opt_state,
            buffer_state=out_ctx.buffer_state,
            sampler_state=out_ctx.sampler_state,
            rng_key=key,
            ema_params=ema_params,
        )
        return new_state, metrics

    return step


def _advanced_state(graphdef: Any, params: Any, energy_state: Any, batch: Batch) -> Any:
    """The network state after one training-mode call (dropout counters,
    spectral-norm vectors), as the loss's own call would leave it.

    Computed by a call on one row outside the gradient, so that no loss can
    leak a tracer of its inner transforms (a score-matching loss calls the
    energy inside ``jax.grad``). The state depends on the parameters, not the
    input: its update is the same whatever row is used. A network without
    state costs nothing here.
    """
    if not jax.tree.leaves(energy_state):
        return energy_state
    module = nnx.merge(graphdef, params, energy_state)
    x = batch.x[:1]
    _energy_fn(module)(x, None if batch.y is None else batch.y[:1])
    return nnx.to_pure_dict(nnx.state(module, nnx.Not(nnx.Param)))


def _mean_over(value: jax.Array, axis_name: str) -> jax.Array:
    """A metric averaged over the devices (flags: true on any device)."""
    value = jnp.asarray(value)
    if value.dtype == jnp.bool_:
        return jax.lax.pmax(value, axis_name)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32)
    return jax.lax.pmean(value, axis_name)


@functools.lru_cache(maxsize=32)
def jitted_train_step(graphdef, eval_graphdef, sampler, loss, buffer, tx, num_steps, static_tunables, data,
                      ema_decay=None):
    """:func:`make_train_step` under ``jax.jit`` (input state donated), cached
    per structure so that models of equal structure share one program."""
    return jax.jit(
        make_train_step(
            graphdef, eval_graphdef, sampler=sampler, loss=loss, buffer=buffer, tx=tx,
            num_steps=num_steps, tunables=None if static_tunables is None else dict(static_tunables),
            data=data, ema_decay=ema_decay,
        ),
        donate_argnums=(0,),
    )
