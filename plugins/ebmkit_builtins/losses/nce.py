"""``nce``: noise-contrastive estimation (Gutmann & Hyvärinen 2010).

The model is trained as a classifier between data and draws of a tractable
noise distribution ``q``: with ``G(x) = -E(x) - c - log q(x)`` the log-odds of
"data" (``c``, the log normaliser, is a parameter the loss owns and learns),
and ``nu`` noise draws per data point,

    L = -mean_data log sigmoid(G(x) - log nu) - nu mean_noise log sigmoid(-(G(y) - log nu)).

At the optimum ``exp(-E - c)`` is the data density, normalised. No sampler,
no buffer: the noise is the data set's reference distribution (a Gaussian
fitted to its training data, widened by ``noise_scale``) or the uniform
distribution on its box. NCE is efficient while ``q`` is close to the data and
covers it; far from the data the energy is learnt only where noise lands.
"""

from __future__ import annotations

import math

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.config import LossConfig, config_class
from ebmkit.config.validators import one_of, positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.types import Array, Batch, BuildContext, EnergyFn, LossContext, PRNGKey

__all__ = ["NCEConfig", "NoiseContrastiveEstimation", "nce_spec"]


@config_class
class NCEConfig(LossConfig):
    """Noise-contrastive estimation.

    Attributes:
        noise: ``"reference"`` (the data set's reference distribution, a
            Gaussian fitted to its training data unless the data set offers
            another) or ``"uniform"`` (uniform on the data set's box; the
            energy is then learnt only inside it).
        noise_scale: widen the reference distribution about its mean by this
            factor (``"reference"`` only; 1 keeps it as fitted).
        noise_ratio: noise draws per data point (``nu``).
    """

    noise: str = attrs.field(default="reference", validator=one_of(("reference", "uniform")))
    noise_scale: float = attrs.field(default=1.5, validator=positive)
    noise_ratio: int = attrs.field(default=8, validator=positive_int)


class _Widened:
    """A reference distribution widened about its mean by ``scale``."""

    def __init__(self, base, scale: float, mean: Array):
        self.base, self.scale, self.mean = base, float(scale), mean

    def sample(self, rng_key: PRNGKey, n: int) -> Array:
        return self.mean + self.scale * (self.base.sample(rng_key, n) - self.mean)

    def log_prob(self, x: Array) -> Array:
        d = math.prod(x.shape[1:])
        return self.base.log_prob(self.mean + (x - self.mean) / self.scale) - d * math.log(self.scale)


class _Uniform:
    """Uniform on the box ``[low, high]`` (per coordinate)."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low = jnp.asarray(low, jnp.float32)
        self.high = jnp.asarray(high, jnp.float32)
        self.log_volume = float(np.sum(np.log(np.asarray(high, np.float64) - np.asarray(low, np.float64))))

    def sample(self, rng_key: PRNGKey, n: int) -> Array:
        return jax.random.uniform(rng_key, (n, *self.low.shape), jnp.float32, self.low, self.high)

    def log_prob(self, x: Array) -> Array:
        inside = jnp.all((x >= self.low) & (x <= self.high), axis=tuple(range(1, x.ndim)))
        return jnp.where(inside, -self.log_volume, -jnp.inf)


def noise_distribution(config: NCEConfig, ctx: BuildContext | None):
    """The noise ``q`` the config asks for, from the data's build context.

    Raises:
        ValueError: the data set offers no reference distribution, or no box
            for ``noise = "uniform"``.
    """
    name = ctx.dataset_name if ctx is not None and ctx.dataset_name else "the data set"
    if ctx is None or ctx.event_shape is None:
        raise ValueError("loss 'nce' needs the data's build context (event shape, reference distribution)")
    if config.noise == "uniform":
        if ctx.bounds is None:
            raise ValueError(
                f"loss 'nce' with noise = \"uniform\" needs a box, but {name} declares no bounds; "
                'use noise = "reference"'
            )
        low = np.broadcast_to(np.asarray(ctx.bounds[0], np.float32), ctx.event_shape)
        high = np.broadcast_to(np.asarray(ctx.bounds[1], np.float32), ctx.event_shape)
        return _Uniform(low, high)
    reference = ctx.reference
    if reference is None:
        raise ValueError(
            f"loss 'nce' needs a reference distribution to draw noise from, but {name} offers none; "
            'use noise = "uniform" (needs the data set\'s bounds)'
        )
    if config.noise_scale == 1.0:
        return reference
    # The widening is about the reference's mean, estimated from its own draws
    # when it does not say (a Gaussian reference does).
    mean = getattr(reference, "mean", None)
    if mean is None:
        mean = jnp.mean(reference.sample(jax.random.key(0), 4096), axis=0)
    return _Widened(reference, config.noise_scale, jnp.asarray(mean, jnp.float32))


class NoiseContrastiveEstimation:
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)`` with a learnt log normaliser.

    Attributes:
        noise: the noise distribution (``sample``, ``log_prob``).
        noise_ratio: noise draws per data point.
        metrics: the metrics it returns besides ``loss``.
    """

    metrics = ("nce", "log_normaliser", "accuracy", "real_energy_mean", "noise_energy_mean")

    def __init__(self, noise, noise_ratio: int):
        self.noise = noise
        self.noise_ratio = int(noise_ratio)

    def __repr__(self) -> str:
        return f"NoiseContrastiveEstimation(noise={type(self.noise).__name__}, noise_ratio={self.noise_ratio})"

    def init_params(self, rng_key: PRNGKey, data: BuildContext) -> dict[str, Array]:
        """The log normaliser ``c``, starting at 0."""
        return {"log_normaliser": jnp.zeros((), jnp.float32)}

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext):
        x = batch.x
        n = x.shape[0]
        y = jax.lax.stop_gradient(self.noise.sample(rng_key, n * self.noise_ratio).astype(x.dtype))
        c = ctx.params["log_normaliser"]
        energies = energy_fn(jnp.concatenate([x, y], axis=0))
        e_data, e_noise = energies[:n], energies[n:]
        log_q = self.noise.log_prob(jnp.concatenate([x, y], axis=0))
        log_nu = math.log(self.noise_ratio)
        logits = -energies - c - log_q - log_nu
        data_logit, noise_logit = logits[:n], logits[n:]
        data_term = -jnp.mean(jax.nn.log_sigmoid(data_logit))
        noise_term = -self.noise_ratio * jnp.mean(jax.nn.log_sigmoid(-noise_logit))
        loss = data_term + noise_term
        accuracy = (jnp.sum(data_logit > 0) + jnp.sum(noise_logit < 0)) / (n * (1 + self.noise_ratio))
        metrics = {
            "loss": loss,
            "nce": loss,
            "log_normaliser": c,
            "accuracy": accuracy,
            "real_energy_mean": jnp.mean(e_data),
            "noise_energy_mean": jnp.mean(e_noise),
        }
        return loss, metrics, ctx


def _build_nce(config: NCEConfig, ctx: BuildContext | None = None) -> NoiseContrastiveEstimation:
    return NoiseContrastiveEstimation(noise_distribution(config, ctx), config.noise_ratio)


nce_spec = ComponentSpec(
    kind="loss",
    name="nce",
    config=NCEConfig,
    build=_build_nce,
    summary="Noise-contrastive estimation against the data set's reference distribution; no sampler",
    needs=(),
)
