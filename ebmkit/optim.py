"""Optimisers by name: a fixed table of optax aliases, plus clipping and decay."""

from __future__ import annotations

from collections.abc import Callable

import optax

from ebmkit._suggest import did_you_mean

__all__ = ["OPTIMIZERS", "make_optimizer"]

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
        if optimizer in ("adamw", "lamb"):
            tx = OPTIMIZERS[optimizer](learning_rate, weight_decay=weight_decay)
        else:
            tx = OPTIMIZERS[optimizer](learning_rate)
            if weight_decay:
                tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    if max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx
