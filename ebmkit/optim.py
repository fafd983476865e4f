"""Optimisers by name: a fixed table of optax aliases, plus clipping and decay."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from ebmkit._suggest import did_you_mean

__all__ = ["OPTIMIZERS", "make_optimizer", "get_learning_rate", "set_learning_rate"]

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


def make_optimizer(
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    max_grad_norm: float | None = None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Build an optax transformation from a name (or pass one through).

    Args:
        optimizer: a name from :data:`OPTIMIZERS` or an optax transformation.
        learning_rate: a float or an optax schedule (ignored for objects).
        max_grad_norm: clip gradients to this global norm first, if set.
        weight_decay: decoupled weight decay (``adamw``/``lamb``) or added L2
            decay for the others.

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
        # The learning rate lives in the optimiser state (inject_hyperparams), so
        # the trainer can lower it after a divergence without recompiling.
        factory = optax.inject_hyperparams(OPTIMIZERS[optimizer])
        if optimizer in ("adamw", "lamb"):
            tx = factory(learning_rate=learning_rate, weight_decay=weight_decay)
        else:
            tx = factory(learning_rate=learning_rate)
            if weight_decay:
                tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
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
