"""Score-matching losses: ``dsm`` (denoising) and ``ssm`` (sliced).

Both fit the model's score ``s(x) = -dE/dx`` to the data's without sampling
from the model, so a run with them has no sampler and no buffer. Neither sees
the normaliser: they learn the *shape* of the energy, and the evaluator
normalises it on the grid (2-D) or by AIS.

* ``dsm`` (Vincent 2011) matches the score of the data blurred by
  ``N(0, sigma^2 I)``; it learns that blurred density, so ``sigma`` trades bias
  (large) against gradient noise (small). With ``num_scales > 1`` it averages
  a geometric ladder of levels from ``sigma_max`` down to ``sigma``, each
  weighted by ``sigma^2`` (Song & Ermon 2019): the energy receives the level
  as its condition ``y`` (an energy built with ``condition = "noise_level"``),
  and an unconditioned call means the smallest level.
* ``ssm`` (Song et al. 2019) matches the data's own score through random
  projections ``v``: ``v^T (ds/dx) v + 1/2 (v^T s)^2``, or with
  ``variance_reduction`` the exact ``1/2 |s|^2`` in place of the second term;
  unbiased, at the cost of a Hessian-vector product per projection.
"""

from __future__ import annotations

import math

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import LossConfig, config_class
from ebmkit.config.validators import one_of, positive, positive_int
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import per_row_energy_and_grad
from ebmkit.types import Array, Batch, BuildContext, EnergyFn, LossContext, PRNGKey

__all__ = ["DSMConfig", "SSMConfig", "DenoisingScoreMatching", "SlicedScoreMatching", "dsm_spec", "ssm_spec"]


def _sum_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


# -- dsm -------------------------------------------------------------------------------


@config_class
class DSMConfig(LossConfig):
    """Denoising score matching.

    Attributes:
        sigma: the noise level (standard deviation, in data units); with
            ``num_scales > 1`` the smallest level.
        num_scales: levels on a geometric ladder from ``sigma_max`` down to
            ``sigma``; more than one needs an energy that takes the level as
            its condition (``energy.condition = "noise_level"``).
        sigma_max: the largest level (``num_scales > 1`` only).
    """

    sigma: float = attrs.field(default=0.1, validator=positive)
    num_scales: int = attrs.field(default=1, validator=positive_int)
    sigma_max: float = attrs.field(default=1.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.num_scales > 1 and self.sigma_max <= self.sigma:
            raise ValueError(
                f"sigma_max: must exceed sigma ({self.sigma}) for a ladder of {self.num_scales} "
                f"levels, got {self.sigma_max}"
            )


class DenoisingScoreMatching:
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)`` without chains.

    Per level ``sigma``: ``x~ = x + sigma eps`` and the loss
    ``1/2 |sigma dE/dx(x~) - eps|^2`` (``sigma^2`` times the squared error of
    the score against the blurred data's ``-eps / sigma``), averaged over
    the levels.

    Attributes:
        sigmas: the levels, largest first.
        metrics: the metrics it returns besides ``loss``.
    """

    metrics = ("dsm", "real_energy_mean")

    def __init__(self, sigmas: tuple[float, ...]):
        self.sigmas = tuple(float(s) for s in sigmas)

    def __repr__(self) -> str:
        return f"DenoisingScoreMatching(sigmas={self.sigmas})"

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext):
        x = batch.x
        n = x.shape[0]
        multi = len(self.sigmas) > 1
        if multi:
            # One level per row, cycling through the ladder: every batch sees
            # every level and the program has one energy call.
            levels = jnp.asarray(self.sigmas, x.dtype)[jnp.arange(n) % len(self.sigmas)]
        else:
            levels = jnp.full((n,), self.sigmas[0], x.dtype)
        scale = levels.reshape((n,) + (1,) * (x.ndim - 1))
        eps = jax.random.normal(rng_key, x.shape, x.dtype)
        condition = levels if multi else None

        def energy(z: Array) -> Array:
            return energy_fn(z) if condition is None else energy_fn(z, condition)

        _, grad = per_row_energy_and_grad(energy, x + scale * eps)
        dsm = 0.5 * jnp.mean(jnp.sum((scale * grad - eps) ** 2, axis=_sum_axes(x)))
        real = energy_fn(x) if condition is None else energy_fn(x, jnp.full((n,), self.sigmas[-1], x.dtype))
        return dsm, {"loss": dsm, "dsm": dsm, "real_energy_mean": jnp.mean(real)}, ctx


def _build_dsm(config: DSMConfig, ctx: BuildContext | None = None) -> DenoisingScoreMatching:
    if config.num_scales == 1:
        return DenoisingScoreMatching((config.sigma,))
    ratio = math.log(config.sigma_max / config.sigma) / (config.num_scales - 1)
    sigmas = tuple(config.sigma_max * math.exp(-ratio * i) for i in range(config.num_scales))
    return DenoisingScoreMatching(sigmas)


def _dsm_needs(config: DSMConfig) -> tuple[str, ...]:
    """A ladder of levels feeds the energy its level as the condition."""
    return ("noise_level",) if config.num_scales > 1 else ()


dsm_spec = ComponentSpec(
    kind="loss",
    name="dsm",
    config=DSMConfig,
    build=_build_dsm,
    summary="Denoising score matching (one level or a sigma^2-weighted ladder); no sampler",
    needs=_dsm_needs,
)


# -- ssm -------------------------------------------------------------------------------


@config_class
class SSMConfig(LossConfig):
    """Sliced score matching.

    Attributes:
        num_projections: random directions ``v`` per sample.
        variance_reduction: use the exact ``1/2 |s|^2`` in place of its
            projected estimate ``1/2 (v^T s)^2`` (SSM-VR).
        projection: ``"gaussian"`` or ``"rademacher"`` directions.
    """

    num_projections: int = attrs.field(default=1, validator=positive_int)
    variance_reduction: bool = True
    projection: str = attrs.field(default="gaussian", validator=one_of(("gaussian", "rademacher")))


class SlicedScoreMatching:
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)`` without chains.

    With ``s = -dE/dx`` and directions ``v`` (``E[v v^T] = I``):
    ``v^T (ds/dx) v + 1/2 (v^T s)^2``, averaged over directions, or
    ``v^T (ds/dx) v + 1/2 |s|^2`` with variance reduction. ``(ds/dx) v`` is one
    forward-mode derivative of the score (a Hessian-vector product); rows are
    independent, so one product serves the batch.

    Attributes:
        metrics: the metrics it returns besides ``loss``.
    """

    metrics = ("ssm", "score_norm", "real_energy_mean")

    def __init__(self, num_projections: int, variance_reduction: bool, projection: str):
        self.num_projections = int(num_projections)
        self.variance_reduction = bool(variance_reduction)
        self.projection = projection

    def __repr__(self) -> str:
        return (
            f"SlicedScoreMatching(num_projections={self.num_projections}, "
            f"variance_reduction={self.variance_reduction}, projection={self.projection!r})"
        )

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext):
        x = batch.x
        axes = _sum_axes(x)

        def score(z: Array) -> tuple[Array, Array]:
            energy, grad = per_row_energy_and_grad(energy_fn, z)
            return -grad, energy

        shape = (self.num_projections, *x.shape)
        if self.projection == "gaussian":
            vs = jax.random.normal(rng_key, shape, x.dtype)
        else:
            vs = jax.random.rademacher(rng_key, shape, x.dtype)

        def one(v: Array) -> tuple[Array, Array, Array]:
            s, hv, energy = jax.jvp(score, (x,), (v,), has_aux=True)
            trace_term = jnp.sum(v * hv, axis=axes)
            if self.variance_reduction:
                norm_term = 0.5 * jnp.sum(s**2, axis=axes)
            else:
                norm_term = 0.5 * jnp.sum(v * s, axis=axes) ** 2
            return trace_term + norm_term, jnp.sum(s**2, axis=axes), energy

        per_v, sq_norm, energy = jax.vmap(one)(vs)
        ssm = jnp.mean(per_v)
        metrics = {
            "loss": ssm,
            "ssm": ssm,
            "score_norm": jnp.mean(jnp.sqrt(sq_norm[0])),
            "real_energy_mean": jnp.mean(energy[0]),
        }
        return ssm, metrics, ctx


def _build_ssm(config: SSMConfig, ctx: BuildContext | None = None) -> SlicedScoreMatching:
    return SlicedScoreMatching(config.num_projections, config.variance_reduction, config.projection)


ssm_spec = ComponentSpec(
    kind="loss",
    name="ssm",
    config=SSMConfig,
    build=_build_ssm,
    summary="Sliced score matching (variance-reduced by default); no sampler",
    needs=(),
)
