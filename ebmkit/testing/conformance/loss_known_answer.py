"""Known-answer check of a loss: it recovers a Gaussian's mean and scale.

The loss trains a quadratic energy ``0.5 |(x - m) / s|^2 + c`` on samples of
``N(mean, scale^2 I)`` in 2-D, from ``m = 0, s = 1.5``; a sign error sends the
parameters away. The same quadratic energy is the trainable energy of the loss
behaviour checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.testing.conformance.recorder import _Recorder, _require, _rounded
from ebmkit.types import Batch, BuildContext, LossContext

# Name of the known-answer check, as reports list it.
KNOWN_ANSWER = "known answer: recovers a Gaussian's mean and scale from its samples"

# The loss known-answer problem: data x ~ N(mean, scale^2 I) in 2-D, a
# quadratic energy 0.5 |(x - m) / s|^2 + c trained from m = 0, s = 1.5.
_KA_MEAN = (1.0, -0.5)
_KA_SCALE = 0.7
_KA_START_SCALE = 1.5
_KA_BATCH = 128
_KA_STEPS = 400
_KA_LEARNING_RATE = 0.05
#: The reference sampler's settings in the known-answer run: Langevin with step
#: h has stationary variance s^2 / (1 - h / (2 s^2)), 2 % above s^2 = 0.49 at
#: h = 0.02 (1 % on s); 30 steps of it relax (1 - h/s^2)^60 = 8 % of a
#: mis-set variance, so CD's chains move well away from the data each update.
_KA_CHAIN_STEPS = 30
_KA_STEP_SIZE = 0.02
#: Tolerance on each coordinate of the mean. Minibatch noise is what moves it
#: (regularisers of a quadratic energy are symmetric about the mean): with the
#: learning rate decayed tenfold, the last ~100 updates average some 10^4 draws,
#: a standard error ~0.01 for likelihood gradients; denoising score matching's
#: noisier gradient lands up to 0.06 away. 0.2 s = 0.14 is over twice that and
#: far below the 1.1 (1.6 s) the mean starts away.
_KA_MEAN_TOL = 0.2 * _KA_SCALE
#: Allowed factor between the learnt scale s and the true s*. Unregularised
#: likelihood losses (CD, PCD, NCE) land within 3 %, denoising score matching
#: at sqrt(s*^2 + sigma^2) (1 % for sigma = 0.1). An energy-magnitude
#: regulariser biases s up: with Du & Mordatch's alpha * (E+^2 + E-^2), the
#: offset c free and negatives from the model, the log-scale gradient vanishes
#: where r = s*/s solves 2 (1 - r^2) = 4 alpha (1.5 r^4 - r^2 + 1.5), i.e.
#: s = 1.2 s* at the built-ins' alpha = 0.1 (observed: 1.20 pcd, 1.22 cd).
#: 1.4 admits that; it still fails a sign error (the scale runs off), a loss
#: that does not learn the scale (it stays at 1.5 = 2.1 s*), and one that
#: learns p^b for b outside (0.5, 2) (s = s* / sqrt(b)).
_KA_SCALE_FACTOR = 1.4
#: The reference buffer: one slot per chain, so every update draws every slot
#: and chains persist for all 400 updates; no restarts, whose fresh chains
#: (K steps from the uniform box) would bias a run this short.
_KA_BUFFER = {"capacity": _KA_BATCH, "reinit_prob": 0.0}


def _quadratic_energy(params: Mapping[str, Any], x: jax.Array, y: Any = None) -> jax.Array:
    """``0.5 |(x - mean) / scale|^2 + offset`` per row (a Gaussian's energy).

    With labels, each class shifts the mean by its own ``shift[y]``. The free
    ``offset`` lets a loss that penalises energy magnitudes centre them
    without distorting the scale (see ``_KA_SCALE_FACTOR``).
    """
    mean = params["mean"]
    if y is not None and "shift" in params:
        mean = mean + params["shift"][y]
    z = (x - mean) * jnp.exp(-params["log_scale"])
    return 0.5 * jnp.sum(z**2, axis=-1) + params["offset"]


def _energy_params(mean: Any, scale: float, num_classes: int | None = None) -> dict[str, jax.Array]:
    params = {
        "mean": jnp.broadcast_to(jnp.asarray(mean, jnp.float32), (2,)),
        "log_scale": jnp.full((2,), math.log(scale), jnp.float32),
        "offset": jnp.zeros((), jnp.float32),
    }
    if num_classes is not None:
        params["shift"] = 0.5 * jnp.eye(num_classes, 2, dtype=jnp.float32)
    return params


def _recover_gaussian(
    loss_fn: Any, sampler: Any, buffer: Any, data: BuildContext, loss_params: Any, loss_state: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Train the quadratic energy with ``loss_fn`` on ``N(_KA_MEAN, _KA_SCALE^2)``.

    Adam over (energy parameters, loss parameters) with the loss's own
    gradient, for ``_KA_STEPS`` steps in one compiled ``lax.scan``; the
    learning rate decays tenfold (cosine) so the end point is not dominated by
    the last minibatches. Returns the learnt mean and scale.
    """
    import optax

    from ebmkit.training.step import make_loss_context

    true_mean = jnp.asarray(_KA_MEAN, jnp.float32)
    tx = optax.adam(optax.cosine_decay_schedule(_KA_LEARNING_RATE, _KA_STEPS, alpha=0.1))
    tunables = None
    if sampler is not None:
        tunables = dict(sampler.tunables)
        if "step_size" in tunables:
            tunables["step_size"] = _KA_STEP_SIZE

    def step(carry: Any, key: jax.Array) -> tuple[Any, None]:
        trainable, opt_state, buffer_state, state = carry
        data_key, loss_key = jax.random.split(key)
        x = true_mean + _KA_SCALE * jax.random.normal(data_key, (_KA_BATCH, 2), jnp.float32)
        ctx = make_loss_context(
            sampler=sampler,
            sample_energy_fn=partial(_quadratic_energy, jax.lax.stop_gradient(trainable[0])),
            buffer=buffer,
            buffer_state=buffer_state,
            tunables=tunables,
            num_steps=_KA_CHAIN_STEPS if sampler is not None else None,
            state=state,
            data=data,
        )

        def objective(trainable: Any) -> tuple[jax.Array, LossContext]:
            energy_params, params = trainable
            value, _, out = loss_fn(loss_key, partial(_quadratic_energy, energy_params), Batch(x), ctx._replace(params=params))
            return value, out

        (_, out), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), opt_state, out.buffer_state, out.state), None

    @jax.jit
    def train(key: jax.Array) -> Any:
        trainable = (_energy_params(0.0, _KA_START_SCALE), loss_params)
        buffer_state = None if buffer is None else buffer.init(jax.random.key(0), jnp.zeros((2,), jnp.float32))
        carry = (trainable, tx.init(trainable), buffer_state, loss_state)
        (trainable, *_), _ = jax.lax.scan(step, carry, jax.random.split(key, _KA_STEPS))
        return trainable[0]

    learnt = train(jax.random.key(2024))
    return np.asarray(learnt["mean"]), np.exp(np.asarray(learnt["log_scale"]))


def _known_answer_check(
    loss_fn: Any,
    sampler: Any,
    buffer: Any,
    data: BuildContext,
    loss_params: Any,
    loss_state: Any,
    rec: _Recorder,
) -> None:
    """Trained with ``loss_fn``, the quadratic energy lands near the true mean and scale."""
    with rec.check(KNOWN_ANSWER):
        mean, scale = _recover_gaussian(loss_fn, sampler, buffer, data, loss_params, loss_state)
        true_mean = np.asarray(_KA_MEAN)
        mean_ok = np.all(np.abs(mean - true_mean) <= _KA_MEAN_TOL)
        ratio = scale / _KA_SCALE
        scale_ok = np.all((ratio <= _KA_SCALE_FACTOR) & (ratio >= 1.0 / _KA_SCALE_FACTOR))
        _require(
            bool(mean_ok and scale_ok),
            f"trained on N({list(_KA_MEAN)}, {_KA_SCALE}^2 I) from mean (0, 0), scale "
            f"{_KA_START_SCALE}, a quadratic energy ended at mean {_rounded(mean)} "
            f"(want {list(_KA_MEAN)} +- {_KA_MEAN_TOL:.2f}) and scale {_rounded(scale)} "
            f"(want {_KA_SCALE} within a factor {_KA_SCALE_FACTOR}). A sign error sends the "
            "parameters away from the data; a misplaced scale means a wrong factor in the loss "
            "or a biased gradient",
        )
