"""The ``jem`` loss: its two terms against hand computation, its needs, its
conditional chains, and every other loss ignoring labels. (The tiny JEM run
end to end is in tests/evaluate/test_classify.py, with the figures it reports.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ebmkit
from ebmkit.config import load_config
from ebmkit.errors import ConfigError
from ebmkit.model import EBM
from ebmkit.training.step import make_loss_context
from ebmkit.types import Batch, BuildContext

LOGIT_W = jnp.array([[1.0, -1.0, 0.5], [0.3, 2.0, -1.0]])


def _energy_fn(x, y=None):
    """E(x, y) = -(x W)[y], E(x) = -logsumexp(x W): a linear 3-class classifier."""
    logits = x @ LOGIT_W
    if y is None:
        return -jax.nn.logsumexp(logits, axis=1)
    return -logits[jnp.arange(x.shape[0]), y]


def _loss(**fields):
    spec = ebmkit.get_spec("loss", "jem")
    return spec.create(spec.config(**fields), BuildContext(event_shape=(2,), num_classes=3))


def _ctx(buffer_capacity=8, num_steps=3):
    sampler = ebmkit.build_component(load_config({"sampler": {"name": "langevin", "num_steps": num_steps}}).sampler,
                                     BuildContext(event_shape=(2,)))
    buffer = ebmkit.build_component(load_config({"buffer": {"name": "replay", "capacity": buffer_capacity,
                                                            "reinit_prob": 0.0}}).buffer,
                                    BuildContext(event_shape=(2,), bounds=(-1.0, 1.0)))
    state = buffer.init(jax.random.key(0), jnp.zeros((2,)))
    return make_loss_context(sampler=sampler, sample_energy_fn=_energy_fn, buffer=buffer, buffer_state=state)


X = jnp.array([[0.5, 1.0], [-1.0, 0.2], [2.0, -0.5], [0.0, 0.0]])
Y = jnp.array([0, 1, 2, 1])


def _cross_entropy():
    logits = np.asarray(X @ LOGIT_W, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(4), np.asarray(Y)])


def test_classifier_alone_is_the_cross_entropy():
    loss_fn = _loss(weight_px=0.0, weight_ce=2.0)
    value, metrics, _ = loss_fn(jax.random.key(0), _energy_fn, Batch(X, Y), make_loss_context(
        sampler=None, sample_energy_fn=_energy_fn))
    np.testing.assert_allclose(metrics["ce"], _cross_entropy(), rtol=1e-5)
    np.testing.assert_allclose(value, 2.0 * _cross_entropy(), rtol=1e-5)
    assert "energy_gap" not in metrics


def test_joint_loss_adds_weighted_pcd_and_writes_chains_back():
    loss_fn = _loss(weight_px=0.5, weight_ce=1.5, alpha=0.2)
    ctx = _ctx()

    def run():
        value, metrics, out = loss_fn(jax.random.key(3), _energy_fn, Batch(X, Y), ctx)
        x_neg, _, _ = loss_fn.negatives(jax.random.key(3), 4, ctx)  # same key, same chains
        return value, metrics, out.buffer_state, x_neg

    value, metrics, buffer_state, x_neg = jax.jit(run)()
    e_pos, e_neg = _energy_fn(X), _energy_fn(x_neg)
    contrastive = e_pos.mean() - e_neg.mean()
    reg = 0.2 * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
    np.testing.assert_allclose(value, 1.5 * _cross_entropy() + 0.5 * (contrastive + reg), rtol=1e-5)
    np.testing.assert_allclose(metrics["energy_gap"], e_neg.mean() - e_pos.mean(), rtol=1e-5)
    assert int(buffer_state.filled.sum()) == 4  # the four chains were written back


def test_gradient_flows_into_the_energy_not_through_the_chains():
    loss_fn = _loss(weight_px=1.0, alpha=0.0)
    ctx = _ctx()

    def value(w):
        def energy_fn(x, y=None):
            logits = x @ w
            return -jax.nn.logsumexp(logits, axis=1) if y is None else -logits[jnp.arange(x.shape[0]), y]

        return loss_fn(jax.random.key(1), energy_fn, Batch(X, Y), ctx)[0]

    grad = jax.grad(value)(LOGIT_W)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


@pytest.mark.parametrize("weight_ce", [1.0, 2.0])
def test_data_side_logit_gradient_is_weighted_cross_entropy_minus_marginal(weight_ce):
    """On the data, weight_ce * CE + weight_px * E(x+) moves the logits by
    ((weight_ce - weight_px) * p(y|x) - weight_ce * onehot(y)) / n: at equal
    weights (JEM's joint likelihood) only the true class's logit is raised and
    the other classes' logits get no push down from the data at all, which is
    why weight_ce > weight_px sharpens p(y | x)."""
    loss_fn = _loss(weight_px=1.0, weight_ce=weight_ce, alpha=0.0)
    ctx = _ctx()
    n = X.shape[0]

    def value(offset):
        def energy_fn(x, y=None):  # the offset shifts the data rows' logits only (the first n rows)
            logits = x @ LOGIT_W + jnp.pad(offset, ((0, x.shape[0] - n), (0, 0)))
            return -jax.nn.logsumexp(logits, axis=1) if y is None else -logits[jnp.arange(x.shape[0]), y]

        return loss_fn(jax.random.key(1), energy_fn, Batch(X, Y), ctx)[0]

    grad = np.asarray(jax.grad(value)(jnp.zeros((n, 3))), np.float64)
    p = np.asarray(jax.nn.softmax(X @ LOGIT_W, axis=1), np.float64)
    onehot = np.eye(3)[np.asarray(Y)]
    np.testing.assert_allclose(grad, ((weight_ce - 1.0) * p - weight_ce * onehot) / n, atol=1e-6)


def test_conditional_chains_run_on_the_slot_s_class():
    """Slot s holds a chain of class s mod K: with logits -|x - c_k|^2 / (2 * 0.3^2)
    its chain ends near c_(s mod K), whichever centre it started nearest."""
    centres = jnp.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])

    def energy_fn(x, y=None):
        logits = -0.5 * jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1) / 0.3**2
        return -jax.nn.logsumexp(logits, axis=1) if y is None else -logits[jnp.arange(x.shape[0]), y]

    loss_fn = _loss(conditional=True)
    ctx = _ctx(buffer_capacity=9, num_steps=200)._replace(sample_energy_fn=energy_fn)
    state = jax.jit(lambda: loss_fn.negatives(jax.random.key(0), 9, ctx)[2])()
    slots = np.flatnonzero(np.asarray(state.filled))
    assert len(slots) == 9
    stored = np.asarray(state.data)
    for s in range(9):
        nearest = np.argmin(np.sum((stored[s] - np.asarray(centres)) ** 2, axis=1))
        assert nearest == s % 3, (s, stored[s])


def test_needs_follow_the_generative_weight_and_bad_settings_fail_clearly():
    spec = ebmkit.get_spec("loss", "jem")
    assert spec.needs_of(spec.config()) == {"sampler", "buffer", "labels"}
    assert spec.needs_of(spec.config(weight_px=0.0)) == {"labels"}
    cfg = load_config({"energy": "classifier", "loss": {"name": "jem", "weight_px": 0}})
    assert cfg.sampler is None and cfg.buffer is None
    with pytest.raises(ConfigError, match="both 0"):
        load_config({"loss": {"name": "jem", "weight_px": 0, "weight_ce": 0}})
    with pytest.raises(ConfigError, match="needs labelled data"):
        EBM(load_config({"energy": "classifier", "loss": "jem"}),
            data=BuildContext(event_shape=(2,), dataset_name="unlabelled"))
    with pytest.raises(ValueError, match="needs labelled batches"):
        _loss(weight_px=0.0)(jax.random.key(0), _energy_fn, Batch(X), make_loss_context(
            sampler=None, sample_energy_fn=_energy_fn))

    def unconditional(x, y=None):  # as mlp: a condition is refused
        if y is not None:
            raise ValueError("got a condition y but the network takes none")
        return jnp.sum(x, axis=1)

    with pytest.raises(ValueError, match="takes labels as its condition"):
        _loss(weight_px=0.0)(jax.random.key(0), unconditional, Batch(X, Y), make_loss_context(
            sampler=None, sample_energy_fn=_energy_fn))


def test_unlabelled_losses_ignore_labels():
    """Every other built-in loss gives the same value and metrics on (x, y)
    as on x alone (one compiled comparison per loss, on a quadratic energy)."""
    from ebmkit.testing.conformance.common import _context
    from ebmkit.types import OwnsParameters, OwnsState

    data = _context((2,))
    ctx = _ctx(buffer_capacity=16, num_steps=2)._replace(data=data)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    y = jnp.arange(8) % 3

    def energy_fn(x_, y_=None):
        return 0.5 * jnp.sum((x_ - 0.3) ** 2, axis=1)

    for name in ("cd", "pcd", "dsm", "ssm", "nce", "ed"):
        spec = ebmkit.get_spec("loss", name)
        loss_fn = spec.create(spec.config(), data)
        own = ctx._replace(
            params=loss_fn.init_params(jax.random.key(1), data) if isinstance(loss_fn, OwnsParameters) else None,
            state=loss_fn.init_state(jax.random.key(1), data) if isinstance(loss_fn, OwnsState) else None,
        )

        def both(loss_fn=loss_fn, own=own):
            labelled = loss_fn(jax.random.key(2), energy_fn, Batch(x, y), own)
            plain = loss_fn(jax.random.key(2), energy_fn, Batch(x), own)
            return labelled[:2], plain[:2]

        (v1, m1), (v2, m2) = jax.jit(both)()
        np.testing.assert_allclose(v1, v2, rtol=1e-6, err_msg=name)
        assert m1.keys() == m2.keys(), name
        for key in m2:
            np.testing.assert_allclose(m1[key], m2[key], rtol=1e-6, err_msg=f"{name}: {key}")
