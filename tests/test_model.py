"""EBM assembly, training, sampling and the one-program contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ebmkit
from ebmkit.components import build_dataset
from ebmkit.evaluate import grid_nll
from ebmkit.model import _jitted_generate
from ebmkit.training import make_loss_context
from ebmkit.types import Batch

SMALL = {
    "energy": {"name": "mlp", "hidden_dims": [32, 32]},
    "sampler": {"name": "langevin", "num_steps": 5},
    "buffer": {"name": "replay", "capacity": 256},
    "dataset": "8gaussians",
}


@pytest.fixture(scope="module")
def model():
    return ebmkit.assemble(SMALL)


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)


def _leaves_are_arrays(tree):
    leaves = jax.tree.leaves(tree)
    return leaves and all(isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) for x in leaves)


def test_assemble_builds_every_component(model):
    assert model.event_shape == (2,)
    assert type(model.sampler).__module__ == "ebmkit_builtins.samplers.langevin"
    assert model.num_steps == 5
    assert model.sample_buffer.capacity == 256
    assert len(model.sample_buffer.buffer) == 0


def test_energy_and_score_shapes_and_score_is_minus_gradient(model, points):
    out = model(points)
    assert out["energy"].shape == (32,)
    assert out["score"].shape == (32, 2)
    np.testing.assert_allclose(model.energy(points), out["energy"], rtol=1e-6)
    # Finite differences of the energy along x0 match the score.
    eps = 1e-2
    shift = np.zeros_like(points)
    shift[:, 0] = eps
    fd = (np.asarray(model.energy(points + shift)) - np.asarray(model.energy(points - shift))) / (2 * eps)
    np.testing.assert_allclose(-np.asarray(out["score"])[:, 0], fd, atol=2e-3)


def test_train_step_updates_parameters_and_fills_buffer(model, points):
    before = jax.tree.map(np.asarray, model.train_state().energy_params)
    metrics = model.train_step(points)
    after = model.train_state().energy_params
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)]
    assert all(changed)
    for key in ("loss", "real_energy_mean", "fake_energy_mean", "energy_gap"):
        assert np.isfinite(float(metrics[key]))
    np.testing.assert_allclose(
        float(metrics["energy_gap"]),
        float(metrics["fake_energy_mean"]) - float(metrics["real_energy_mean"]),
        rtol=1e-5,
        atol=1e-6,
    )
    assert 0 < len(model.sample_buffer.buffer) <= 32
    # The module's state holds concrete arrays only: no tracer leaked out of jit.
    assert _leaves_are_arrays(model.train_state())


def test_batch_dicts_are_accepted(model, points):
    model.train_step({"data": points})
    model.train_step({"image": points})
    with pytest.raises(ValueError, match="'image' or 'data'"):
        model.train_step({"x_typo": points})


def test_train_step_is_one_compiled_program_reused(model, points):
    model.train_step(points)
    step = model.train_step_fn()
    compiled_before = step._cache_size()
    for _ in range(3):
        model.train_step(points)
    assert model.train_step_fn() is step, "the jitted step must be reused, not rebuilt"
    assert step._cache_size() == compiled_before, "a second call with the same shapes recompiled"
    # The MCMC chain is a scan inside the one program, and nothing calls back to the host.
    jaxpr = jax.make_jaxpr(model.train_step_fn(jit=False))(model.train_state(), jnp.asarray(points))
    text = str(jaxpr)
    assert "scan" in text
    # K = 5: four steps in the loop and the last one outside it, whose energy
    # and gradient at the final positions nothing reads (the loss evaluates
    # them itself), so the chain costs K gradients, not K + 1.
    assert "length=4" in text
    for primitive in ("callback", "debug_print", "io_callback"):
        assert primitive not in text


def test_default_train_step_k20_batch256_is_one_scan():
    m = ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": [128, 128]},
        sampler={"name": "langevin", "num_steps": 20},
        dataset="8gaussians",
    )
    x = jnp.zeros((256, 2))
    jaxpr = jax.make_jaxpr(m.train_step_fn(jit=False))(m.train_state(), x)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    # 19 steps in the loop, the 20th outside it (no gradient at its positions).
    assert len(scans) == 1 and scans[0].params["length"] == 19
    assert "callback" not in str(jaxpr)


def test_negatives_are_detached(points):
    """Gradients equal those of the loss with the negatives held fixed."""
    m = ebmkit.assemble({**SMALL, "loss": {"name": "cd", "alpha": 0.1}})
    state = m.train_state()
    x = jnp.asarray(points)
    graphdef, eval_graphdef = m._graphdefs()
    loss = m.loss_fn
    key = jax.random.key(3)

    def energy_of(params):
        return lambda y: nnx.merge(graphdef, params, state.energy_state)(y)

    ctx = make_loss_context(sampler=m.sampler, sample_energy_fn=energy_of(state.energy_params))
    grads = jax.grad(lambda p: loss(key, energy_of(p), Batch(x), ctx)[0])(state.energy_params)
    x_neg, _, _ = loss.negatives(key, x, ctx)

    def fixed(p):
        e_pos, e_neg = energy_of(p)(x), energy_of(p)(x_neg)
        return e_pos.mean() - e_neg.mean() + 0.1 * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))

    expected = jax.grad(fixed)(state.energy_params)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_generate_compiles_once_per_shape(model):
    x = model.generate(8)
    assert x.shape == (8, 2)
    misses = _jitted_generate.cache_info().misses
    model.generate(8, step_size=0.02)
    model.generate(8, step_size=0.05)
    assert _jitted_generate.cache_info().misses == misses
    # An explicit noise scale (instead of the exact sqrt(2 * step_size)) is a
    # different program, compiled once and then reused for any value.
    model.generate(8, step_size=0.02, noise_scale=0.1)
    misses = _jitted_generate.cache_info().misses
    model.generate(8, step_size=0.03, noise_scale=0.005)
    assert _jitted_generate.cache_info().misses == misses
    assert model.generate(4, n_steps=3).shape == (4, 2)


def test_generate_same_key_same_samples(model):
    a = model.generate(8, rng_key=jax.random.key(1))
    b = model.generate(8, rng_key=jax.random.key(1))
    np.testing.assert_array_equal(a, b)


def test_sample_buffer_guide_surface(points):
    m = ebmkit.assemble(SMALL)
    with pytest.raises(RuntimeError, match="empty"):
        m.sample_from_buffer(4)
    m.train_step(points)
    n = len(m.sample_buffer.buffer)
    assert n > 0 and m.sample_buffer.buffer.shape[1:] == (2,)
    assert m.sample_from_buffer(4).shape == (4, 2)
    m.sample_buffer.buffer = []
    assert len(m.sample_buffer.buffer) == 0
    m.sample_buffer.buffer = points[:10]
    assert len(m.sample_buffer.buffer) == 10
    m.sample_buffer.clear()
    assert len(m.sample_buffer) == 0


def test_eval_and_train_modes(model):
    model.eval()
    model.train()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.train_step(np.zeros((4, 3), np.float32)), r"expected shape \[batch, 2\]"),
        (lambda m: m.energy(np.zeros((4, 2, 1), np.float32)), r"expected shape \[batch, 2\]"),
        (lambda m: m.train_step(np.array([[0.0, np.nan]] * 4, np.float32)), "non-finite"),
        (lambda m: m.train_step(jnp.array([[0.0, jnp.inf]] * 4)), "non-finite"),
        (lambda m: m.generate(0), "n_samples must be a positive integer"),
        (lambda m: m.generate(-3), "n_samples must be a positive integer"),
        (lambda m: m.generate(4, shape=(3,)), "does not match"),
        (lambda m: m.generate(4, n_steps=-1), "n_steps"),
        (lambda m: m.train_step(np.zeros((0, 2), np.float32)), "empty"),
    ],
)
def test_bad_input_is_a_clear_error(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model)


def test_unknown_activation_names_the_field():
    with pytest.raises(ebmkit.ConfigError, match=r"energy\.activation.*relu"):
        ebmkit.assemble({**SMALL, "energy": {"name": "mlp", "activation": "relux"}})


def test_event_shape_is_required_without_a_data_set():
    cfg = ebmkit.load_config(SMALL)
    with pytest.raises(ValueError, match="event_shape"):
        ebmkit.EBM(cfg)
    assert ebmkit.EBM(cfg, event_shape=(2,)).event_shape == (2,)


def test_hmc_and_cd_assemble_and_train(points):
    m = ebmkit.assemble({**SMALL, "sampler": {"name": "hmc", "num_steps": 3}, "loss": "cd"})
    metrics = m.train_step(points)
    assert 0.0 <= float(metrics["mcmc_acceptance"]) <= 1.0


def test_learns_8gaussians_in_a_few_hundred_steps():
    """Energy gap turns positive and the grid NLL falls well below uniform."""
    m = ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": [64, 64]},
        sampler={"name": "langevin", "num_steps": 20, "step_size": 0.01},
        loss={"name": "pcd", "alpha": 0.1},
        buffer={"name": "replay", "capacity": 4096},
        dataset="8gaussians",
        train={"learning_rate": 3e-3},
    )
    data = build_dataset(m.config.dataset)
    rng = np.random.default_rng(0)
    test = data.held_out(4000)
    uniform_nll = np.log((data.bounds[1] - data.bounds[0]) ** 2)
    start = grid_nll(m.energy, test, data.bounds, 128).nll
    gaps = []
    for _ in range(300):
        gaps.append(m.train_step(data.sample(rng, 128))["energy_gap"])
    result = grid_nll(m.energy, test, data.bounds, 128)
    assert result.nll < start - 0.5, (start, result)
    assert np.mean([float(g) for g in gaps[-50:]]) > 0
    # Uniform is 4.16 nats, the truth 2.83: demand at least half a nat of progress.
    assert result.nll < uniform_nll - 0.5, result
    assert result.edge_mass < 0.05


# -- the guide path's step cache: the module stays the truth ---------------------------


def _params(m):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(m.energy_net, nnx.Param))]


def _twins():
    return ebmkit.assemble(SMALL), ebmkit.assemble(SMALL)


def _slow_step(m, x):
    """train_step with its cache dropped first: the state rebuilt from the module."""
    from ebmkit.model import _STEP_CACHES

    _STEP_CACHES.pop(m, None)
    return m.train_step(x)


def _same(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)
    def host(v):
        return np.asarray(jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v)

    for x, y in zip(jax.tree.leaves(a.train_state()), jax.tree.leaves(b.train_state()), strict=True):
        np.testing.assert_array_equal(host(x), host(y))


def test_cached_train_steps_equal_steps_rebuilt_from_the_module(points):
    fast, slow = _twins()
    for _ in range(3):
        fast.train_step(points)
        _slow_step(slow, points)
    _same(fast, slow)
    # nnx.state reads what the steps wrote: the module is current after every call.
    np.testing.assert_array_equal(
        _params(fast)[0], np.asarray(jax.tree.leaves(fast.train_state().energy_params)[0])
    )


def test_train_step_sees_nnx_update_and_an_external_optimizer(points):
    import optax

    fast, slow = _twins()
    for m, step in ((fast, ebmkit.EBM.train_step), (slow, _slow_step)):
        step(m, points)
        # nnx.update between steps: the next step starts from the updated values.
        state = nnx.state(m.energy_net, nnx.Param)
        nnx.update(m.energy_net, jax.tree.map(lambda v: v * 0.5, state))
        step(m, points)
        # An external nnx.Optimizer step on the network, then train_step again.
        opt = nnx.Optimizer(m.energy_net, optax.sgd(0.1), wrt=nnx.Param)
        grads = nnx.grad(lambda net: jnp.mean(net(jnp.asarray(points))))(m.energy_net)
        opt.update(m.energy_net, grads)
        step(m, points)
        # Loading a state (e.g. a checkpoint's) replaces the Variables.
        m.load_train_state(m.train_state())
        step(m, points)
    _same(fast, slow)
    # And the halving really reached the step: without it, the parameters differ.
    plain, _ = _twins()
    for _ in range(4):
        plain.train_step(points)
    assert not np.allclose(_params(plain)[0], _params(fast)[0])


def test_train_step_follows_a_changed_sampler_setting(points):
    fast, slow = _twins()
    fast.train_step(points)
    _slow_step(slow, points)
    for m in (fast, slow):
        m.sampler.tunables["step_size"] = 0.5
    fast.train_step(points)
    _slow_step(slow, points)
    _same(fast, slow)


def test_train_step_sees_a_replaced_submodule(points):
    """Assigning a new layer (same shapes, other weights) reaches the next step."""
    fast, slow = _twins()
    for m, step in ((fast, ebmkit.EBM.train_step), (slow, _slow_step)):
        step(m, points)
        old = m.energy_net.head
        m.energy_net.head = nnx.Linear(old.in_features, old.out_features, rngs=nnx.Rngs(7))
        step(m, points)
    _same(fast, slow)


def _energy_from_scratch(m, x):
    """E(x) by splitting the module now (no cache involved)."""
    from ebmkit.nn import eval_view

    graphdef, state = nnx.split(eval_view(m.energy_net))
    return np.asarray(nnx.merge(graphdef, state)(jnp.asarray(x)))


def test_energy_and_generate_follow_every_change_of_the_module(points):
    """energy / model(x) / generate reuse the split module only while it is untouched."""
    m = ebmkit.assemble(SMALL)
    x = jnp.asarray(points)

    def check():
        np.testing.assert_allclose(np.asarray(m.energy(x)), _energy_from_scratch(m, x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(m(x)["energy"]), _energy_from_scratch(m, x), rtol=1e-5, atol=1e-6)

    check()
    m.generate(8)
    m.train_step(points)  # new arrays written into the same Variables
    check()
    nnx.update(m.energy_net, jax.tree.map(lambda v: v * 0.5, nnx.state(m.energy_net, nnx.Param)))
    check()
    old = m.energy_net.head
    m.energy_net.head = nnx.Linear(old.in_features, old.out_features, rngs=nnx.Rngs(11))
    check()
    # generate runs its chains on the current module: same key, same draws as a
    # twin holding the same parameters that never had a cache.
    twin = ebmkit.assemble(SMALL)
    twin.energy_net = m.energy_net
    a = m.generate(16, rng_key=jax.random.key(5))
    b = twin.generate(16, rng_key=jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    m.energy_net.head.bias.value = m.energy_net.head.bias.value + 100.0  # a Variable's value set directly
    check()


def test_graph_snapshot_detects_changes():
    from ebmkit.nn.eval import GraphSnapshot

    m = ebmkit.assemble(SMALL)
    net = m.energy_net
    snap = GraphSnapshot(net)
    assert snap.matches(net)
    assert not snap.matches(ebmkit.assemble(SMALL).energy_net)  # another module
    kernel = net.head.kernel
    kernel.value = kernel.value + 1.0
    assert not snap.matches(net)
    snap.refresh_arrays()
    assert snap.matches(net)
    net.noise_level = 0.5  # any attribute, not only Variables
    assert not snap.matches(net)
    snap = GraphSnapshot(net)
    net.hidden.append(net.hidden[0])  # a container's contents
    assert not snap.matches(net)
