"""Contracts v2, end to end: sampler-free losses, loss-owned parameters and
state, labelled batches, declared supports and needs, adaptive samplers."""

from __future__ import annotations

import tomllib
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

import ebmkit
from ebmkit.cli import cli
from ebmkit.components import build_dataset, data_context
from ebmkit.config import DatasetConfig, LossConfig, SamplerConfig, config_class
from ebmkit.config.validators import positive, positive_int
from ebmkit.data import ArrayDataset
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import BoundSampler, per_row_energy_and_grad, run_chain
from ebmkit.types import Batch, BuildContext, SamplerInfo, SamplerState

SMALL_TRAIN = {"steps": 20, "batch_size": 32, "log_every": 10, "checkpoint_every": 10}


# -- a sampler-free loss owning a parameter and a state --------------------------------


@config_class
class DSMConfig(LossConfig):
    """Denoising score matching.

    Attributes:
        sigma: the noise level.
    """

    sigma: float = attrs.field(default=0.3, validator=positive)


class DSM:
    """Denoising score matching with a learned scalar weight (a loss-owned
    parameter) and a step counter (loss-owned state)."""

    metrics = ("weight", "count")

    def __init__(self, config: DSMConfig, ctx: BuildContext):
        self.sigma = config.sigma
        assert ctx.event_shape == (2,)  # the loss sees the data's build context

    def init_params(self, rng_key: Any, data: BuildContext) -> dict:
        return {"log_weight": jnp.zeros(())}

    def init_state(self, rng_key: Any, data: BuildContext) -> dict:
        return {"count": jnp.zeros((), jnp.int32)}

    def __call__(self, rng_key, energy_fn, batch, ctx):
        x = batch.x
        eps = jax.random.normal(rng_key, x.shape)
        _, grad = per_row_energy_and_grad(energy_fn, x + self.sigma * eps)
        weight = jnp.exp(ctx.params["log_weight"])
        # The weight's own term has its minimum at weight = 2: a parameter the
        # loss owns, trained with the energy's.
        loss = jnp.mean(jnp.sum((self.sigma * grad - eps) ** 2, axis=-1)) + (weight - 2.0) ** 2
        state = {"count": ctx.state["count"] + 1}
        return loss, {"loss": loss, "weight": weight, "count": state["count"].astype(jnp.float32)}, ctx._replace(state=state)


DSM_SPEC = ComponentSpec(kind="loss", name="dsm_test", config=DSMConfig, build=DSM, summary="test DSM", needs=())


def test_sampler_free_loss_leaves_sampler_and_buffer_out():
    with ebmkit.overlay(DSM_SPEC):
        cfg = ebmkit.load_config(loss="dsm_test")
        assert cfg.sampler is None and cfg.buffer is None and cfg.needs == frozenset()
        text = ebmkit.dump_config(cfg)
        assert "[sampler]" not in text and "[buffer]" not in text
        assert ebmkit.load_config(tomllib.loads(text)) == cfg
        # A sampler set on purpose is kept (generate needs one); "none" stays empty.
        kept = ebmkit.load_config(loss="dsm_test", sampler="hmc", buffer="none")
        assert kept.sampler is not None and kept.buffer is None


def test_a_slot_the_loss_needs_cannot_be_empty():
    with pytest.raises(ebmkit.ConfigError, match="loss 'pcd' needs a sampler") as info:
        ebmkit.load_config(sampler="none")
    assert info.value.problems[0].path == "sampler"
    with pytest.raises(ebmkit.ConfigError, match="needs a buffer"):
        ebmkit.load_config(buffer="none")
    with pytest.raises(ebmkit.ConfigError, match="cannot be 'none'"):
        ebmkit.load_config(energy="none")
    # cd needs no buffer: the slot is left empty unless asked for.
    assert ebmkit.load_config(loss="cd").buffer is None


def test_sampler_free_run_trains_checkpoints_resumes_and_reopens(tmp_path):
    run_dir = tmp_path / "dsm"
    with ebmkit.overlay(DSM_SPEC):
        config = {"loss": "dsm_test", "energy": {"name": "mlp", "hidden_dims": [16, 16]}, "train": SMALL_TRAIN}
        summary = ebmkit.train_job(config, out=run_dir)
        saved = (run_dir / "config.toml").read_text()
        assert "[sampler]" not in saved and "[buffer]" not in saved
        assert "energy_gap" not in summary and np.isfinite(summary["kl_gap"])
        assert (run_dir / "energy.png").exists() and not (run_dir / "samples.png").exists()
        ckpt = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert ckpt[-1] == "20"

        resumed = ebmkit.train_job(run_dir / "config.toml", out=run_dir, resume=True, overrides=["train.steps=30"])
        assert resumed["steps"] == 30

        run = ebmkit.open_run(run_dir)
        state = run.model.train_state()
        assert state.buffer_state is None and state.sampler_state is None
        # The loss's parameter moved towards 2 and its state counted every step.
        assert float(jnp.exp(state.loss_params["log_weight"])) > 1.0
        assert int(state.loss_state["count"]) == 30
        with pytest.raises(ValueError, match="no sampler"):
            run.model.generate(4)
        result = CliRunner().invoke(cli, ["diagnose", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert "no sampler" in result.output and "energy gap" not in result.output


def test_loss_params_are_optimised_with_the_energy():
    with ebmkit.overlay(DSM_SPEC):
        model = ebmkit.assemble(loss="dsm_test", energy={"name": "mlp", "hidden_dims": [8]}, train={"learning_rate": 0.05})
        before = float(model.train_state().loss_params["log_weight"])
        x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
        for _ in range(5):
            metrics = model.train_step(x)
        assert float(model.train_state().loss_params["log_weight"]) > before
        assert int(model.train_state().loss_state["count"]) == 5 and float(metrics["count"]) == 5


# -- labels and supports -----------------------------------------------------------------


@config_class
class BlobsConfig(DatasetConfig):
    """Two labelled blobs.

    Attributes:
        support: the support the data set says it has.
    """

    support: str = "continuous"


def _blobs(config: BlobsConfig, ctx: BuildContext | None = None) -> ArrayDataset:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = (rng.normal(size=(400, 2)) + 3.0 * y[:, None]).astype(np.float32)
    data = ArrayDataset("blobs_test", x[:300], x[300:], labels=(y[:300], y[300:]), bounds=(-4.0, 7.0))
    data.support = config.support
    return data


BLOBS_SPEC = ComponentSpec(kind="dataset", name="blobs_test", config=BlobsConfig, build=_blobs, summary="blobs")


@config_class
class LabelledConfig(LossConfig):
    """A loss that needs labels."""


class LabelledLoss:
    """Mean energy of class 0 minus class 1 (checks that labels arrive)."""

    metrics = ("label_mean",)

    def __call__(self, rng_key, energy_fn, batch, ctx):
        assert batch.y is not None and batch.y.dtype == jnp.int32
        e = energy_fn(batch.x)
        loss = jnp.mean(jnp.where(batch.y == 0, e, -e)) + 0.1 * jnp.mean(e**2)
        return loss, {"loss": loss, "label_mean": jnp.mean(batch.y.astype(jnp.float32))}, ctx


LABELLED_SPEC = ComponentSpec(
    kind="loss", name="labelled_test", config=LabelledConfig, build=lambda c, ctx: LabelledLoss(),
    summary="needs labels", needs=("labels",),
)


def test_labelled_loss_gets_labels_and_refuses_unlabelled_data(tmp_path):
    with ebmkit.overlay(BLOBS_SPEC, LABELLED_SPEC):
        cfg = ebmkit.load_config(loss="labelled_test", dataset="blobs_test", train=SMALL_TRAIN)
        data = build_dataset(cfg.dataset)
        assert data_context(data).num_classes == 2
        model = ebmkit.EBM(cfg, data=data_context(data))
        result = ebmkit.Trainer(model, data).fit()
        assert 0.2 < result.history[-1]["label_mean"] < 0.8
        points = tmp_path / "points.npy"  # a file data set has no labels
        np.save(points, np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
        with pytest.raises(ebmkit.ConfigError, match="needs labelled data") as info:
            ebmkit.assemble(loss="labelled_test", dataset={"name": "file", "path": str(points)})
        assert info.value.problems[0].path == "loss"


def test_a_component_on_data_it_does_not_support_is_a_config_error():
    with ebmkit.overlay(BLOBS_SPEC):
        with pytest.raises(ebmkit.ConfigError) as info:
            ebmkit.assemble(dataset={"name": "blobs_test", "support": "binary"})
        problems = {p.path: p for p in info.value.problems}
        # mlp and pcd accept any support, replay continuous and binary data.
        assert set(problems) == {"sampler"}
        assert "gibbs" in problems["sampler"].suggestion
        assert "supports continuous data" in problems["sampler"].message
        assert "binary" in problems["sampler"].message


# -- an adaptive sampler -------------------------------------------------------------------


@config_class
class TunedLangevinConfig(SamplerConfig):
    """Langevin whose per-chain step size adapts towards a target drop in energy.

    Attributes:
        num_steps: K.
        step_size: the initial step size.
        warmup_steps: steps of the adaptation phase.
    """

    num_steps: int = attrs.field(default=5, validator=positive_int)
    step_size: float = attrs.field(default=0.5, validator=positive)
    warmup_steps: int = attrs.field(default=10, validator=positive_int)


def _init(position, energy_fn):
    energy, grad = per_row_energy_and_grad(energy_fn, position)
    return SamplerState(position, energy, grad)


def _kernel(rng_key, state, energy_fn, step_size):
    step = jnp.reshape(step_size, (-1,) + (1,) * (state.position.ndim - 1))
    x = state.position - step * state.grad + jnp.sqrt(2 * step) * jax.random.normal(rng_key, state.position.shape)
    new = _init(x, energy_fn)
    ones = jnp.ones(x.shape[:1])
    return new, SamplerInfo(acceptance_rate=ones, grad_norm=ones, non_finite=~jnp.isfinite(new.energy))


class TunedLangevin(BoundSampler):
    """Shrinks each chain's step by 10 % per step (a stand-in for real adaptation)."""

    def __init__(self, config: TunedLangevinConfig, ctx: Any = None):
        super().__init__(config, init=_init, kernel=_kernel, tunables={"step_size": config.step_size})
        self.warmup_steps = config.warmup_steps

    def init_adaptation(self, position):
        return {"log_step": jnp.full(position.shape[:1], jnp.log(self.config.step_size))}

    def adapted_tunables(self, adaptation):
        return {"step_size": jnp.exp(adaptation["log_step"])}

    def adapt(self, adaptation, info, step_index):
        return {"log_step": adaptation["log_step"] + jnp.log(0.9)}


TUNED_SPEC = ComponentSpec(kind="sampler", name="tuned_test", config=TunedLangevinConfig, build=TunedLangevin, summary="tuned")


def test_adaptive_sampler_state_persists_and_is_checkpointed(tmp_path):
    with ebmkit.overlay(TUNED_SPEC):
        assert isinstance(TunedLangevin(TunedLangevinConfig()), ebmkit.types.Adaptive)
        cfg = ebmkit.load_config(sampler="tuned_test", energy={"name": "mlp", "hidden_dims": [8]}, train=SMALL_TRAIN)
        data = build_dataset(cfg.dataset)
        model = ebmkit.EBM(cfg, data=data_context(data))
        assert model.train_state().sampler_state["log_step"].shape == (32,)
        ebmkit.Trainer(model, data, run_dir=tmp_path / "run").fit()
        # warm-up (10 steps) + 20 training steps of K = 5, each adapting once per kernel step
        expected = np.log(0.5) + (10 + 20 * 5) * np.log(0.9)
        np.testing.assert_allclose(model.train_state().sampler_state["log_step"], expected, rtol=1e-5)
        reopened = ebmkit.open_run(tmp_path / "run")
        np.testing.assert_allclose(reopened.model.train_state().sampler_state["log_step"], expected, rtol=1e-5)
        # generate runs the adaptation phase on its own chains first
        x, info = model.generate(8, n_steps=3, return_info=True)
        assert x.shape == (8, 2)
        np.testing.assert_allclose(info.adaptation["log_step"], np.log(0.5) + 10 * np.log(0.9), rtol=1e-5)


def test_array_valued_tunables_run_per_chain():
    sampler = TunedLangevin(TunedLangevinConfig())

    def energy_fn(x):
        return 0.5 * jnp.sum(x**2, axis=-1)

    steps = jnp.array([0.0, 0.1])  # chain 0 never moves
    x, _ = run_chain(jax.random.key(0), sampler, jnp.ones((2, 2)), energy_fn, 5, step_size=steps)
    np.testing.assert_array_equal(x[0], jnp.ones(2))
    assert not np.allclose(x[1], 1.0)


def test_batch_is_x_or_x_and_labels():
    assert Batch(jnp.ones(2)).y is None
    from ebmkit.training.step import as_batch

    assert as_batch((jnp.ones(2), jnp.zeros(2))).y is not None
    assert as_batch(jnp.ones(2)).y is None


def test_api_one_specs_still_build():
    """A plugin written for the first API (build(config, *, event_shape, rngs))."""
    from flax import nnx

    from ebmkit.config import EnergyConfig

    @config_class
    class OldConfig(EnergyConfig):
        """An old-style energy."""

    class Old(nnx.Module):
        def __init__(self, event_shape, rngs):
            self.w = nnx.Param(jnp.ones(event_shape))

        def __call__(self, x):
            return jnp.sum(self.w[...] * x**2, axis=-1)

    spec = ComponentSpec(kind="energy", name="old_energy", config=OldConfig, api=1,
                         build=lambda config, *, event_shape, rngs: Old(event_shape, rngs))
    with ebmkit.overlay(spec):
        model = ebmkit.assemble(energy="old_energy")
        assert model.energy(jnp.ones((3, 2))).shape == (3,)
