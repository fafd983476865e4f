"""The built-in losses beyond CD: dsm, ssm, nce, ed; the CD objectives and KL term.

The conformance kit (tests/testing) already runs every registered loss through
its checks, including a loose known answer; here each loss must recover a
Gaussian tightly, train from a config string with no sampler or buffer, and
the options change what they should.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ebmkit
from ebmkit.errors import ConfigError
from ebmkit.testing.conformance.common import _context
from ebmkit.testing.conformance.loss_known_answer import _KA_MEAN, _KA_SCALE, _recover_gaussian
from ebmkit.types import Batch, LossContext, OwnsParameters

TRAIN = {"steps": 30, "batch_size": 64, "log_every": 10, "checkpoint_every": 30}


def _build(name: str, **fields):
    spec = ebmkit.get_spec("loss", name)
    data = _context((2,))
    return spec.create(spec.config(**fields), data), data


@pytest.mark.parametrize(
    ("name", "fields", "want_scale"),
    [
        # dsm learns the data blurred by sigma: sqrt(0.49 + 0.01)
        ("dsm", {"sigma": 0.1}, math.sqrt(_KA_SCALE**2 + 0.1**2)),
        ("ssm", {}, _KA_SCALE),
        ("ssm", {"variance_reduction": False, "num_projections": 4, "projection": "rademacher"}, _KA_SCALE),
        ("nce", {}, _KA_SCALE),
        ("nce", {"noise": "uniform"}, _KA_SCALE),
        ("ed", {}, _KA_SCALE),
        ("ed", {"t": 1.0, "num_negatives": 4}, _KA_SCALE),
    ],
)
def test_each_loss_recovers_a_gaussian(name, fields, want_scale):
    loss_fn, data = _build(name, **fields)
    params = loss_fn.init_params(jax.random.key(1), data) if isinstance(loss_fn, OwnsParameters) else None
    mean, scale = _recover_gaussian(loss_fn, None, None, data, params, None)
    np.testing.assert_allclose(mean, _KA_MEAN, atol=0.06)
    np.testing.assert_allclose(scale, want_scale, rtol=0.06)


def test_a_sign_error_is_caught_by_the_same_check():
    loss_fn, data = _build("ed")

    def flipped(key, energy_fn, batch, ctx):
        value, metrics, ctx = loss_fn(key, lambda x, y=None: -energy_fn(x), batch, ctx)
        return value, metrics, ctx

    mean, scale = _recover_gaussian(flipped, None, None, data, None, None)
    assert not (np.allclose(mean, _KA_MEAN, atol=0.2) and np.allclose(scale, _KA_SCALE, rtol=0.3))


def test_nce_learns_the_log_normaliser():
    loss_fn, data = _build("nce")
    # The quadratic energy's own offset is free too, so train a fixed-offset
    # energy: then c must become log Z of exp(-0.5 |(x - m) / s|^2) = log(2 pi s^2).
    from ebmkit.testing.conformance import loss_known_answer as ka

    original = ka._quadratic_energy

    def no_offset(params, x, y=None):
        return original({**params, "offset": jnp.zeros(())}, x, y)

    ka._quadratic_energy = no_offset
    try:
        import optax

        params = loss_fn.init_params(jax.random.key(1), data)
        energy_params = ka._energy_params(0.0, 1.5)
        tx = optax.adam(0.03)
        trainable = (energy_params, params)
        opt = tx.init(trainable)

        @jax.jit
        def step(trainable, opt, key):
            k1, k2 = jax.random.split(key)
            x = jnp.asarray(_KA_MEAN) + _KA_SCALE * jax.random.normal(k1, (256, 2))

            def f(tr):
                e, p = tr
                v, _, _ = loss_fn(k2, lambda z, y=None: no_offset(e, z), Batch(x), LossContext(params=p, data=data))
                return v

            g = jax.grad(f)(trainable)
            u, opt = tx.update(g, opt, trainable)
            return optax.apply_updates(trainable, u), opt

        for key in jax.random.split(jax.random.key(0), 800):
            trainable, opt = step(trainable, opt, key)
    finally:
        ka._quadratic_energy = original
    scale = float(np.mean(np.exp(np.asarray(trainable[0]["log_scale"]))))
    assert abs(scale - _KA_SCALE) < 0.05
    assert abs(float(trainable[1]["log_normaliser"]) - math.log(2 * math.pi * scale**2)) < 0.1


def test_nce_without_a_reference_or_bounds_says_what_to_do():
    from ebmkit.types import BuildContext

    spec = ebmkit.get_spec("loss", "nce")
    with pytest.raises(ValueError, match="offers none"):
        spec.create(spec.config(), BuildContext(event_shape=(2,), dataset_name="mine"))
    with pytest.raises(ValueError, match="declares no bounds"):
        spec.create(spec.config(noise="uniform"), BuildContext(event_shape=(2,), dataset_name="mine"))


@pytest.mark.parametrize(
    "loss",
    [
        "dsm",
        "ssm",
        "nce",
        "ed",
    ],
)
def test_each_trains_on_moons_from_a_config_string_with_no_sampler_or_buffer(tmp_path, loss):
    config = ebmkit.load_config(
        loss=loss, dataset="moons", energy={"name": "mlp", "hidden_dims": [16, 16]}, train=TRAIN
    )
    assert config.sampler is None and config.buffer is None
    summary = ebmkit.train_job(config, out=tmp_path / loss)
    assert summary["steps"] == TRAIN["steps"]
    assert np.isfinite(summary["kl_gap"]) and np.isfinite(summary["loss"])
    assert "energy_gap" not in summary or loss == "ed"


def test_multi_scale_dsm_needs_a_noise_conditioned_energy():
    with pytest.raises(ConfigError, match="energy.condition"):
        ebmkit.load_config(loss={"name": "dsm", "num_scales": 4, "sigma": 0.05, "sigma_max": 1.0})
    config = ebmkit.load_config(
        loss={"name": "dsm", "num_scales": 4, "sigma": 0.05, "sigma_max": 1.0},
        energy={"name": "mlp", "hidden_dims": [16], "condition": "noise_level", "noise_level": 0.05},
        train={"steps": 3, "batch_size": 16},
    )
    model = ebmkit.assemble(config)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    metrics = model.train_step(x)
    assert np.isfinite(float(metrics["dsm"]))
    loss_fn = ebmkit.get_spec("loss", "dsm").create(config.loss, _context((2,)))
    assert loss_fn.sigmas[0] == pytest.approx(1.0) and loss_fn.sigmas[-1] == pytest.approx(0.05)
    assert loss_fn.sigmas[1] / loss_fn.sigmas[0] == pytest.approx(loss_fn.sigmas[2] / loss_fn.sigmas[1])


def test_the_noise_conditioned_mlp_uses_its_level_when_none_is_given():
    spec = ebmkit.get_spec("energy", "mlp")
    from flax import nnx

    net = spec.create(
        spec.config(hidden_dims=(8,), condition="noise_level", noise_level=0.2),
        _context((2,)).replace(rngs=nnx.Rngs(0)),
    )
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(net(x), net(x, jnp.full((3,), 0.2)), rtol=1e-6)
    assert not np.allclose(net(x), net(x, jnp.full((3,), 1.0)))
    plain = spec.create(spec.config(hidden_dims=(8,)), _context((2,)).replace(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="takes none"):
        plain(x, jnp.ones((3,)))


# -- the CD objectives and the KL term ------------------------------------------------


def _contrastive(**fields):
    from ebmkit_builtins.losses.contrastive import ContrastiveLoss

    return ContrastiveLoss(0.0, persistent=False, **fields)


def test_objectives_give_their_formulas():
    e_pos = jnp.asarray([0.0, 1.0, 2.0])
    e_neg = jnp.asarray([3.0, 0.5, -1.0])
    assert float(_contrastive()._objective(e_pos, e_neg)) == pytest.approx(1.0 - 2.5 / 3)
    softplus = np.mean(np.log1p(np.exp(np.asarray(e_pos - e_neg))))
    assert float(_contrastive(objective="softplus")._objective(e_pos, e_neg)) == pytest.approx(softplus, rel=1e-6)
    # logsumexp: the gradient w.r.t. the negatives' energies is -softmax(-E-)
    # (the gradient of mean E+ + log mean exp(-E-)).
    lse = _contrastive(objective="logsumexp")
    grad = jax.grad(lambda e: lse._objective(e_pos, e))(e_neg)
    np.testing.assert_allclose(grad, -jax.nn.softmax(-e_neg), rtol=1e-6)
    value = lse._objective(e_pos, e_neg)
    assert float(value) == pytest.approx(1.0 - float(jnp.sum(jax.nn.softmax(-e_neg) * e_neg)), rel=1e-6)
    with pytest.raises(ValueError, match="objective"):
        _contrastive(objective="hinge")


@pytest.mark.parametrize("objective", ["softplus", "logsumexp"])
def test_objectives_train_and_recover_a_gaussian_mean(objective):
    from ebmkit.testing.conformance.loss import _reference_component
    from ebmkit.testing.conformance.loss_known_answer import _KA_BUFFER

    data = _context((2,))
    spec = ebmkit.get_spec("loss", "pcd")
    loss_fn = spec.create(spec.config(objective=objective, alpha=0.0), data)
    sampler = _reference_component("sampler", "langevin", data)
    buffer = _reference_component("buffer", "replay", data, **_KA_BUFFER)
    mean, scale = _recover_gaussian(loss_fn, sampler, buffer, data, None, None)
    np.testing.assert_allclose(mean, _KA_MEAN, atol=0.15)
    assert np.all((scale > 0.5 * _KA_SCALE) & (scale < 1.6 * _KA_SCALE))


def test_kl_term_flows_through_the_sampler_step_only():
    """The KL term's gradient comes through the samples, not the energy's value."""
    from ebmkit.testing.conformance.loss import _reference_component

    data = _context((2,))
    sampler = _reference_component("sampler", "langevin", data)
    loss_fn = _contrastive(kl_weight=1.0)
    assert {"kl", "kl_entropy"} <= set(loss_fn.metrics)

    def energy(theta, x, y=None):
        return 0.5 * theta * jnp.sum(x**2, axis=-1)

    x_neg = jax.random.normal(jax.random.key(0), (64, 2))
    ctx = LossContext(sampler=sampler, num_steps=5, tunables=dict(sampler.tunables), data=data)

    def kl(theta, stop_value):
        sample_fn = (lambda x, y=None: energy(jax.lax.stop_gradient(theta), x)) if stop_value else (
            lambda x, y=None: energy(2.0, x))
        e, h = loss_fn._kl_term(jax.random.key(1), lambda x, y=None: energy(theta, x), x_neg, ctx._replace(
            sample_energy_fn=sample_fn))
        return e - h

    g = jax.grad(kl)(2.0, True)
    assert np.isfinite(float(g)) and abs(float(g)) > 1e-4
    # With a value that does not depend on theta at all, the gradient is the same:
    # only the samples carry it.
    np.testing.assert_allclose(g, jax.grad(kl)(2.0, False), rtol=1e-5)


def test_kl_term_trains_end_to_end(tmp_path):
    config = ebmkit.load_config(
        loss={"name": "pcd", "kl_weight": 0.5, "objective": "softplus"},
        sampler={"name": "langevin", "num_steps": 5},
        energy={"name": "mlp", "hidden_dims": [16]},
        train={"steps": 3, "batch_size": 16},
    )
    model = ebmkit.assemble(config)
    metrics = model.train_step(np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32))
    assert np.isfinite(float(metrics["kl"])) and np.isfinite(float(metrics["kl_entropy"]))


def test_nce_built_without_a_data_set_draws_noise_from_the_config_s_own():
    # The guide's path: EBM(config, event_shape=...) with no data context.
    config = ebmkit.load_config(loss="nce", dataset="moons", energy={"name": "mlp", "hidden_dims": [8]})
    model = ebmkit.EBM(config, event_shape=(2,), data_bounds=(-4.0, 4.0))
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    assert np.isfinite(float(model.train_step(x)["nce"]))
    # Another event shape than the data set's: no reference, a clear error.
    with pytest.raises(ebmkit.ConfigError, match="reference distribution"):
        ebmkit.EBM(config, event_shape=(3,))
