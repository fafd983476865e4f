"""Tests of the built-in MCMC samplers: langevin, hmc, mala, annealed_langevin, replica_exchange.

Statistical tests use fixed keys and tolerances stated next to them (BlackJAX
style). With N independent chains, the standard error of a mean is
``sqrt(var / N)`` and of a variance ``var * sqrt(2 / N)``; tolerances are ~4
standard errors plus the sampler's known bias, so they hold for any key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import ebmkit
from ebmkit.config import SamplerConfig, structure, unstructure
from ebmkit.registry import get_spec
from ebmkit.sampling import run_chain
from ebmkit.types import Sampler

NAMES = ("langevin", "hmc", "mala", "annealed_langevin", "replica_exchange")
#: Samplers with a Metropolis correction: a non-finite proposal is rejected.
ADJUSTED = ("hmc", "mala", "replica_exchange")

MU = jnp.array([1.0, -2.0])
VAR = jnp.array([0.5, 2.0])


def make(name: str, **fields):
    spec = get_spec("sampler", name)
    return spec.create(spec.config(**fields))


def gaussian_energy(x):
    """N(MU, diag(VAR)) on 2-D points."""
    return 0.5 * jnp.sum((x - MU) ** 2 / VAR, axis=-1)


def standard_energy(x):
    """N(0, I) for any event rank."""
    return 0.5 * jnp.sum(x**2, axis=tuple(range(1, x.ndim)))


MIX_WEIGHTS = jnp.array([0.3, 0.7])
MIX_MEANS = jnp.array([-2.0, 2.0])


def mixture_energy(x):
    """1-D mixture 0.3 N(-2, 1) + 0.7 N(2, 1) on points of shape [B, 1]."""
    return -logsumexp(jnp.log(MIX_WEIGHTS) - 0.5 * (x[:, :1] - MIX_MEANS) ** 2, axis=-1)


def run(sampler, x0, energy_fn, num_steps, seed=1, **tunables):
    fn = jax.jit(lambda k, x: run_chain(k, sampler, x, energy_fn, num_steps, **tunables))
    return fn(jax.random.key(seed), x0)


# -- statistics on known targets -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "num_steps"),
    [
        # ULA with step h on N(mu, s) has stationary variance s / (1 - h / (2 s)):
        # +2% for s = 0.5 at h = 0.02. 600 steps contract the start's mean
        # error by (1 - h / s)^600 <= e^-6 and its variance error by e^-12.
        ("langevin", {"step_size": 0.02}, 600),
        # HMC is unbiased; trajectory length 1 avoids the near-periodic
        # resonance (cos(omega t) ~ -1) that makes fixed-length HMC mix slowly.
        ("hmc", {"step_size": 0.1, "num_integration_steps": 10}, 60),
        # MALA moves are unbiased; 300 steps at acceptance ~0.9 mix N(MU, VAR).
        ("mala", {"step_size": 0.1, "warmup_steps": 0}, 300),
        ("replica_exchange", {"step_size": 0.1, "num_replicas": 3, "max_temperature": 4.0}, 300),
    ],
)
def test_gaussian_mean_and_variance(name, fields, num_steps):
    # 4000 chains: SE(mean) <= sqrt(2 / 4000) = 0.022, SE(var) / var = 0.022.
    # Tolerances: 0.1 on the mean, 10% on the variance.
    sampler = make(name, **fields)
    x0 = jax.random.normal(jax.random.key(0), (4000, 2))
    x, summary = run(sampler, x0, gaussian_energy, num_steps)
    assert not bool(summary.non_finite.any())
    np.testing.assert_allclose(x.mean(0), MU, atol=0.1)
    np.testing.assert_allclose(x.var(0), VAR, rtol=0.1)


@pytest.mark.parametrize(
    ("name", "fields", "num_steps"),
    [
        # h = 0.05 widens each component by ~1.3% (ULA bias), moving
        # P(x < 0) by < 0.002; 1000 steps = 50 time units >> the hopping time.
        ("langevin", {"step_size": 0.05}, 1000),
        ("hmc", {"step_size": 0.25, "num_integration_steps": 12}, 100),
    ],
)
def test_mixture_mode_fractions(name, fields, num_steps):
    # Chains start uniform on [-6, 6], i.e. half in each basin; only mode
    # hopping can bring the fractions to 0.3 / 0.7. P(x < 0) is the mass left
    # of the barrier: 0.3 Phi(2) + 0.7 Phi(-2) = 0.309. SE with 4000 chains
    # is 0.0073; tolerance 0.03.
    sampler = make(name, **fields)
    x0 = jax.random.uniform(jax.random.key(2), (4000, 1), minval=-6.0, maxval=6.0)
    x, _ = run(sampler, x0, mixture_energy, num_steps, seed=3)
    expected = float(
        MIX_WEIGHTS[0] * norm.cdf(0.0, -2.0, 1.0) + MIX_WEIGHTS[1] * norm.cdf(0.0, 2.0, 1.0)
    )
    assert abs(float(jnp.mean(x[:, 0] < 0)) - expected) < 0.03


# -- HMC acceptance ------------------------------------------------------------------


def test_hmc_acceptance_per_chain_and_drops_with_huge_step():
    sampler = make("hmc", num_integration_steps=5)
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    state = sampler.init(x0, standard_energy)
    kernel = jax.jit(sampler.kernel, static_argnums=2)
    _, info = kernel(jax.random.key(1), state, standard_energy, step_size=0.1)
    assert info.acceptance_rate.shape == (64,)
    assert info.is_accepted.shape == (64,)
    rate = np.asarray(info.acceptance_rate)
    assert np.all(rate > 0) and np.all(rate <= 1)
    assert rate.mean() > 0.9
    # Leapfrog on a unit Gaussian is unstable for step > 2: energy error explodes.
    _, info_huge = kernel(jax.random.key(1), state, standard_energy, step_size=2.5)
    assert float(info_huge.acceptance_rate.mean()) < 0.1


# -- purity / jit --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_eager_agree(name):
    sampler = make(name)
    x0 = jax.random.normal(jax.random.key(0), (8, 3))
    keys = jax.random.split(jax.random.key(1), 2)

    def steps(kernel):
        state = sampler.init(x0, standard_energy)
        for k in keys:
            state, _ = kernel(k, state, standard_energy)
        return state.position

    eager = steps(sampler.kernel)
    jitted = steps(jax.jit(sampler.kernel, static_argnums=2))
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)


def test_run_chain_jit_and_eager_agree():
    # annealed_langevin exercises the schedule path of run_chain as well.
    sampler = make("annealed_langevin")
    x0 = jax.random.normal(jax.random.key(0), (8, 3))
    x_eager, s_eager = run_chain(jax.random.key(2), sampler, x0, standard_energy, 5)
    x_jit, s_jit = run(sampler, x0, standard_energy, 5, seed=2)
    np.testing.assert_allclose(x_eager, x_jit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_eager.final_energy, s_jit.final_energy, rtol=1e-5, atol=1e-6)


# -- non-finite values are flagged, never masked -------------------------------------


def nan_beyond_five(x):
    """A unit Gaussian energy that is NaN (with NaN gradient) where x[0] > 5."""
    return standard_energy(x) * jnp.where(x[:, 0] > 5.0, jnp.nan, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_flags_only_affected_chains(name):
    bad = np.zeros(8, bool)
    bad[[2, 5]] = True
    x0 = 0.1 * jax.random.normal(jax.random.key(0), (8, 2))
    x0 = x0.at[bad, 0].set(10.0)
    sampler = make(name)
    state = sampler.init(x0, nan_beyond_five)
    new_state, info = jax.jit(sampler.kernel, static_argnums=2)(
        jax.random.key(1), state, nan_beyond_five
    )
    np.testing.assert_array_equal(info.non_finite, bad)
    assert np.all(np.isfinite(new_state.position[~bad]))
    if name in ADJUSTED:
        # A rejected chain keeps its (finite) position; its energy stays NaN.
        np.testing.assert_array_equal(new_state.position[bad], x0[bad])
        if name == "hmc":
            assert not np.any(np.asarray(info.is_accepted)[bad])
    else:
        # Unadjusted Langevin carries the NaN gradient into the position.
        assert np.all(np.isnan(new_state.position[bad]))


def test_hmc_rejects_and_flags_non_finite_proposals():
    # NaN beyond radius 3 and an unstable step: every trajectory leaves the ball.
    def energy(x):
        return standard_energy(x) * jnp.where(jnp.linalg.norm(x, axis=-1) > 3.0, jnp.nan, 1.0)

    sampler = make("hmc", step_size=3.0)
    x0 = 0.1 * jax.random.normal(jax.random.key(0), (16, 2))
    state = sampler.init(x0, energy)
    new_state, info = jax.jit(sampler.kernel, static_argnums=2)(jax.random.key(1), state, energy)
    assert np.all(np.asarray(info.non_finite))
    assert np.all(np.asarray(info.acceptance_rate) == 0.0)
    assert not np.any(np.asarray(info.is_accepted))
    np.testing.assert_array_equal(new_state.position, x0)
    assert np.all(np.isfinite(new_state.energy))


# -- clamp and grad_clip -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_clamp_keeps_samples_in_box(name):
    x0 = 3.0 * jax.random.normal(jax.random.key(0), (256, 2))
    box = (-0.5, 0.5)
    sampler = make(name, clamp=[-0.5, 0.5], step_size=0.1)
    assert sampler.config.clamp == box
    x, summary = run(sampler, x0, standard_energy, 10)
    assert np.all((np.asarray(x) >= box[0]) & (np.asarray(x) <= box[1]))
    assert not bool(summary.non_finite.any())
    assert make(name).config.clamp is None


def test_clamp_is_off_by_default():
    x0 = 3.0 * jax.random.normal(jax.random.key(0), (256, 2))
    x_free, _ = run(make("langevin", step_size=0.1), x0, standard_energy, 10)
    assert np.any(np.abs(np.asarray(x_free)) > 0.5)


@pytest.mark.parametrize("name", ["langevin", "annealed_langevin"])
def test_grad_clip_clips_each_element(name):
    def steep(x):
        return 50.0 * jnp.sum(x**2, axis=-1)  # gradient 100 x

    x0 = jnp.array([[1.0, -1.0], [0.001, 0.5]])
    extra = {"initial_temperature": 1.0} if name == "annealed_langevin" else {}
    clipped = make(name, step_size=0.01, noise_scale=0.0, grad_clip=0.1, **extra)
    state, info = clipped.kernel(jax.random.key(0), clipped.init(x0, steep), steep)
    # Elementwise: grad 100 -> 0.1, grad 0.1 (x = 0.001) stays 0.1, grad 50 -> 0.1.
    expected = x0 - 0.01 * jnp.clip(100.0 * x0, -0.1, 0.1)
    np.testing.assert_allclose(state.position, expected, rtol=1e-6)
    # grad_norm reports the true (unclipped) gradient at the new position.
    np.testing.assert_allclose(info.grad_norm, jnp.linalg.norm(100.0 * expected, axis=-1), rtol=1e-5)

    assert make(name).config.grad_clip is None
    free = make(name, step_size=0.01, noise_scale=0.0, **extra)
    state, _ = free.kernel(jax.random.key(0), free.init(x0, steep), steep)
    np.testing.assert_allclose(state.position, x0 - 0.01 * 100.0 * x0, atol=1e-6)


def test_langevin_noise_scale_default_is_exact():
    # noise_scale=None means sqrt(2 * step_size): same draw as passing it explicitly.
    x0 = jnp.zeros((4, 2))
    exact = make("langevin", step_size=0.08)
    explicit = make("langevin", step_size=0.08, noise_scale=0.4)
    a, _ = exact.kernel(jax.random.key(0), exact.init(x0, standard_energy), standard_energy)
    b, _ = explicit.kernel(jax.random.key(0), explicit.init(x0, standard_energy), standard_energy)
    np.testing.assert_allclose(a.position, b.position, rtol=1e-6)
    assert exact.tunables == {"step_size": 0.08, "noise_scale": None}


def test_tunables_override_and_unknown_name():
    sampler = make("langevin", step_size=0.01, noise_scale=0.0)
    x0 = jnp.ones((2, 2))
    state = sampler.init(x0, standard_energy)
    new, _ = sampler.kernel(jax.random.key(0), state, standard_energy, step_size=0.5)
    np.testing.assert_allclose(new.position, 0.5 * x0)
    with pytest.raises(TypeError, match="temperature"):
        sampler.kernel(jax.random.key(0), state, standard_energy, temperature=2.0)


# -- annealed Langevin ---------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["geometric", "linear"])
def test_annealed_schedule_endpoints(schedule):
    sampler = make("annealed_langevin", initial_temperature=8.0, final_temperature=0.5, schedule=schedule)
    assert "temperature" in sampler.tunables
    temps = np.array([float(sampler.schedule(i, 7)["temperature"]) for i in range(7)])
    assert temps[0] == 8.0 and temps[-1] == 0.5
    assert np.all(np.diff(temps) < 0)
    mid = np.sqrt(8.0 * 0.5) if schedule == "geometric" else (8.0 + 0.5) / 2
    np.testing.assert_allclose(temps[3], mid, rtol=1e-6)
    assert float(sampler.schedule(0, 1)["temperature"]) == 0.5


def test_annealed_at_unit_temperature_matches_langevin():
    x0 = jax.random.normal(jax.random.key(0), (16, 2))
    annealed = make("annealed_langevin", initial_temperature=1.0, final_temperature=1.0)
    langevin = make("langevin")
    xa, sa = run(annealed, x0, gaussian_energy, 10)
    xl, sl = run(langevin, x0, gaussian_energy, 10)
    np.testing.assert_allclose(xa, xl, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sa.final_energy, sl.final_energy, rtol=1e-6)


def test_run_chain_applies_the_annealing_schedule():
    # Without noise on E = x^2 / 2, step k maps x to x (1 - h / T_k).
    num_steps, h = 5, 0.1
    sampler = make("annealed_langevin", step_size=h, noise_scale=0.0, num_steps=num_steps)
    x0 = jnp.ones((3, 1))
    x, _ = run(sampler, x0, standard_energy, num_steps)
    temps = 10.0 * (0.1 ** (np.arange(num_steps) / (num_steps - 1)))
    np.testing.assert_allclose(x, x0 * np.prod(1 - h / temps), rtol=1e-5)


# -- registry, contract, image-shaped input ------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registry_build_and_run_on_images(name):
    spec = get_spec("sampler", name)
    assert spec.kind == "sampler" and spec.name == name and spec.summary
    sampler = spec.build(spec.config())
    assert isinstance(sampler, Sampler)
    assert sampler.num_steps == spec.config().num_steps
    assert all(v is None or isinstance(v, float) for v in sampler.tunables.values())
    assert "step_size" in sampler.tunables

    x0 = jax.random.uniform(jax.random.key(0), (6, 4, 4, 1), jnp.float32)
    # Shapes by tracing only (eval_shape compiles nothing).
    state = jax.eval_shape(lambda x: sampler.init(x, standard_energy), x0)
    assert state.position.shape == x0.shape and state.energy.shape == (6,)
    new_state, info = jax.eval_shape(
        lambda k, s: sampler.kernel(k, s, standard_energy), jax.random.key(1), state
    )
    assert new_state.position.shape == x0.shape and new_state.position.dtype == jnp.float32
    for field in ("acceptance_rate", "grad_norm", "non_finite"):
        assert getattr(info, field).shape == (6,)

    x, summary = run(sampler, x0, standard_energy, sampler.num_steps)
    assert x.shape == x0.shape and x.dtype == jnp.float32
    assert summary.final_energy.shape == (6,)
    assert not bool(summary.non_finite.any())
    assert np.all(np.asarray(summary.grad_norm) > 0)


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"name": "langevin", "step_size": -1}, "step_size"),
        ({"name": "langevin", "num_steps": 0}, "num_steps"),
        ({"name": "langevin", "noise_scale": -0.1}, "noise_scale"),
        ({"name": "langevin", "grad_clip": 0.0}, "grad_clip"),
        ({"name": "langevin", "clamp": [1.0, 0.0]}, "clamp"),
        ({"name": "hmc", "num_integration_steps": 0}, "num_integration_steps"),
        ({"name": "hmc", "step_size": 0.0}, "step_size"),
        ({"name": "annealed_langevin", "schedule": "geometrc"}, "geometric"),
        ({"name": "annealed_langevin", "final_temperature": -1.0}, "final_temperature"),
        ({"name": "replica_exchange", "num_replicas": 1}, "num_replicas"),
        ({"name": "replica_exchange", "max_temperature": 1.0}, "max_temperature"),
    ],
)
def test_config_validation(table, field):
    with pytest.raises(ebmkit.ConfigError, match=field):
        structure(table, SamplerConfig)


def test_config_validation_in_python_raises_value_error():
    config_cls = get_spec("sampler", "langevin").config
    with pytest.raises(ValueError, match="low < high"):
        config_cls(clamp=(0.5, 0.5))


@pytest.mark.parametrize(
    "table",
    [
        {"name": "langevin", "step_size": 0.1, "noise_scale": 0.005, "grad_clip": 0.03, "clamp": [0, 1]},
        {"name": "hmc", "step_size": 0.05, "num_integration_steps": 3},
        {"name": "annealed_langevin", "schedule": "linear", "initial_temperature": 4.0},
        {"name": "replica_exchange", "num_replicas": 4, "max_temperature": 10.0, "clamp": [-1, 1]},
    ],
)
def test_config_round_trip(table):
    config = structure(table, SamplerConfig)
    assert structure(unstructure(config), SamplerConfig) == config
    assert unstructure(config)["name"] == table["name"]


# -- replica exchange ------------------------------------------------------------------


def far_mixture_energy(x):
    """0.3 N(-4, 0.5²) + 0.7 N(4, 0.5²) in x[0] (a barrier of 32 nats), N(0, 1) in x[1]."""
    modes = jnp.log(MIX_WEIGHTS) - 0.5 * ((x[:, :1] - 4.0 * jnp.array([-1.0, 1.0])) / 0.5) ** 2
    return -logsumexp(modes, axis=-1) + 0.5 * x[:, 1] ** 2


def test_replica_exchange_gets_the_weights_of_separated_modes_right():
    # Every chain starts in the light mode; no local sampler leaves it (32 nats).
    # Hot replicas (T = 20: 1.6 nats) cross, and swaps bring the heavy mode down.
    # 800 chains: SE of the weight 0.016; tolerance 0.06.
    x0 = jnp.stack([jnp.full((800,), -4.0), jnp.zeros((800,))], axis=1)
    sampler = make("replica_exchange", step_size=0.05, num_replicas=8, max_temperature=20.0)
    x, summary = run(sampler, x0, far_mixture_energy, 1500, seed=4)
    assert abs(float(jnp.mean(x[:, 0] > 0)) - 0.7) < 0.06
    assert abs(float(jnp.var(x[:, 1])) - 1.0) < 0.15
    assert 0.5 < float(summary.acceptance_rate.mean()) <= 1.0
    # The local moves alone (Langevin at the same step) keep every chain where it started.
    stuck, _ = run(make("langevin", step_size=0.05), x0, far_mixture_energy, 1500, seed=4)
    assert float(jnp.mean(stuck[:, 0] > 0)) == 0.0


def test_replica_exchange_swaps_and_ladder():
    sampler = make("replica_exchange", num_replicas=4, max_temperature=8.0)
    np.testing.assert_allclose(sampler.temperatures, [1.0, 2.0, 4.0, 8.0], rtol=1e-6)
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    state = sampler.init(x0, standard_energy)
    assert state.ladder_position.shape == (4, 64, 2) and state.ladder_energy.shape == (4, 64)
    kernel = jax.jit(sampler.kernel, static_argnums=2)
    rates = []
    for i in range(20):
        state, info = kernel(jax.random.key(i), state, standard_energy)
        rates.append(np.asarray(info.swap_rate))
        # The T = 1 replica is what the state reports as the chains' position.
        np.testing.assert_array_equal(state.position, state.ladder_position[0])
        np.testing.assert_allclose(state.energy, standard_energy(state.position), rtol=1e-5)
    assert int(state.parity) in (0, 1)
    assert 0.2 < float(np.mean(rates)) < 1.0  # swaps happen, and not all of them


# -- run_chain(final_energy=False): K gradient evaluations, not K + 1 ----------------------


@pytest.mark.parametrize("name", NAMES)
def test_final_energy_false_gives_the_same_chains(name):
    """Skipping the evaluation at the final positions changes no draw."""
    sampler = make(name)
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    full = jax.jit(lambda k, x: run_chain(k, sampler, x, gaussian_energy, 6))
    lean = jax.jit(lambda k, x: run_chain(k, sampler, x, gaussian_energy, 6, final_energy=False))
    x_full, s_full = full(jax.random.key(3), x0)
    x_lean, s_lean = lean(jax.random.key(3), x0)
    np.testing.assert_allclose(np.asarray(x_lean), np.asarray(x_full), rtol=1e-5, atol=1e-6)
    assert s_lean.final_energy is None and s_full.final_energy is not None
    np.testing.assert_allclose(np.asarray(s_lean.acceptance_rate), np.asarray(s_full.acceptance_rate), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s_lean.initial_energy), np.asarray(s_full.initial_energy), rtol=1e-6)
    assert not np.any(np.asarray(s_lean.non_finite))


def test_final_energy_false_grad_norm_is_the_mean_of_the_first_steps():
    """grad_norm: the mean over the positions after steps 1 .. K - 1 (the
    last step's positions are not evaluated)."""
    from ebmkit.sampling import trace_chain

    sampler = make("langevin")
    x0 = jax.random.normal(jax.random.key(0), (32, 2))
    _, _, trace = jax.jit(lambda k, x: trace_chain(k, sampler, x, gaussian_energy, 6))(jax.random.key(1), x0)
    _, lean = jax.jit(lambda k, x: run_chain(k, sampler, x, gaussian_energy, 6, final_energy=False))(
        jax.random.key(1), x0
    )
    grads = (np.asarray(trace.position[:-1]) - np.asarray(MU)) / np.asarray(VAR)
    expected = np.linalg.norm(grads, axis=-1).mean(axis=0)
    np.testing.assert_allclose(np.asarray(lean.grad_norm), expected, rtol=1e-5)


def test_final_energy_false_flags_non_finite_final_positions():
    sampler = make("langevin")

    def energy(x):  # finite everywhere, but its gradient overflows on the rows it marks
        return jnp.where(x[:, 0] > 50.0, 1e38 * jnp.sum(x**2, axis=-1), 0.5 * jnp.sum(x**2, axis=-1))

    x0 = jnp.zeros((8, 2)).at[0].set(jnp.array([100.0, 0.0]))
    x, summary = jax.jit(lambda k, x: run_chain(k, sampler, x, energy, 3, final_energy=False))(jax.random.key(0), x0)
    bad = np.asarray(summary.non_finite)
    assert bad[0] and not bad[1:].any()


def test_final_energy_false_evaluates_k_gradients():
    """The compiled chain loops K - 1 times after the start's evaluation and its
    peeled last step computes no matrix product: K gradients in all (K + 1 with
    ``final_energy=True``: the start and one per step)."""
    import re

    w = jax.random.normal(jax.random.key(0), (16, 32))

    def energy(x):
        return jnp.sum(jnp.tanh(x @ w) ** 2, axis=-1)

    sampler = make("langevin")
    x0 = jnp.zeros((8, 16))

    def compiled(final):
        fn = jax.jit(lambda k, x: run_chain(k, sampler, x, energy, 10, final_energy=final)[0])
        return fn.lower(jax.random.key(0), x0).compile().as_text()

    full, lean = compiled(True), compiled(False)
    trips = lambda text: sorted(int(n) for n in re.findall(r'known_trip_count":\{"n":"(\d+)"', text))  # noqa: E731
    dots = lambda text: len(re.findall(r"\bdot\(", text))  # noqa: E731
    assert 10 in trips(full) and 9 in trips(lean) and 10 not in trips(lean)
    assert dots(lean) == dots(full) > 0
