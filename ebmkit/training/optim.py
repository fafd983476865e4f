"""Optimisers by name: a fixed table of optax aliases, plus clipping and decay."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from ebmkit.suggest import did_you_mean

__all__ = ["OPTIMIZERS", "make_optimizer", "lr_schedule", "get_learning_rate", "set_learning_rate"]

#: Names accepted for ``train.optimizer`` and the optax constructor each maps to.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adamax": optax.adamax,
    "adabelief": optax.adabelief,
    "amsgrad": optax.amsgrad,
    "lamb": optax.lamb,
    "lion": optax.lion,
    "nadam": optax.nadam,
    "radam": optax.radam,
    "rmsprop": optax.rmsprop,
    "sgd": optax.sgd,
    "yogi": optax.yogi,
}


def _scale_by_learning_rate(learning_rate):
    return optax.scale(learning_rate)


def lr_schedule(name: str, total_steps: int, *, warmup_steps: int = 0, final_fraction: float = 0.0) -> optax.Schedule:
    """A multiplier of the learning rate over training (1 at the plateau).

    Args:
        name: ``constant`` or ``cosine`` (decay to ``final_fraction`` at ``total_steps``).
        total_steps: length of the run.
        warmup_steps: linear warm-up from 0 over this many steps.
        final_fraction: the cosine schedule's end value, as a fraction.
    """
    if name == "constant":
        body = optax.constant_schedule(1.0)
    elif name == "cosine":
        body = optax.cosine_decay_schedule(1.0, max(1, total_steps - warmup_steps), alpha=final_fraction)
    else:
        raise ValueError(f"unknown learning-rate schedule {name!r}; known: constant, cosine")
    if warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup_steps), body], [warmup_steps])
    return body


def make_optimizer(
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float = 1e-3,
    *,
    max_grad_norm: float | None = None,
    weight_decay: float = 0.0,
    schedule: optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """Build an optax transformation from a name (or pass one through).

    A named optimiser is built with a unit learning rate and followed by a
    scale by ``learning_rate`` that lives in the optimiser state
    (``inject_hyperparams``), times ``schedule(step)``. Every optax update is
    linear in its learning rate, so this is the same optimiser; keeping the rate
    in the state lets the trainer lower it after a divergence without
    recompiling, and the schedule stays a separate factor.

    Args:
        optimizer: a name from :data:`OPTIMIZERS` or an optax transformation.
        learning_rate: the base learning rate (ignored for objects).
        max_grad_norm: clip gradients to this global norm first, if set.
        weight_decay: decoupled weight decay (``adamw``/``lamb``) or added L2
            decay for the others.
        schedule: a multiplier of the learning rate per step (see :func:`lr_schedule`).

    Raises:
        ValueError: an unknown optimizer name (with a suggestion).
    """
    if isinstance(optimizer, optax.GradientTransformation):
        tx = optimizer
    else:
        if optimizer not in OPTIMIZERS:
            hint = did_you_mean(str(optimizer), OPTIMIZERS)
            raise ValueError(
                f"unknown optimizer {optimizer!r}"
                + (f"; {hint}" if hint else "")
                + f" known: {', '.join(OPTIMIZERS)}"
            )
        if optimizer in ("adamw", "lamb"):
            direction = OPTIMIZERS[optimizer](1.0, weight_decay=weight_decay)
        else:
            direction = OPTIMIZERS[optimizer](1.0)
            if weight_decay:
                direction = optax.chain(optax.add_decayed_weights(weight_decay), direction)
        parts = [direction]
        if schedule is not None:
            parts.append(optax.scale_by_schedule(schedule))
        parts.append(optax.inject_hyperparams(_scale_by_learning_rate)(learning_rate=learning_rate))
        tx = optax.chain(*parts)
    if max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx


def _is_injected(node) -> bool:
    # optax has had two such state classes; both carry a ``hyperparams`` dict.
    return isinstance(node, tuple) and hasattr(node, "hyperparams") and isinstance(node.hyperparams, dict)


def get_learning_rate(opt_state) -> float | None:
    """The learning rate stored in ``opt_state``, or ``None`` if it has none."""
    for node in jax.tree.leaves(opt_state, is_leaf=_is_injected):
        if _is_injected(node) and "learning_rate" in node.hyperparams:
            return float(node.hyperparams["learning_rate"])
    return None


def set_learning_rate(opt_state, learning_rate: float):
    """A copy of ``opt_state`` with a new learning rate.

    Raises:
        ValueError: the optimiser was not built by :func:`make_optimizer` from a name.
    """
    found = False

    def update(node):
        nonlocal found
        if _is_injected(node) and "learning_rate" in node.hyperparams:
            found = True
            hyper = dict(node.hyperparams)
            hyper["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
            return node._replace(hyperparams=hyper)
        return node

    out = jax.tree.map(update, opt_state, is_leaf=_is_injected)
    if not found:
        raise ValueError("this optimiser state carries no learning rate (pass the optimiser by name)")
    return out
