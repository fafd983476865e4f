"""The built-in energy networks ``mlp`` and ``cnn``.

Models are tiny and shapes are reused across tests so that eager op
compilation stays cheap on a shared CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ebmkit.config as C
from ebmkit.errors import ConfigError
from ebmkit.registry import get_spec
from ebmkit.types import BuildContext

ACTIVATIONS = ("relu", "gelu", "silu", "swish", "elu", "leaky_relu", "tanh", "softplus")
TINY_CNN = {"hidden_dims": [4, 8], "num_groups": 2}
#: One stage: for the tests that compile forward and backward passes several times.
SMALL_CNN = {"hidden_dims": [4], "num_groups": 2}


def build(name, event_shape, rngs=None, **fields):
    config = C.structure({"name": name, **fields}, C.EnergyConfig)
    return get_spec("energy", name).create(config, BuildContext(event_shape=event_shape, rngs=rngs or nnx.Rngs(0)))


#: Calls a module through one compiled program (eager NNX calls compile every
#: primitive separately, which is slow for the CNN); state updates such as the
#: dropout counter still flow back to the module.
call = nnx.jit(lambda module, x: module(x))


def batch(event_shape, b=4, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, *event_shape))


def test_entry_points_resolve_to_the_configs():
    from ebmkit_builtins.energies.cnn import CNNEnergyConfig
    from ebmkit_builtins.energies.mlp import MLPEnergyConfig

    assert get_spec("energy", "mlp").config is MLPEnergyConfig
    assert get_spec("energy", "cnn").config is CNNEnergyConfig


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [
        ("mlp", (2,), {"hidden_dims": [8, 8]}),
        ("mlp", (8, 8, 1), {"hidden_dims": [8, 8]}),
        ("cnn", (8, 8, 1), TINY_CNN),
        ("cnn", (28, 28, 1), TINY_CNN),
        ("cnn", (8, 8, 1), {**TINY_CNN, "use_residual": False}),
    ],
)
def test_output_is_one_float32_energy_per_row(name, event_shape, fields):
    energy = build(name, event_shape, **fields)
    e = call(energy, batch(event_shape, b=3))
    assert e.shape == (3,)
    assert e.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(e)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_runs(activation):
    energy = build("mlp", (2,), hidden_dims=[8, 8], activation=activation)
    e = energy(batch((2,)))
    assert e.shape == (4,)
    assert bool(jnp.all(jnp.isfinite(e)))


def test_cnn_accepts_every_activation_name():
    for activation in ACTIVATIONS:  # same lookup table as mlp; config-level is enough
        assert C.structure({"name": "cnn", "activation": activation}, C.EnergyConfig).activation == activation


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_misspelled_activation_suggests_the_closest(name):
    with pytest.raises(ConfigError) as info:
        C.structure({"name": name, "activation": "relux"}, C.EnergyConfig)
    text = str(info.value)
    assert "activation" in text
    assert "did you mean 'relu'" in text


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"name": "mlp", "hidden_dims": [0, 4]}, "hidden_dims"),
        ({"name": "mlp", "hidden_dims": []}, "hidden_dims"),
        ({"name": "mlp", "dropout_rate": 1.0}, "dropout_rate"),
        ({"name": "mlp", "dropout_rate": -0.1}, "dropout_rate"),
        ({"name": "cnn", "input_shape": [8, 8]}, "input_shape"),
        ({"name": "cnn", "num_groups": 0}, "num_groups"),
    ],
)
def test_invalid_fields_are_config_errors_at_their_path(fields, path):
    with pytest.raises(ConfigError) as info:
        C.structure(fields, C.EnergyConfig)
    assert any(p.path == path for p in info.value.problems), info.value


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_config_round_trips(name):
    fields = {"name": name, "hidden_dims": [4, 8], "activation": "gelu", "dropout_rate": 0.25}
    if name == "cnn":
        fields["input_shape"] = [8, 8, 1]
    config = C.structure(fields, C.EnergyConfig)
    assert C.structure(C.unstructure(config), C.EnergyConfig) == config
    assert isinstance(config.hidden_dims, tuple)


def test_python_keyword_lists_become_tuples():
    from ebmkit_builtins.energies.cnn import CNNEnergyConfig
    from ebmkit_builtins.energies.mlp import MLPEnergyConfig

    assert MLPEnergyConfig(hidden_dims=[4, 4]).hidden_dims == (4, 4)
    assert CNNEnergyConfig(input_shape=[8, 8, 1]).input_shape == (8, 8, 1)


# -- row independence -------------------------------------------------------------


def _assert_rows_independent(energy_fn, x):
    x2 = x.at[0].add(3.0)
    e1, e2 = energy_fn(x), energy_fn(x2)
    assert not np.allclose(e1[0], e2[0]), "perturbing row 0 should change its energy"
    np.testing.assert_allclose(e1[1:], e2[1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [
        ("mlp", (2,), {"hidden_dims": [8, 8]}),
        ("mlp", (2,), {"hidden_dims": [8, 8], "use_spectral_norm": True, "dropout_rate": 0.3}),
        ("cnn", (8, 8, 1), TINY_CNN),
        ("cnn", (8, 8, 1), {**SMALL_CNN, "use_spectral_norm": True, "dropout_rate": 0.3}),
    ],
)
def test_rows_are_independent_in_eval_mode(name, event_shape, fields):
    energy = build(name, event_shape, **fields)
    energy.eval()
    _assert_rows_independent(lambda x: call(energy, x), batch(event_shape))


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [
        ("mlp", (2,), {"hidden_dims": [8, 8], "use_spectral_norm": True, "dropout_rate": 0.3}),
        ("cnn", (8, 8, 1), {**SMALL_CNN, "use_spectral_norm": True, "dropout_rate": 0.3}),
    ],
)
def test_rows_are_independent_in_train_mode_for_a_fixed_state(name, event_shape, fields):
    # Same state => same dropout masks; the masks and sigma do not depend on x.
    # (Eagerly, nnx.merge reuses the state's Variables, so the dropout counter
    # would advance between calls; as jit arguments they are fresh copies.)
    graphdef, state = nnx.split(build(name, event_shape, **fields))
    energy_fn = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    _assert_rows_independent(lambda x: energy_fn(state, x), batch(event_shape))


# -- functional use ---------------------------------------------------------------

TRAIN_CASES = [
    ("mlp", (2,), {"hidden_dims": [8, 8]}),
    ("mlp", (2,), {"hidden_dims": [8, 8], "use_spectral_norm": True, "dropout_rate": 0.2}),
    ("cnn", (8, 8, 1), {**SMALL_CNN, "use_spectral_norm": True, "dropout_rate": 0.2}),
]


@pytest.mark.parametrize(("name", "event_shape", "fields"), TRAIN_CASES)
def test_split_merge_under_jit_grad_and_scan(name, event_shape, fields):
    energy = build(name, event_shape, rngs=nnx.Rngs(params=0, noise=1, sample=2), **fields)
    graphdef, params, rest = nnx.split(energy, nnx.Param, ...)
    x = batch(event_shape)

    def energy_fn(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    @jax.jit
    def check(params, x):
        e = energy_fn(params, x)
        score = jax.grad(lambda x: energy_fn(params, x).sum())(x)
        grads = jax.grad(lambda p: energy_fn(p, x).mean())(params)

        # A Langevin-like loop with the module merged inside the body...
        def body_inside(x, _):
            g = jax.grad(lambda x: energy_fn(params, x).sum())(x)
            return x - 0.01 * g, energy_fn(params, x)

        # ...and merged once outside it (its variables then live in an outer trace).
        module = nnx.merge(graphdef, params, rest)

        def body_outside(x, _):
            g = jax.grad(lambda x: module(x).sum())(x)
            return x - 0.01 * g, module(x)

        scans = [jax.lax.scan(body, x, None, length=3) for body in (body_inside, body_outside)]
        return e, score, grads, scans

    e, score, grads, scans = check(params, x)
    assert e.shape == (4,)
    assert score.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(score)))
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)
    for x_end, energies in scans:
        assert x_end.shape == x.shape
        assert energies.shape == (3, 4)
        assert bool(jnp.all(jnp.isfinite(energies)))


@pytest.mark.parametrize(("name", "event_shape", "fields"), TRAIN_CASES[1:2])
def test_calling_the_module_itself_inside_transforms_is_harmless(name, event_shape, fields):
    energy = build(name, event_shape, **fields)
    x = batch(event_shape)
    before = nnx.state(energy)

    @jax.jit
    def closed_over(x):  # plain jax transforms over the module object itself
        score = jax.grad(lambda x: energy(x).sum())(x)
        _, es = jax.lax.scan(lambda c, _: (c, energy(x)), 0.0, None, length=2)
        return energy(x), score, es

    e, score, es = closed_over(x)
    assert e.shape == (4,) and score.shape == x.shape and es.shape == (2, 4)
    after = nnx.state(energy)
    # Nothing from those traces was stored on the module.
    for leaf in jax.tree.leaves(after):
        assert isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
    assert jax.tree.structure(before) == jax.tree.structure(after)


# -- shape errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event_shape", "fields", "bad"),
    [
        ("mlp", (2,), {"hidden_dims": [8]}, (4, 3)),
        ("mlp", (2,), {"hidden_dims": [8]}, (2,)),
        ("cnn", (8, 8, 1), TINY_CNN, (4, 8, 8, 3)),
    ],
)
def test_wrong_input_shape_names_expected_and_actual(name, event_shape, fields, bad):
    energy = build(name, event_shape, **fields)
    with pytest.raises(ValueError) as info:
        energy(jnp.zeros(bad))
    text = str(info.value)
    assert str(bad) in text
    assert ", ".join(map(str, event_shape)) in text


def test_wrong_input_shape_is_caught_under_jit_too():
    energy = build("mlp", (2,), hidden_dims=[8])
    graphdef, state = nnx.split(energy)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        jax.jit(lambda x: nnx.merge(graphdef, state)(x))(jnp.zeros((4, 3)))


def test_input_shape_that_disagrees_with_the_data_is_an_error():
    with pytest.raises(ValueError) as info:
        build("cnn", (8, 8, 1), **TINY_CNN, input_shape=[28, 28, 1])
    assert isinstance(info.value, ConfigError)
    text = str(info.value)
    assert "input_shape" in text and "(28, 28, 1)" in text and "(8, 8, 1)" in text


def test_matching_input_shape_is_accepted():
    energy = build("cnn", (8, 8, 1), **TINY_CNN, input_shape=[8, 8, 1])
    assert call(energy, batch((8, 8, 1))).shape == (4,)


@pytest.mark.parametrize("event_shape", [(2,), (8, 8), (1, 8, 8, 1)])
def test_cnn_rejects_non_image_events(event_shape):
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        build("cnn", event_shape, **TINY_CNN)


def test_rngs_without_params_or_default_is_a_clear_error():
    with pytest.raises(ValueError, match="params"):
        build("mlp", (2,), rngs=nnx.Rngs(noise=1), hidden_dims=[8])


# -- rngs, train and eval ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [("mlp", (2,), {"hidden_dims": [8, 8]}), ("cnn", (8, 8, 1), TINY_CNN)],
)
@pytest.mark.parametrize(
    "rngs", [lambda: nnx.Rngs(params=0, noise=1, sample=2), lambda: nnx.Rngs(0), lambda: nnx.Rngs(params=0, dropout=5)]
)
def test_builds_with_dropout_from_any_rngs(name, event_shape, fields, rngs):
    energy = build(name, event_shape, rngs=rngs(), **fields, dropout_rate=0.1)
    if name == "mlp":  # the trap is at build time; one forward pass is enough
        assert energy(batch(event_shape)).shape == (4,)


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [("mlp", (8, 8, 1), {"hidden_dims": [32, 32]}), ("cnn", (8, 8, 1), SMALL_CNN)],
)
def test_dropout_is_active_in_train_mode_only(name, event_shape, fields):
    energy = build(name, event_shape, rngs=nnx.Rngs(params=0, noise=1, sample=2), **fields, dropout_rate=0.5)
    x = batch(event_shape)
    # A fresh network is in train mode, as in Flax NNX.
    assert not np.allclose(call(energy, x), call(energy, x))

    frozen = nnx.view(energy, deterministic=True, use_running_average=True)
    np.testing.assert_array_equal(call(frozen, x), call(frozen, x))
    assert not np.allclose(call(energy, x), call(energy, x)), "nnx.view must not switch the original"

    energy.eval()
    e_eval = call(energy, x)
    np.testing.assert_array_equal(e_eval, call(energy, x))
    np.testing.assert_allclose(e_eval, call(frozen, x), rtol=1e-6)

    energy.train()
    assert not np.allclose(call(energy, x), call(energy, x))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_nnx_view_accepts_mode_flags_without_dropout_or_spectral_norm(name):
    event_shape = (2,) if name == "mlp" else (8, 8, 1)
    fields = {"hidden_dims": [8]} if name == "mlp" else TINY_CNN
    energy = build(name, event_shape, **fields)
    view = nnx.view(energy, deterministic=True, use_running_average=True)
    np.testing.assert_allclose(call(view, batch(event_shape)), call(energy, batch(event_shape)), rtol=1e-6)


# -- spectral norm ----------------------------------------------------------------


def _sn_layers(energy):
    from ebmkit.nn import SpectralNorm

    return [m for _, m in nnx.iter_modules(energy) if isinstance(m, SpectralNorm)]


@pytest.mark.parametrize(
    ("name", "event_shape", "fields"),
    [("mlp", (2,), {"hidden_dims": [8, 8]}), ("cnn", (8, 8, 1), SMALL_CNN)],
)
def test_spectral_norm_updates_u_in_train_mode_only_and_never_touches_params(name, event_shape, fields):
    energy = build(name, event_shape, **fields, use_spectral_norm=True)
    layers = _sn_layers(energy)
    # mlp: 2 hidden + head; cnn: 3 convs per residual stage + head.
    per_stage = 1 if name == "mlp" else 3
    assert len(layers) == per_stage * len(fields["hidden_dims"]) + 1
    for i, layer in enumerate(layers):  # move u off its fixed point so an update shows
        u = jax.random.normal(jax.random.key(i), layer.u[...].shape)
        layer.u[...] = u / jnp.linalg.norm(u)
    params = jax.tree.map(np.asarray, nnx.state(energy, nnx.Param))
    x = batch(event_shape)
    run = call if name == "cnn" else (lambda module, x: module(x))  # eager for the MLP

    energy.eval()
    u_before = [np.asarray(layer.u[...]) for layer in layers]
    run(energy, x)
    for layer, u in zip(layers, u_before, strict=True):
        np.testing.assert_array_equal(layer.u[...], u)

    energy.train()
    run(energy, x)
    assert any(not np.allclose(layer.u[...], u) for layer, u in zip(layers, u_before, strict=True))

    jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, nnx.state(energy, nnx.Param)))


def test_spectral_norm_divides_by_the_largest_singular_value():
    energy = build("mlp", (2,), hidden_dims=[8], use_spectral_norm=True)
    layer = energy.hidden[0]
    energy.eval()
    kernel = np.asarray(layer.layer.kernel[...])
    sigma = np.linalg.svd(kernel, compute_uv=False)[0]
    x = batch((2,))
    np.testing.assert_allclose(layer(x), np.asarray(x) @ (kernel / sigma), rtol=1e-3, atol=1e-5)
