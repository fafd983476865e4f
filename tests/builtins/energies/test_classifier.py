"""The ``classifier`` energy: a K-output network as E(x) and E(x, y), and
conditional sampling through it (``model.generate(labels=...)``)."""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ebmkit
from ebmkit.config import (
    EnergyConfig,
    config_class,
    load_config,
    positive_int,
    structure,
    unstructure,
)
from ebmkit.errors import ConfigError
from ebmkit.model import EBM
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

CENTRES = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]], np.float32)


@config_class
class QuadLogitsConfig(EnergyConfig):
    """Logits f_k(x) = -|x - c_k|^2 / 2: p(x | y = k) is N(c_k, I) exactly."""

    out_features: int = attrs.field(default=1, validator=positive_int)


class QuadLogits(nnx.Module):
    def __init__(self, k: int):
        self.centres = nnx.Param(jnp.asarray(CENTRES[:k]))

    def __call__(self, x):
        return -0.5 * jnp.sum((x[:, None, :] - self.centres[None]) ** 2, axis=-1)


QUAD_SPEC = ComponentSpec(
    kind="energy", name="quad_logits", config=QuadLogitsConfig,
    build=lambda cfg, ctx: QuadLogits(cfg.out_features), summary="test logits with Gaussian classes",
)


def _context(num_classes=3, shape=(2,)):
    return BuildContext(event_shape=shape, num_classes=num_classes, rngs=nnx.Rngs(0), bounds=(-4.0, 4.0))


def _classifier(network="mlp", data_classes=3, shape=(2,), **fields):
    spec = ebmkit.get_spec("energy", "classifier")
    return spec.create(spec.config(network=network, **fields), _context(data_classes, shape))


@pytest.mark.parametrize(("network", "shape"), [("mlp", (2,)), ({"name": "cnn", "hidden_dims": [8]}, (8, 8, 1))])
def test_energies_are_minus_logsumexp_and_minus_the_logit(network, shape):
    energy = _classifier(network, 3, shape)
    graphdef, state = nnx.split(energy)

    @jax.jit
    def parts(state, x, y):
        net = nnx.merge(graphdef, state)
        per_class = jnp.stack([net(x, jnp.full((x.shape[0],), k)) for k in range(3)], axis=1)
        return net.logits(x), net(x), net(x, y), per_class

    x = jax.random.normal(jax.random.key(0), (5, *shape))
    y = jnp.array([0, 1, 2, 1, 0])
    logits, marginal, joint, per_class = parts(state, x, y)
    assert logits.shape == (5, 3)
    np.testing.assert_allclose(marginal, -jax.nn.logsumexp(logits, axis=1), rtol=1e-6)
    np.testing.assert_allclose(joint, -logits[jnp.arange(5), y], rtol=1e-6)
    # p(y | x) = exp(E(x) - E(x, y)) sums to one over the labels.
    np.testing.assert_allclose(jnp.exp(marginal[:, None] - per_class).sum(axis=1), 1.0, rtol=1e-5)


def test_out_features_one_keeps_the_plain_energy_and_k_gives_k_outputs():
    spec = ebmkit.get_spec("energy", "mlp")
    ctx = _context()
    x = jnp.ones((4, 2))
    assert spec.create(spec.config(), ctx)(x).shape == (4,)
    assert spec.create(spec.config(out_features=5), ctx)(x).shape == (4, 5)


def test_number_of_classes_from_the_data_or_the_config_and_clear_errors():
    assert _classifier(data_classes=4).num_classes == 4
    assert _classifier(data_classes=None, num_classes=6).num_classes == 6
    with pytest.raises(ConfigError, match="needs a number of classes"):
        _classifier(data_classes=None)
    with pytest.raises(ValueError, match="cannot wrap another classifier"):
        ebmkit.get_spec("energy", "classifier").config(network="classifier")
    energy = _classifier()
    with pytest.raises(ValueError, match="integer labels of shape"):
        energy(jnp.ones((4, 2)), jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="integer labels of shape"):
        energy(jnp.ones((4, 2)), jnp.zeros((4,), jnp.float32))


def test_config_round_trips_with_its_nested_network():
    cfg = load_config({"energy": {"name": "classifier", "network": {"name": "mlp", "hidden_dims": [16]}}})
    assert cfg.energy.network.hidden_dims == (16,)
    assert structure(unstructure(cfg), type(cfg)) == cfg


def test_generate_with_labels_samples_each_class_conditional_density():
    """Chains on E(x, y) of logits -|x - c_y|^2/2 sample N(c_y, I): every sampler
    sees only energy_fn(x), the label travels with the energy."""
    with ebmkit.overlay(QUAD_SPEC):
        cfg = load_config({
            "energy": {"name": "classifier", "network": "quad_logits"},
            "loss": "jem", "sampler": {"name": "mala", "num_steps": 300, "step_size": 0.5},
            "buffer": {"name": "replay", "capacity": 64},
        })
        model = EBM(cfg, data=_context(3))
        labels = np.repeat(np.arange(3), 400)
        x = np.asarray(model.generate(len(labels), labels=labels, rng_key=jax.random.key(1)))
        for k in range(3):
            np.testing.assert_allclose(x[labels == k].mean(axis=0), CENTRES[k], atol=0.2)
            np.testing.assert_allclose(x[labels == k].std(axis=0), 1.0, atol=0.15)
        one = np.asarray(model.generate(300, labels=2, rng_key=jax.random.key(2)))
        np.testing.assert_allclose(one.mean(axis=0), CENTRES[2], atol=0.25)
        with pytest.raises(ValueError, match="label 3 is out of range"):
            model.generate(4, labels=3)
        with pytest.raises(ValueError, match="one int or one per sample"):
            model.generate(4, labels=[0, 1])


def test_labels_for_an_energy_without_a_condition_say_what_to_use():
    model = EBM(load_config({"loss": "pcd"}), event_shape=(2,))
    with pytest.raises(ValueError, match="labels need a conditional energy"):
        model.generate(4, labels=0)
