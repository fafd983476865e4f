"""The ``cnn`` energy's convolution (``cnn.conv_general_dilated``): the same
function, gradients and parameters as plain ``nnx.Conv`` layers (calling
``jax.lax.conv_general_dilated``), inside and outside a ``lax.scan``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ebmkit_builtins.energies import cnn
from flax import nnx

RTOL, ATOL = 1e-4, 1e-6
NHWC = ("NHWC", "HWIO", "NHWC")


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def pair(config: dict, event_shape=(12, 12, 1), seed=0):
    """The energy as built, and the same parameters through plain ``nnx.Conv`` layers."""
    cfg = cnn.CNNEnergyConfig(**config)
    net = cnn.CNNEnergy(cfg, event_shape=event_shape, rngs=nnx.Rngs(seed))
    ref = cnn.CNNEnergy(cfg, event_shape=event_shape, rngs=nnx.Rngs(seed))
    convs = [m for _, m in nnx.iter_modules(ref) if isinstance(m, nnx.Conv)]
    assert convs
    for conv in convs:
        assert conv.conv_general_dilated is cnn.conv_general_dilated
        conv.conv_general_dilated = jax.lax.conv_general_dilated
    return net, ref


CONFIGS = [
    {"hidden_dims": (4, 8, 8), "num_groups": 2, "use_residual": False},
    {"hidden_dims": (4, 8), "num_groups": 2, "use_residual": True, "use_spectral_norm": True},
]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (0, 2))])
def test_conv_matches_lax_with_gradients(stride, size, padding):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, size, size, 2))
    w = jax.random.normal(kw, (3, 3, 2, 5))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)

    def ours(x, w):
        return cnn.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)

    def plain(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)

    y, y_ref = jax.jit(ours)(x, w), jax.jit(plain)(x, w)
    assert y.shape == y_ref.shape
    close(y, y_ref)
    g = jax.random.normal(kg, y.shape)
    (dx, dw), (dx_ref, dw_ref) = (jax.jit(lambda x, w, f=f: jax.vjp(f, x, w)[1](g))(x, w) for f in (ours, plain))
    close(dx, dx_ref)
    close(dw, dw_ref)


def test_other_convolutions_go_to_lax_unchanged():
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 4))
    w = jax.random.normal(jax.random.key(2), (3, 3, 2, 4))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    kw = dict(rhs_dilation=(2, 2), dimension_numbers=dn, feature_group_count=2)
    close(cnn.conv_general_dilated(x, w, (1, 1), "SAME", **kw), jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw))


@pytest.mark.parametrize("config", CONFIGS, ids=["plain-stages", "residual-spectral"])
def test_energy_and_input_gradient_match_plain_nnx_conv(config):
    net, ref = pair(config)
    # Same parameters (names, shapes, values): checkpoints load either way.
    s_net, s_ref = nnx.state(net, nnx.Param), nnx.state(ref, nnx.Param)
    assert jax.tree.structure(s_net) == jax.tree.structure(s_ref)
    for a, b in zip(jax.tree.leaves(s_net), jax.tree.leaves(s_ref), strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    x = jax.random.uniform(jax.random.key(3), (5, 12, 12, 1), minval=-1.0, maxval=1.0)
    gd_net, p_net = nnx.split(net)
    gd_ref, p_ref = nnx.split(ref)

    def energy(gd, p, y):
        return nnx.merge(gd, p)(y)

    def grad(gd, p, y):
        return jax.grad(lambda z: energy(gd, p, z).sum())(y)

    def chain(gd, p, y):  # the case the custom VJP is for: input gradients inside a loop
        return jax.lax.scan(lambda z, _: (jnp.clip(z - 0.5 * grad(gd, p, z), -1, 1), None), y, None, length=4)[0]

    for fn in (energy, grad, chain):
        run = jax.jit(fn, static_argnums=0)
        close(run(gd_net, p_net, x), run(gd_ref, p_ref, x))

    # Forward-over-reverse (a Hessian-vector product, as sliced score matching
    # takes) and reverse-over-reverse (a gradient penalty's parameter gradient).
    v = jax.random.normal(jax.random.key(4), x.shape)
    hvp = jax.jit(lambda gd, p: jax.jvp(lambda y: grad(gd, p, y), (x,), (v,))[1], static_argnums=0)
    close(hvp(gd_net, p_net), hvp(gd_ref, p_ref))
    penalty = jax.jit(jax.grad(lambda p, gd: jnp.sum(grad(gd, p, x) ** 2)), static_argnums=1)
    for a, b in zip(jax.tree.leaves(penalty(p_net, gd_net)), jax.tree.leaves(penalty(p_ref, gd_ref)), strict=True):
        close(a, b)
