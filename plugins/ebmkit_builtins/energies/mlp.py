"""``mlp``: a fully connected energy network, ``x[B, *event] -> E[B]``.

Each row is flattened, passed through ``hidden_dims`` Linear layers with an
activation (and optional dropout and spectral normalisation), and a final Linear
to one unit gives the scalar energy.

The layers (activations, a trace-safe dropout, a non-destructive spectral
norm, input checks) come from :mod:`ebmkit.nn`, shared with ``cnn``.

Train and eval mode follow Flax NNX: a freshly built network is in train mode;
``module.eval()`` (in place) or ``nnx.view(module, deterministic=True,
use_running_average=True)`` (a copy) switches dropout off and freezes the
spectral-norm power-iteration vectors; ``module.train()`` switches back.
"""

from __future__ import annotations

import math

import attrs
import jax
import jax.numpy as jnp
from flax import nnx

from ebmkit.config import EnergyConfig, config_class
from ebmkit.config.validators import (
    as_tuple,
    in_range,
    one_of,
    positive,
    positive_int,
    positive_ints,
)
from ebmkit.nn import (
    ACTIVATIONS,
    ModeViewMixin,
    TraceSafeDropout,
    check_event_shape,
    check_fits_in_memory,
    check_input,
    check_rngs,
    dense,
    dropout_stream,
)
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["MLPEnergyConfig", "MLPEnergy", "build", "spec"]

# -- the network -------------------------------------------------------------------


@config_class
class MLPEnergyConfig(EnergyConfig):
    """Fully connected energy network.

    Attributes:
        hidden_dims: widths of the hidden layers.
        activation: one of ``relu``, ``gelu``, ``silu``, ``swish``, ``elu``,
            ``leaky_relu``, ``tanh``, ``softplus``.
        dropout_rate: dropout after each hidden activation, in ``[0, 1)``;
            active in train mode only.
        use_spectral_norm: spectrally normalise every Linear layer.
        condition: ``"none"``, or ``"noise_level"``: the energy takes a noise
            level ``y[B]`` (a standard deviation, as multi-scale ``dsm`` feeds
            it), appended to the input as ``log y``.
        noise_level: the level an unconditioned call means (evaluation,
            sampling, plots) when ``condition = "noise_level"``; set it to the
            loss's smallest ``sigma``.
        out_features: units of the final layer. 1 (default) for an energy
            ``E[B]``; ``K > 1`` makes the network return ``[B, K]`` outputs,
            which is what the ``classifier`` energy sets for its logits.
    """

    hidden_dims: tuple[int, ...] = attrs.field(default=(128, 128), converter=as_tuple, validator=positive_ints)
    activation: str = attrs.field(default="silu", validator=one_of(tuple(ACTIVATIONS)))
    dropout_rate: float = attrs.field(default=0.0, validator=in_range(0, 1, high_open=True))
    use_spectral_norm: bool = False
    condition: str = attrs.field(default="none", validator=one_of(("none", "noise_level")))
    noise_level: float = attrs.field(default=0.1, validator=positive)
    out_features: int = attrs.field(default=1, validator=positive_int)


class MLPEnergy(ModeViewMixin, nnx.Module):
    """``x[B, *event_shape] -> E[B]`` through a fully connected network."""

    def __init__(self, config: MLPEnergyConfig, *, event_shape: tuple[int, ...], rngs: nnx.Rngs):
        check_rngs(rngs, "mlp")
        self.event_shape = check_event_shape(event_shape, "mlp")
        self.activation = config.activation
        sn = config.use_spectral_norm
        stream = dropout_stream(rngs) if config.dropout_rate > 0 else None
        self.condition = config.condition
        self.noise_level = float(config.noise_level)
        extra = 1 if config.condition == "noise_level" else 0
        widths = (math.prod(self.event_shape) + extra, *config.hidden_dims)
        # Parameters, gradients and two Adam moments: refuse before allocating.
        check_fits_in_memory(
            sum(a * b + b for a, b in zip(widths, (*widths[1:], config.out_features), strict=True)),
            "energy.hidden_dims", copies=4,
        )
        self.hidden = nnx.List(
            [dense(a, b, spectral_norm=sn, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.dropout = (
            nnx.List([TraceSafeDropout(config.dropout_rate, rngs=stream) for _ in config.hidden_dims])
            if stream is not None
            else None
        )
        self.out_features = int(config.out_features)
        self.head = dense(widths[-1], self.out_features, spectral_norm=sn, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        x = check_input(x, self.event_shape, "mlp")
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1)
        if self.condition == "noise_level":
            level = jnp.full((x.shape[0],), self.noise_level, h.dtype) if y is None else jnp.asarray(y, h.dtype)
            if level.shape != (x.shape[0],):
                raise ValueError(
                    f"mlp: the noise level must be one number per row, shape ({x.shape[0]},); got {level.shape}"
                )
            h = jnp.concatenate([h, jnp.log(level)[:, None]], axis=1)
        elif y is not None:
            raise ValueError(
                "mlp: got a condition y but the network takes none; build it with "
                'condition = "noise_level" for noise levels'
            )
        for i, layer in enumerate(self.hidden):
            h = act(layer(h))
            if self.dropout is not None:
                h = self.dropout[i](h)
        out = self.head(h).astype(jnp.float32)
        return out[:, 0] if self.out_features == 1 else out


def build(config: MLPEnergyConfig, ctx: BuildContext) -> MLPEnergy:
    """Build the network for events of ``ctx.event_shape`` (any rank; flattened)."""
    return MLPEnergy(config, event_shape=ctx.event_shape, rngs=ctx.rngs)


spec = ComponentSpec(
    kind="energy",
    name="mlp",
    config=MLPEnergyConfig,
    build=build,
    summary="Fully connected energy network (flattened input, scalar output)",
)
