"""The seed-guide surface: names, factories, EnergyTrainer, presets, diagnose."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ebmkit
from ebmkit import (
    EBM,
    SAMPLING_PRESETS,
    DeepEBM,
    DeepEBMConfig,
    DeviceManager,
    EBMConfig,
    EnergyNetworkConfig,
    EnergyTrainer,
    EnergyTrainingConfig,
    MCMCConfig,
    SampleBufferConfig,
    create_cifar_ebm,
    create_mnist_ebm,
    create_simple_ebm,
    diagnose,
)

GUIDE_RNGS = {"params": 0, "noise": 1, "sample": 2}


def test_every_guide_name_is_importable_from_the_top_level():
    for name in (
        "EBM", "DeepEBM", "EBMConfig", "DeepEBMConfig", "EnergyNetworkConfig", "MCMCConfig",
        "SampleBufferConfig", "create_simple_ebm", "create_mnist_ebm", "create_cifar_ebm",
        "EnergyTrainer", "EnergyTrainingConfig", "DeviceManager", "diagnose", "SAMPLING_PRESETS",
    ):
        assert getattr(ebmkit, name) is not None
        assert name in ebmkit.__all__


def test_guide_defaults():
    assert MCMCConfig().n_steps == 60
    assert MCMCConfig().step_size == 0.01
    assert MCMCConfig().noise_scale == 0.005
    assert SampleBufferConfig().capacity == 8192
    assert SampleBufferConfig().reinit_prob == 0.05
    assert EBMConfig().alpha == 0.01
    assert EnergyNetworkConfig().hidden_dims == (128, 128)
    assert EnergyNetworkConfig().activation == "gelu"


@pytest.mark.parametrize(
    "factory",
    [
        lambda rngs: create_simple_ebm(input_dim=2, rngs=rngs, hidden_dims=(16, 16), mcmc_steps=3),
        lambda rngs: create_mnist_ebm(rngs=rngs, hidden_dims=(4, 8), mcmc_steps=2, sample_buffer_capacity=64),
        lambda rngs: create_cifar_ebm(rngs=rngs, hidden_dims=(4, 8), mcmc_steps=2, sample_buffer_capacity=64),
    ],
    ids=["simple", "mnist", "cifar"],
)
def test_factories_accept_the_guides_rngs(factory):
    model = factory(nnx.Rngs(**GUIDE_RNGS))
    x = jnp.zeros((2, *model.event_shape))
    out = model(x)
    assert out["energy"].shape == (2,)
    assert out["score"].shape == x.shape
    assert model.generate(2, n_steps=2).shape == x.shape


def test_create_mnist_ebm_honours_activation():
    x = jax.random.normal(jax.random.key(0), (3, 28, 28, 1))
    a = create_mnist_ebm(rngs=nnx.Rngs(0), hidden_dims=(4, 8), activation="tanh")
    b = create_mnist_ebm(rngs=nnx.Rngs(0), hidden_dims=(4, 8), activation="relu")
    assert a.config.energy.activation == "tanh"
    assert b.config.energy.activation == "relu"
    assert isinstance(a, DeepEBM) and a.event_shape == (28, 28, 1)
    assert not np.allclose(a.energy(x), b.energy(x))


def test_factories_reject_unknown_keywords():
    with pytest.raises(TypeError):
        create_mnist_ebm(rngs=nnx.Rngs(0), hidden_dim=(4, 8))
    with pytest.raises(TypeError):
        create_simple_ebm(2, rngs=nnx.Rngs(0), learning_rat=1e-3)
    with pytest.raises(TypeError):
        EBMConfig(input_dim=2, alpah=0.1)


def test_config_errors_name_the_guide_field():
    with pytest.raises(ebmkit.ConfigError, match="did you mean 'mlp'"):
        EBM(EBMConfig(input_dim=2, energy_network=EnergyNetworkConfig(network_type="mpl")), rngs=nnx.Rngs(0))
    with pytest.raises(ebmkit.ConfigError, match=r"energy_network\.use_residual"):
        EBM(EBMConfig(input_dim=2, energy_network=EnergyNetworkConfig(use_residual=False)), rngs=nnx.Rngs(0))
    with pytest.raises(ebmkit.ConfigError, match="input_dim"):
        EBM(EBMConfig(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_steps"):
        MCMCConfig(n_steps=0)


def test_deep_ebm_config_maps_to_cnn():
    config = DeepEBMConfig(
        input_shape=(8, 8, 1),
        energy_network=EnergyNetworkConfig(hidden_dims=(4, 8), network_type="cnn", use_spectral_norm=True),
        mcmc=MCMCConfig(n_steps=2),
        sample_buffer=SampleBufferConfig(capacity=32),
    )
    model = DeepEBM(config, rngs=nnx.Rngs(**GUIDE_RNGS))
    ebmkit_config, shape = config.to_ebmkit()
    assert shape == (8, 8, 1)
    assert tuple(ebmkit_config.energy.input_shape) == (8, 8, 1)
    assert model.config == ebmkit_config
    with pytest.raises(ValueError, match="image events"):
        DeepEBM(EBMConfig(input_dim=4, mcmc=MCMCConfig(n_steps=2)), rngs=nnx.Rngs(0))


def test_temperature_selects_the_annealed_sampler():
    model = EBM(EBMConfig(input_dim=2, mcmc=MCMCConfig(n_steps=3, temperature=2.0)), rngs=nnx.Rngs(0))
    assert type(model.sampler).__module__ == "ebmkit_builtins.samplers.langevin"


@pytest.fixture
def toy_model():
    return create_simple_ebm(2, rngs=nnx.Rngs(**GUIDE_RNGS), hidden_dims=(16, 16), dropout_rate=0.1,
                             mcmc_steps=3, sample_buffer_capacity=128)


@pytest.mark.parametrize("method", ["pcd", "cd"])
@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_energy_trainer_under_nnx_jit_updates_parameters(toy_model, method, sampler):
    trainer = EnergyTrainer(EnergyTrainingConfig(training_method=method, mcmc_sampler=sampler, mcmc_steps=3))
    optimizer = nnx.Optimizer(toy_model, optax.adam(1e-2), wrt=nnx.Param)
    step = nnx.jit(trainer.train_step)
    batch = {"data": jax.random.normal(jax.random.key(0), (16, 2))}
    before = jax.tree.map(np.asarray, nnx.state(toy_model, nnx.Param))
    for i in range(2):
        loss, metrics = step(toy_model, optimizer, batch, jax.random.key(i))
    after = nnx.state(toy_model, nnx.Param)
    assert np.isfinite(float(loss))
    assert {"loss", "real_energy_mean", "fake_energy_mean", "energy_gap"} <= set(metrics)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))
    if method == "pcd":
        assert len(toy_model.sample_buffer) > 0
    else:
        assert len(toy_model.sample_buffer) == 0


def test_energy_trainer_eager_and_generate_samples(toy_model):
    trainer = EnergyTrainer(EnergyTrainingConfig(training_method="pcd", mcmc_steps=2))
    optimizer = nnx.Optimizer(toy_model, optax.adam(1e-3), wrt=nnx.Param)
    loss, _ = trainer.train_step(toy_model, optimizer, jnp.ones((8, 2)), jax.random.key(0))
    assert np.isfinite(float(loss))
    samples = trainer.generate_samples(toy_model, batch_size=5, key=jax.random.key(1), shape=(2,), num_steps=4)
    assert samples.shape == (5, 2)
    with pytest.raises(ValueError, match="does not match"):
        trainer.generate_samples(toy_model, batch_size=5, key=jax.random.key(1), shape=(3,))


def test_guide_basic_training_loop_runs_with_its_own_replay_buffer():
    """The guide's "Basic Training Loop", imports swapped; Flax 0.12's
    nnx.Optimizer needs wrt=nnx.Param, the only other change. The trainer owns
    a buffer of replay_buffer_size slots, independent of the model's."""
    import optax
    from flax import nnx

    from ebmkit import EnergyTrainer, EnergyTrainingConfig

    model = create_simple_ebm(2, rngs=nnx.Rngs(params=0, noise=1, sample=2), hidden_dims=(16, 16),
                              sample_buffer_capacity=128)
    rows = np.random.default_rng(0).normal(size=(4, 32, 2)).astype(np.float32)
    train_loader = [{"data": b} for b in rows]

    # Training configuration
    train_config = EnergyTrainingConfig(
        training_method="pcd",       # Persistent Contrastive Divergence
        mcmc_sampler="langevin",
        mcmc_steps=20,
        step_size=0.01,
        noise_scale=0.005,
        replay_buffer_size=10000,
        replay_buffer_init_prob=0.95,
    )

    # Create trainer, optimizer, and RNG key
    trainer = EnergyTrainer(train_config)
    optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
    rng = jax.random.key(42)

    # Training loop
    for _epoch in range(2):
        for batch in train_loader:
            rng, step_rng = jax.random.split(rng)
            loss, metrics = trainer.train_step(model, optimizer, batch, step_rng)

    assert np.isfinite(float(loss)) and {"loss", "energy_gap"} <= set(metrics)
    own = getattr(model, trainer.buffer_slot)
    assert own.data.shape == (10000, 2)
    assert int(np.count_nonzero(np.asarray(own.filled))) > 32  # chains persisted in the trainer's buffer
    assert len(model.sample_buffer) == 0  # the model's own buffer was not touched


def test_energy_trainer_buffer_under_nnx_jit(toy_model):
    trainer = EnergyTrainer(EnergyTrainingConfig(training_method="pcd", mcmc_steps=2, replay_buffer_size=64))
    optimizer = nnx.Optimizer(toy_model, optax.adam(1e-3), wrt=nnx.Param)
    step = nnx.jit(trainer.train_step)
    for i in range(3):
        step(toy_model, optimizer, jnp.ones((8, 2)) * i, jax.random.key(i))
    own = getattr(toy_model, trainer.buffer_slot)
    assert own.data.shape == (64, 2) and int(np.count_nonzero(np.asarray(own.filled))) >= 8
    assert len(toy_model.sample_buffer) == 0


def test_energy_trainer_rejects_unknown_names():
    with pytest.raises(ebmkit.ConfigError, match="hmc"):
        EnergyTrainer(EnergyTrainingConfig(mcmc_sampler="hcm"))
    with pytest.raises(TypeError):
        EnergyTrainingConfig(mcmc_step=3)


def test_presets(toy_model):
    assert SAMPLING_PRESETS["quick"] == {"n_steps": 20, "step_size": 0.02, "noise_scale": 0.01}
    assert SAMPLING_PRESETS["standard"] == {"n_steps": 60, "step_size": 0.01, "noise_scale": 0.005}
    assert SAMPLING_PRESETS["quality"] == {"n_steps": 200, "step_size": 0.005, "noise_scale": 0.001}
    assert MCMCConfig.from_preset("quality").n_steps == 200
    assert toy_model.generate(4, preset="quick").shape == (4, 2)
    with pytest.raises(ValueError, match="did you mean 'quick'"):
        toy_model.generate(4, preset="quik")


def test_diagnose_returns_the_guides_keys(toy_model):
    toy_model.train_step(jnp.ones((8, 2)))
    report = diagnose(toy_model, {"data": jnp.ones((8, 2))}, sample_shape=(2,), n_steps=5)
    for key in ("real_energy", "fake_energy", "energy_gap", "mcmc_decrease", "buffer_usage"):
        assert np.isfinite(report[key])
    assert 0 < report["buffer_usage"] <= 1


def test_device_manager():
    manager = DeviceManager()
    assert manager.get_device() in jax.devices()
    assert manager.device_count >= 1
    assert manager.put(jnp.ones(2)).shape == (2,)
