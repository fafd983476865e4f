"""``cnn``: a convolutional energy network for images, ``x[B, H, W, C] -> E[B]``.

One stage per entry of ``hidden_dims``: a 3x3 convolution to that many channels
(stride 1 in the first stage, stride 2 between stages), then either a
pre-activation residual block (``use_residual``) or GroupNorm + activation.
Global mean pooling over H, W and a Linear layer to one unit give the energy.

Normalisation is GroupNorm, never BatchNorm: GroupNorm normalises within one
sample, so rows stay independent and each MCMC chain sees its own energy.
Train/eval mode works as for ``mlp`` (see :mod:`ebmkit.nn.eval`).

The convolutions are ``nnx.Conv`` layers (same parameters and checkpoints)
whose convolution is :func:`conv_general_dilated`: the same forward
convolution, with an input gradient that XLA's CPU backend runs as fast inside
a loop (a Langevin chain's ``lax.scan``) as outside one. See its docstring.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import jax
import jax.numpy as jnp
from flax import nnx

from ebmkit.config import EnergyConfig, config_class
from ebmkit.config.validators import (
    as_tuple,
    in_range,
    one_of,
    optional,
    positive_int,
    positive_ints,
)
from ebmkit.errors import ConfigError, ConfigProblem
from ebmkit.nn import (
    ACTIVATIONS,
    ModeViewMixin,
    SpectralNorm,
    TraceSafeDropout,
    check_event_shape,
    check_input,
    check_rngs,
    dense,
    dropout_stream,
)
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["CNNEnergyConfig", "CNNEnergy", "build", "spec", "group_count", "conv_general_dilated"]


def _image_shape(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    positive_ints(_inst, attribute, value)
    if len(value) != 3:
        raise ValueError(f"{attribute.name}: must be [H, W, C] (3 positive integers), got {value!r}")


@config_class
class CNNEnergyConfig(EnergyConfig):
    """Convolutional energy network for ``(H, W, C)`` images.

    Attributes:
        hidden_dims: channels of each stage; stages after the first halve H and W.
        input_shape: ``(H, W, C)``; ``None`` takes it from the data. When set,
            it must equal the data's event shape.
        use_residual: a residual block in every stage.
        use_spectral_norm: spectrally normalise every convolution and Linear.
        num_groups: GroupNorm groups, lowered per stage to the largest divisor
            of its channel count.
        activation: as for ``mlp``.
        dropout_rate: dropout inside each stage, in ``[0, 1)``; train mode only.
        out_features: units of the final layer. 1 (default) for an energy
            ``E[B]``; ``K > 1`` makes the network return ``[B, K]`` outputs,
            which is what the ``classifier`` energy sets for its logits.
    """

    hidden_dims: tuple[int, ...] = attrs.field(default=(32, 64, 128), converter=as_tuple, validator=positive_ints)
    # tuple[int, ...] rather than tuple[int, int, int]: a wrong length then gets
    # this module's message ("must be [H, W, C]") instead of cattrs' tuple error.
    input_shape: tuple[int, ...] | None = attrs.field(
        default=None, converter=as_tuple, validator=optional(_image_shape)
    )
    use_residual: bool = True
    use_spectral_norm: bool = False
    num_groups: int = attrs.field(default=8, validator=positive_int)
    activation: str = attrs.field(default="silu", validator=one_of(tuple(ACTIVATIONS)))
    dropout_rate: float = attrs.field(default=0.0, validator=in_range(0, 1, high_open=True))
    out_features: int = attrs.field(default=1, validator=positive_int)


def group_count(channels: int, num_groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``num_groups``."""
    g = max(1, min(num_groups, channels))
    while channels % g:
        g -= 1
    return g


_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_nhwc(x: jax.Array, w: jax.Array, strides: tuple, pads: tuple, precision: Any) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)


def _conv_nhwc_fwd(x, w, strides, pads, precision):
    # jax.lax directly, not _conv_nhwc: forward-mode autodiff of the gradient
    # (jax.jvp of a score) then differentiates plain jax.lax calls.
    y = jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)
    return y, (x, w)


def _conv_nhwc_bwd(strides, pads, precision, residuals, g):
    x, w = residuals
    # The input gradient is the convolution of g with the flipped kernel, its
    # input and output channels swapped (what jax's own transpose rule
    # computes). Materialising that kernel behind an optimisation barrier keeps
    # XLA from folding the swap into the convolution's dimension labels
    # (b01f_01oi->b01f), a form XLA's CPU backend runs 2-3x slower inside a
    # while loop, where it no longer inserts the transposing copy it adds
    # outside one.
    flipped = jax.lax.optimization_barrier(jnp.flip(w, (0, 1)).swapaxes(2, 3))
    lhs_pads = []
    for d in range(2):
        k, n, o, s = w.shape[d], x.shape[1 + d], g.shape[1 + d], strides[d]
        before = k - pads[d][0] - 1
        lhs_pads.append((before, n + k - 1 - (1 + s * (o - 1)) - before))
    dx = jax.lax.conv_general_dilated(
        g, flipped, (1, 1), lhs_pads, lhs_dilation=strides, dimension_numbers=_NHWC, precision=precision
    )
    # The kernel gradient as jax computes it (unused, and dropped, in a chain).
    _, vjp_w = jax.vjp(
        lambda w_: jax.lax.conv_general_dilated(x, w_, strides, pads, dimension_numbers=_NHWC, precision=precision),
        w,
    )
    (dw,) = vjp_w(g)
    return dx.astype(x.dtype), dw


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def conv_general_dilated(
    inputs: jax.Array,
    kernel: jax.Array,
    window_strides: Any,
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``jax.lax.conv_general_dilated`` for ``nnx.Conv``, loop-friendly on CPU.

    The same forward convolution and the same gradients (identical results
    on CPU in ``benchmarks/bench_conv.py``), but the input gradient of a plain
    2-d ``NHWC``/``HWIO`` convolution (padding within the kernel size) is
    written out with its flipped, channel-swapped kernel behind
    ``jax.lax.optimization_barrier`` (a custom VJP). Autodiff's own form lets
    XLA fold that swap into the convolution's dimension labels, which XLA's
    CPU backend runs as a slow convolution inside ``lax.scan``/``while``
    loops: a Langevin chain of the MNIST recipe's CNN ran each gradient about
    3x slower than the same gradient outside a loop. Anything else
    (dilations, groups, other layouts or paddings, a
    ``preferred_element_type``) goes to ``jax.lax`` unchanged.

    A custom VJP rules out forward-mode autodiff *of this function itself*
    (``jax.jvp`` of the energy); forward-over-reverse (``jax.jvp`` of the
    input gradient, as sliced score matching does) and reverse-over-reverse
    work.
    """
    plain = (
        inputs.ndim == 4
        and kernel.ndim == 4
        and feature_group_count == 1
        and all(int(v) == 1 for v in (lhs_dilation or (1, 1)))
        and all(int(v) == 1 for v in (rhs_dilation or (1, 1)))
        and kwargs.get("preferred_element_type") is None
        and kwargs.get("out_sharding") is None
        and dimension_numbers == jax.lax.conv_dimension_numbers(inputs.shape, kernel.shape, _NHWC)
    )
    if plain:
        strides = tuple(int(s) for s in window_strides)
        pads = padding
        if isinstance(pads, str):
            pads = jax.lax.padtype_to_pads(inputs.shape[1:3], kernel.shape[:2], strides, pads)
        pads = tuple((int(lo), int(hi)) for lo, hi in pads)
        plain = all(0 <= lo < k and 0 <= hi < k for (lo, hi), k in zip(pads, kernel.shape[:2], strict=True))
    if not plain:
        return jax.lax.conv_general_dilated(
            inputs, kernel, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count, precision=precision,
            **kwargs,
        )
    return _conv_nhwc(inputs, kernel, strides, pads, precision)


def _conv(in_ch: int, out_ch: int, *, stride: int, spectral_norm: bool, rngs: nnx.Rngs) -> nnx.Module:
    kw = dict(strides=stride, padding="SAME", conv_general_dilated=conv_general_dilated, rngs=rngs)
    if not spectral_norm:
        return nnx.Conv(in_ch, out_ch, (3, 3), **kw)
    layer = nnx.Conv(in_ch, out_ch, (3, 3), use_bias=False, **kw)
    return SpectralNorm(layer, out_features=out_ch, rngs=rngs)


class _Stage(nnx.Module):
    """Conv (downsampling after the first stage), then a residual block or norm + act."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, config: CNNEnergyConfig, stream: Any, rngs: nnx.Rngs):
        sn = config.use_spectral_norm
        groups = group_count(out_ch, config.num_groups)
        self.activation = config.activation
        self.use_residual = config.use_residual
        self.conv = _conv(in_ch, out_ch, stride=stride, spectral_norm=sn, rngs=rngs)
        self.norm1 = nnx.GroupNorm(out_ch, num_groups=groups, rngs=rngs)
        if config.use_residual:
            self.conv1 = _conv(out_ch, out_ch, stride=1, spectral_norm=sn, rngs=rngs)
            self.norm2 = nnx.GroupNorm(out_ch, num_groups=groups, rngs=rngs)
            self.conv2 = _conv(out_ch, out_ch, stride=1, spectral_norm=sn, rngs=rngs)
        self.dropout = TraceSafeDropout(config.dropout_rate, rngs=stream) if stream is not None else None

    def _drop(self, h: jax.Array) -> jax.Array:
        return h if self.dropout is None else self.dropout(h)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = self.conv(x)
        if not self.use_residual:
            return self._drop(act(self.norm1(x)))
        h = self.conv1(act(self.norm1(x)))
        h = self.conv2(self._drop(act(self.norm2(h))))
        return x + h


class CNNEnergy(ModeViewMixin, nnx.Module):
    """``x[B, H, W, C] -> E[B]`` through a small residual CNN."""

    def __init__(self, config: CNNEnergyConfig, *, event_shape: tuple[int, ...], rngs: nnx.Rngs):
        check_rngs(rngs, "cnn")
        self.event_shape = _image_event(config, event_shape)
        self.activation = config.activation
        stream = dropout_stream(rngs) if config.dropout_rate > 0 else None
        channels = (self.event_shape[-1], *config.hidden_dims)
        self.stages = nnx.List(
            [
                _Stage(a, b, stride=1 if i == 0 else 2, config=config, stream=stream, rngs=rngs)
                for i, (a, b) in enumerate(zip(channels[:-1], channels[1:], strict=True))
            ]
        )
        last = channels[-1]
        # Residual stages end on the un-normalised sum; normalise before pooling.
        self.final_norm = (
            nnx.GroupNorm(last, num_groups=group_count(last, config.num_groups), rngs=rngs)
            if config.use_residual
            else None
        )
        self.out_features = int(config.out_features)
        self.head = dense(last, self.out_features, spectral_norm=config.use_spectral_norm, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = check_input(x, self.event_shape, "cnn")
        for stage in self.stages:
            h = stage(h)
        if self.final_norm is not None:
            h = ACTIVATIONS[self.activation](self.final_norm(h))
        h = jnp.mean(h, axis=(1, 2))
        out = self.head(h).astype(jnp.float32)
        return out[:, 0] if self.out_features == 1 else out


def _image_event(config: CNNEnergyConfig, event_shape: Any) -> tuple[int, int, int]:
    shape = check_event_shape(event_shape, "cnn")
    if len(shape) != 3:
        hint = " (add a channel axis: (H, W, 1))" if len(shape) == 2 else ""
        raise ConfigError(
            [
                ConfigProblem(
                    path="",
                    message=f"cnn energy needs image events of shape (H, W, C), got event_shape {shape}{hint}",
                    suggestion="use the 'mlp' energy for flat data",
                )
            ]
        )
    if config.input_shape is not None and tuple(config.input_shape) != shape:
        raise ConfigError(
            [
                ConfigProblem(
                    path="input_shape",
                    message=f"is {tuple(config.input_shape)} but the data's event shape is {shape}",
                    suggestion="remove input_shape to take it from the data",
                )
            ]
        )
    return shape  # type: ignore[return-value]


def build(config: CNNEnergyConfig, ctx: BuildContext) -> CNNEnergy:
    """Build the network for ``(H, W, C)`` events."""
    return CNNEnergy(config, event_shape=ctx.event_shape, rngs=ctx.rngs)


spec = ComponentSpec(
    kind="energy",
    name="cnn",
    config=CNNEnergyConfig,
    build=build,
    summary="Residual CNN energy for (H, W, C) images, GroupNorm, optional spectral norm",
)
