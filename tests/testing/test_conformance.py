"""The conformance suite over every registered component, and the suite's own tests.

``test_registered_component_conforms`` is parametrized over ebmkit's own
listing (the built-ins); a third-party distribution runs the same suite over
its components with ``conformance_test(dist=...)`` in its own tests, as
contrib/ebmkit-blackjax does (its NUTS alone takes half a minute, so it is
checked there once, not again here). The remaining tests feed deliberately broken
components to the checks (a sign-flipped score-matching loss, a CD loss whose
gradient flows through its chains, a PCD loss that never writes back, a sampler
that is not invariant, ...), so a check that cannot fail is caught.
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
from ebmkit.sampling import per_row_energy_and_grad, run_chain
from ebmkit.testing import (
    ConformanceError,
    check_component,
    check_spec,
    conformance_test,
    iter_registered,
)
from ebmkit.testing.conformance import (
    CHAINS_ON_SAMPLE_ENERGY,
    INVARIANT,
    KNOWN_ANSWER,
    NO_CHAIN_GRADIENT,
    WRITES_BACK,
)
from ebmkit.types import SamplerInfo, SamplerState

# The suite proper: one test per registered (selectable) component.
test_registered_component_conforms = conformance_test(dist="ebmkit-jax")


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

    def __init__(self, config, *, sign: float = 1.0, scalar_info: bool = False, noise: float = 1.0,
                 fixed_key: bool = False):
        self.num_steps = config.num_steps
        self.tunables = {"step_size": config.step_size}
        self.sign, self.scalar_info, self.noise, self.fixed_key = sign, scalar_info, noise, fixed_key

    def init(self, position, energy_fn):
        energy, grad = per_row_energy_and_grad(energy_fn, position)
        return SamplerState(position, energy, grad)

    def kernel(self, rng_key, state, energy_fn, step_size=None):
        step_size = self.tunables["step_size"] if step_size is None else step_size
        key = jax.random.key(0) if self.fixed_key else rng_key
        noise = self.noise * jax.random.normal(key, state.position.shape)
        x = state.position - self.sign * step_size * state.grad + jnp.sqrt(2 * step_size) * noise
        new = self.init(x, energy_fn)
        n = x.shape[0]
        acc = jnp.ones(() if self.scalar_info else (n,))
        info = SamplerInfo(acc, jnp.linalg.norm(new.grad, axis=-1), ~jnp.isfinite(new.energy))
        return new, info


def sampler_spec(name: str, **bugs) -> ComponentSpec:
    return ComponentSpec(kind="sampler", name=name, config=ToySamplerConfig,
                         build=lambda cfg, ctx: ToySampler(cfg, **bugs), summary="toy")


def failures(spec: ComponentSpec, **kwargs) -> list[str]:
    with pytest.raises(ConformanceError) as info:
        check_spec(spec, **kwargs)
    assert isinstance(info.value, AssertionError)
    assert str(info.value).startswith(f"{spec.kind} {spec.name!r} failed")
    return list(info.value.failures)


def test_a_correct_in_process_sampler_passes_without_being_installed():
    report = check_spec(sampler_spec("toy_ok"))
    assert not report.skipped
    assert {"chains move toward low energy (sign of the gradient)", INVARIANT} <= set(report.passed)
    assert "toy_ok" not in registry.get_registry("sampler").names()  # checks leave no trace


def test_sampler_climbing_the_energy_fails():
    found = failures(sampler_spec("toy_uphill", sign=-1.0))
    assert any(f.startswith("chains move toward low energy") for f in found)
    assert any(f.startswith(INVARIANT) for f in found)


def test_sampler_with_the_wrong_noise_scale_is_not_invariant():
    # Noise sqrt(step) instead of sqrt(2 step): stationary variance 1/2, and in
    # 20 steps of 0.05 from N(0, 1) the variance falls to ~0.58.
    (failure,) = failures(sampler_spec("toy_cold", noise=1 / np.sqrt(2)))
    assert failure.startswith(INVARIANT)
    assert "does not leave the target invariant" in failure


def test_sampler_ignoring_its_key_fails_reproducibility():
    found = failures(sampler_spec("toy_fixed_key", fixed_key=True))
    assert any("another key gave the same chains" in f for f in found)


def test_sampler_with_scalar_info_fails():
    (failure,) = failures(sampler_spec("toy_scalar", scalar_info=True))
    assert "info.acceptance_rate shape ()" in failure


@config_class
class ToyEnergyConfig(EnergyConfig):
    """Attributes: batch_norm."""

    batch_norm: bool = False


def build_energy(config, ctx):
    from flax import nnx

    class Quad(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(ctx.event_shape))

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


def test_api_one_build_signature_under_api_two_fails():
    # An API 1 energy build (keyword event_shape/rngs) on a spec that claims API 2.
    def old_build(config, *, event_shape, rngs):
        return build_energy(config, None)

    spec = ComponentSpec(kind="energy", name="toy_old", config=ToyEnergyConfig, build=old_build)
    (failure,) = failures(spec)
    assert failure.startswith("build's signature fits plugin API 2")
    assert "built as build(config, ctx)" in failure


# -- losses: known answers ----------------------------------------------------------------


@config_class
class DSMConfig(LossConfig):
    """Denoising score matching.

    Attributes:
        sigma: std of the Gaussian noise added to the data.
        metric_typo: declare a metric the loss does not return (a bug).
    """

    sigma: float = attrs.field(default=0.1, validator=positive)
    metric_typo: bool = False


class DSMLoss:
    """``sigma^2 |score(x~) + eps / sigma|^2`` with ``score = -grad_x E`` (Vincent 2011).

    Its minimiser is the score of the noised data, N(mu, s^2 + sigma^2) for
    Gaussian data. ``sign=-1`` is the bug the known-answer check must catch.
    """

    def __init__(self, config, sign: float = 1.0):
        self.sigma, self.sign = config.sigma, sign
        self.metrics = ("dsm", "dsn") if config.metric_typo else ("dsm",)

    def __call__(self, rng_key, energy_fn, batch, ctx):
        eps = jax.random.normal(rng_key, batch.x.shape, batch.x.dtype)
        noisy = batch.x + self.sigma * eps
        grad = jax.grad(lambda z: jnp.sum(energy_fn(z)))(noisy)
        dsm = jnp.mean(jnp.sum((eps - self.sigma * grad) ** 2, axis=-1))
        value = self.sign * dsm
        return value, {"loss": value, "dsm": dsm}, ctx


def dsm_spec(name: str, sign: float = 1.0) -> ComponentSpec:
    return ComponentSpec(kind="loss", name=name, config=DSMConfig, needs=(),
                         build=lambda cfg, ctx: DSMLoss(cfg, sign), summary="toy dsm")


def test_denoising_score_matching_recovers_the_gaussian_and_its_sign_flip_fails():
    report = check_spec(dsm_spec("toy_dsm"))
    assert KNOWN_ANSWER in report.passed
    assert not report.skipped
    # Needs neither sampler nor buffer: the chain checks do not apply.
    assert NO_CHAIN_GRADIENT not in report.passed and WRITES_BACK not in report.passed

    (failure,) = failures(dsm_spec("toy_dsm_flipped", sign=-1.0))
    assert failure.startswith(KNOWN_ANSWER)
    assert "A sign error sends the parameters away from the data" in failure


@config_class
class NCEConfig(LossConfig):
    """Noise-contrastive estimation against N(0, noise_std^2 I).

    Attributes:
        noise_std: std of the noise distribution.
    """

    noise_std: float = attrs.field(default=2.0, validator=positive)


class NCELoss:
    """NCE (Gutmann & Hyvarinen 2010) with its own log-normaliser (a trainable
    parameter) and a step counter (non-trainable state)."""

    metrics = ("accuracy",)

    def __init__(self, config):
        self.noise_std = config.noise_std

    def init_params(self, rng_key, data):
        return {"log_z": jnp.zeros(())}

    def init_state(self, rng_key, data):
        return {"steps": jnp.zeros((), jnp.int32)}

    def __call__(self, rng_key, energy_fn, batch, ctx):
        x = batch.x
        noise = self.noise_std * jax.random.normal(rng_key, x.shape, x.dtype)

        def logit(z):  # log p_model(z) - log q(z)
            log_q = -0.5 * jnp.sum((z / self.noise_std) ** 2, axis=-1) - z.shape[-1] * jnp.log(self.noise_std)
            return -energy_fn(z) - ctx.params["log_z"] - log_q

        real, fake = logit(x), logit(noise)
        value = -jnp.mean(jax.nn.log_sigmoid(real)) - jnp.mean(jax.nn.log_sigmoid(-fake))
        accuracy = 0.5 * (jnp.mean(real > 0) + jnp.mean(fake < 0))
        state = {"steps": ctx.state["steps"] + 1}
        return value, {"loss": value, "accuracy": accuracy}, ctx._replace(state=state)


def test_loss_with_its_own_parameters_and_state_conforms():
    spec = ComponentSpec(kind="loss", name="toy_nce", config=NCEConfig, needs=(),
                         build=lambda cfg, ctx: NCELoss(cfg), summary="toy nce")
    report = check_spec(spec)
    assert {KNOWN_ANSWER, "gradient w.r.t. the loss's own parameters is finite",
            "returned ctx.state keeps the loss state's structure and shapes"} <= set(report.passed)


@config_class
class ToyCDConfig(LossConfig):
    """Unregularised contrastive divergence (for the chain checks)."""


class ToyCD:
    """CD-K; ``on_trainable`` runs the chains on ``energy_fn`` (the bug), without stop_gradient."""

    metrics = ("energy_gap",)

    def __init__(self, config, *, on_trainable: bool = False):
        self.on_trainable = on_trainable

    def __call__(self, rng_key, energy_fn, batch, ctx):
        chain_energy = energy_fn if self.on_trainable else ctx.sample_energy_fn
        x_neg, _ = run_chain(rng_key, ctx.sampler, batch.x, chain_energy, ctx.num_steps, **ctx.tunables)
        if not self.on_trainable:
            x_neg = jax.lax.stop_gradient(x_neg)
        real, fake = jnp.mean(energy_fn(batch.x)), jnp.mean(energy_fn(x_neg))
        return real - fake, {"loss": real - fake, "energy_gap": fake - real}, ctx


def cd_spec(name: str, **bugs) -> ComponentSpec:
    return ComponentSpec(kind="loss", name=name, config=ToyCDConfig, needs=("sampler",),
                         build=lambda cfg, ctx: ToyCD(cfg, **bugs), summary="toy cd")


def test_cd_loss_passes_and_one_with_gradient_through_its_chains_fails():
    report = check_spec(cd_spec("toy_cd"))
    assert {KNOWN_ANSWER, NO_CHAIN_GRADIENT, CHAINS_ON_SAMPLE_ENERGY} <= set(report.passed)

    found = failures(cd_spec("toy_cd_leaky", on_trainable=True))
    no_gradient = [f for f in found if f.startswith(NO_CHAIN_GRADIENT)]
    assert no_gradient and "flows through the chains" in no_gradient[0]
    assert any(f.startswith(CHAINS_ON_SAMPLE_ENERGY) for f in found)


def test_loss_missing_a_declared_metric_fails():
    (failure,) = failures(dsm_spec("toy_dsm_typo"), config=DSMConfig(metric_typo=True))
    assert "missing metrics ['dsn']" in failure


class ToyPCD(ToyCD):
    """PCD that draws chain starts from the buffer; ``write_back=False`` forgets to return them."""

    def __init__(self, config, *, write_back: bool = True):
        super().__init__(config)
        self.write_back = write_back

    def __call__(self, rng_key, energy_fn, batch, ctx):
        init_key, chain_key = jax.random.split(rng_key)
        x0, slots = ctx.buffer.sample(init_key, ctx.buffer_state, batch.x.shape[0])
        x_neg, _ = run_chain(chain_key, ctx.sampler, x0, ctx.sample_energy_fn, ctx.num_steps, **ctx.tunables)
        x_neg = jax.lax.stop_gradient(x_neg)
        if self.write_back:
            ctx = ctx._replace(buffer_state=ctx.buffer.update(ctx.buffer_state, x_neg, slots))
        real, fake = jnp.mean(energy_fn(batch.x)), jnp.mean(energy_fn(x_neg))
        return real - fake, {"loss": real - fake, "energy_gap": fake - real}, ctx


def pcd_spec(name: str, **bugs) -> ComponentSpec:
    return ComponentSpec(kind="loss", name=name, config=ToyCDConfig, needs=("sampler", "buffer"),
                         build=lambda cfg, ctx: ToyPCD(cfg, **bugs), summary="toy pcd")


def test_pcd_loss_that_never_writes_back_fails():
    report = check_spec(pcd_spec("toy_pcd"))
    assert {WRITES_BACK, KNOWN_ANSWER} <= set(report.passed)

    found = failures(pcd_spec("toy_pcd_forgetful", write_back=False))
    write_back = [f for f in found if f.startswith(WRITES_BACK)]
    assert write_back and "never called ctx.buffer.update" in write_back[0]


# -- data sets and specs ------------------------------------------------------------------


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


def build_dataset(config, ctx):
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

    spec = ComponentSpec(kind="sampler", name="toy_set", config=SetConfig, build=lambda c, ctx: c)
    assert any(f.startswith("config round-trips through TOML and JSON text") for f in failures(spec))

    twin = sampler_spec("toy_twin")
    with registry.overlay(sampler_spec("toy_first")):
        shared, round_trip = failures(twin)
    assert "ToySamplerConfig is also the config of ['local:toy_first']" in shared
    # Which is why: the dumped config would name the other component.
    assert "unstructure names 'toy_first', not 'toy_twin'" in round_trip


def test_invalid_spec_and_unknown_component_fail_clearly():
    spec = ComponentSpec(kind="sampler", name="Bad-Name", config=ToySamplerConfig, build=lambda c, ctx: c)
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


# -- conformance_test: an empty selection fails ---------------------------------------------


def test_unknown_distribution_fails_loudly():
    test = conformance_test(dist="no-such-dist")
    with pytest.raises(pytest.fail.Exception, match="no distribution named 'no-such-dist' is installed"):
        test()


def test_disabled_distribution_fails_loudly(monkeypatch):
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "ebmkit-jax")
    test = conformance_test(dist="ebmkit-jax")
    with pytest.raises(pytest.fail.Exception, match="disabled by EBMKIT_DISABLE_PLUGINS"):
        test()


def test_distribution_without_components_fails_loudly():
    # pytest is installed and registers no ebmkit component.
    test = conformance_test(dist="pytest")
    with pytest.raises(pytest.fail.Exception, match="'pytest' is installed but provides no ebmkit component"):
        test()
    test = conformance_test(["energy"], dist="pytest")
    with pytest.raises(pytest.fail.Exception, match="provides no ebmkit component of kind energy"):
        test()
