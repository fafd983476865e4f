"""The conformance suite over every registered component, and the suite's own tests.

``test_registered_component_conforms`` is parametrized over the registry
listing: built-ins and any installed third-party plugin (contrib/ebmkit-mala)
are checked the same way. The remaining tests feed deliberately broken
components to the checks, so a check that cannot fail is caught.
"""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebmkit import registry
from ebmkit.config import (
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
    config_class,
    positive,
)
from ebmkit.data import ArrayDataset
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad
from ebmkit.testing import (
    ConformanceError,
    check_component,
    check_spec,
    conformance_test,
    iter_registered,
)
from ebmkit.types import SamplerInfo, SamplerState

# The suite proper: one test per registered (selectable) component.
test_registered_component_conforms = conformance_test()


def test_suite_covers_every_listed_component():
    listed = {(r.kind, r.name, r.dist) for r in registry.listing() if r.status != "disabled"}
    covered = {(c.kind, c.name, c.dist) for c in iter_registered()}
    assert covered == listed
    assert {"energy", "sampler", "loss", "buffer", "dataset"} <= {k for k, _, _ in covered}


# -- small in-process components, good and broken ----------------------------------------


@config_class
class ToySamplerConfig(SamplerConfig):
    """Attributes: num_steps, step_size."""

    num_steps: int = 5
    step_size: float = attrs.field(default=0.05, validator=positive)


class ToySampler:
    """Unadjusted Langevin, with switchable bugs."""

    def __init__(self, config, *, sign: float = 1.0, scalar_info: bool = False):
        self.num_steps = config.num_steps
        self.tunables = {"step_size": config.step_size}
        self.sign, self.scalar_info = sign, scalar_info

    def init(self, position, energy_fn):
        energy, grad = per_row_energy_and_grad(energy_fn, position)
        return SamplerState(position, energy, grad)

    def kernel(self, rng_key, state, energy_fn, step_size=None):
        step_size = self.tunables["step_size"] if step_size is None else step_size
        noise = jax.random.normal(rng_key, state.position.shape)
        x = state.position - self.sign * step_size * state.grad + jnp.sqrt(2 * step_size) * noise
        new = self.init(x, energy_fn)
        n = x.shape[0]
        acc = jnp.ones(() if self.scalar_info else (n,))
        info = SamplerInfo(acc, jnp.linalg.norm(new.grad, axis=-1), ~jnp.isfinite(new.energy))
        return new, info


def sampler_spec(name: str, **bugs) -> ComponentSpec:
    return ComponentSpec(kind="sampler", name=name, config=ToySamplerConfig,
                         build=lambda cfg: ToySampler(cfg, **bugs), summary="toy")


def failures(spec: ComponentSpec, **kwargs) -> list[str]:
    with pytest.raises(ConformanceError) as info:
        check_spec(spec, **kwargs)
    assert isinstance(info.value, AssertionError)
    assert str(info.value).startswith(f"{spec.kind} {spec.name!r} failed")
    return list(info.value.failures)


def test_a_correct_in_process_sampler_passes_without_being_installed():
    report = check_spec(sampler_spec("toy_ok"))
    assert not report.skipped
    assert "chains move toward low energy (sign of the gradient)" in report.passed
    assert "toy_ok" not in registry.get_registry("sampler").names()  # checks leave no trace


def test_sampler_climbing_the_energy_fails():
    (failure,) = failures(sampler_spec("toy_uphill", sign=-1.0))
    assert failure.startswith("chains move toward low energy")


def test_sampler_with_scalar_info_fails():
    (failure,) = failures(sampler_spec("toy_scalar", scalar_info=True))
    assert "info.acceptance_rate shape ()" in failure


@config_class
class ToyEnergyConfig(EnergyConfig):
    """Attributes: batch_norm."""

    batch_norm: bool = False


def build_energy(config, *, event_shape, rngs):
    from flax import nnx

    class Quad(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(event_shape))

        def __call__(self, x):
            if config.batch_norm:
                x = x - jnp.mean(x, axis=0)  # batch statistics: rows not independent
            return 0.5 * jnp.sum(self.w * x**2, axis=tuple(range(1, x.ndim)))

    return Quad()


def test_energy_checks_pass_and_catch_batch_statistics():
    spec = ComponentSpec(kind="energy", name="toy_quad", config=ToyEnergyConfig, build=build_energy)
    assert "rows independent (no batch statistics)" in check_spec(spec).passed
    with registry.overlay(spec):
        check_component("energy", "toy_quad", event_shape=(3,))
        (failure,) = failures(spec, config=ToyEnergyConfig(batch_norm=True))
    assert failure.startswith("rows independent")


@config_class
class ToyLossConfig(LossConfig):
    """Attributes: drop_gap."""

    drop_gap: bool = True


def build_loss(config):
    def loss(rng_key, energy_fn, x_pos, ctx):
        real = jnp.mean(energy_fn(x_pos))
        fake = jnp.mean(energy_fn(jax.random.normal(rng_key, x_pos.shape)))
        metrics = {"loss": real - fake, "real_energy_mean": real, "fake_energy_mean": fake}
        if not config.drop_gap:
            metrics["energy_gap"] = fake - real
        return real - fake, metrics, ctx

    return loss


def test_loss_without_required_metric_fails():
    spec = ComponentSpec(kind="loss", name="toy_loss", config=ToyLossConfig, build=build_loss)
    (failure,) = failures(spec)
    assert "missing metrics ['energy_gap']" in failure
    assert check_spec(spec, config=ToyLossConfig(drop_gap=False)).passed


@config_class
class NeedsPathConfig(DatasetConfig):
    """A data set read from a user file.

    Attributes:
        path: the .npy file to read.
    """

    path: str


@config_class
class UndocumentedConfig(DatasetConfig):
    """Nothing documented here."""

    path: str


def build_dataset(config):
    data = np.load(config.path).astype(np.float32)
    return ArrayDataset("toy_file", data[:-2], data[-2:])


def test_dataset_needing_a_user_file_skips_only_behaviour(tmp_path):
    spec = ComponentSpec(kind="dataset", name="toy_file", config=NeedsPathConfig, build=build_dataset)
    report = check_spec(spec)
    assert "config documents its required fields" in report.passed
    assert "is a valid ComponentSpec" in report.passed
    assert "requires ['path']" in report.skipped[0]

    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(10, 2)))
    report = check_spec(spec, config=NeedsPathConfig(path=str(path)))
    assert not report.skipped
    assert "sample is reproducible with the same Generator seed" in report.passed

    bad = ComponentSpec(kind="dataset", name="toy_file", config=UndocumentedConfig, build=build_dataset)
    (failure,) = failures(bad)
    assert "required fields ['path'] that its docstring does not describe" in failure


def test_unserialisable_config_and_shared_config_class_fail():
    @config_class
    class SetConfig(SamplerConfig):
        """Attributes: tags."""

        tags: frozenset[str] = frozenset({"a"})

    spec = ComponentSpec(kind="sampler", name="toy_set", config=SetConfig, build=lambda c: c)
    assert any(f.startswith("config round-trips through TOML and JSON text") for f in failures(spec))

    twin = sampler_spec("toy_twin")
    with registry.overlay(sampler_spec("toy_first")):
        shared, round_trip = failures(twin)
    assert "ToySamplerConfig is also the config of ['local:toy_first']" in shared
    # Which is why: the dumped config would name the other component.
    assert "unstructure names 'toy_first', not 'toy_twin'" in round_trip


def test_invalid_spec_and_unknown_component_fail_clearly():
    spec = ComponentSpec(kind="sampler", name="Bad-Name", config=ToySamplerConfig, build=lambda c: c)
    (failure,) = failures(spec)
    assert "must be lowercase snake case" in failure
    with pytest.raises(ConformanceError, match="cannot be selected: unknown sampler 'nope'"):
        check_component("sampler", "nope")


def test_file_dataset_behaviour_conforms_with_a_user_file(tmp_path):
    """The listing-wide suite can only check ``file``'s spec (it needs a path);
    its behaviour is checked here with a real file."""
    path = tmp_path / "points.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(200, 3)), delimiter=",")
    spec = registry.get_spec("dataset", "file")
    report = check_component("dataset", "file", config=spec.config(path=str(path)))
    assert report.skipped == ()
    assert len(report.passed) > 3, report.passed
