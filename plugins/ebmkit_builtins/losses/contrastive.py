"""Contrastive divergence losses: ``cd`` (CD-k) and ``pcd`` (persistent CD).

Both push the energy down on data and up on negatives drawn by ``K`` sampler
steps; they differ only in where chains start:

* ``cd``: at the data batch (Hinton 2002), so chains never wander far;
* ``pcd``: at states drawn from the replay buffer (Tieleman 2008; Du & Mordatch
  2019), written back after the update so chains persist across updates.

Loss (Du & Mordatch 2019, eq. 2 plus their energy regulariser)::

    L = mean E(x+) - mean E(x-) + alpha * (mean E(x+)^2 + mean E(x-)^2)

with ``objective`` choosing the first part among the IGEBM objectives:
``contrastive`` (above), ``softplus`` (``mean softplus(E(x+_i) - E(x-_i))``,
bounded when negatives are far above the data) and ``logsumexp``
(``mean E(x+) + log mean exp(-E(x-))``: negatives weighted by their
self-normalised importance, so the low-energy ones count most).

``kl_weight > 0`` adds the KL term of improved contrastive divergence (Du et
al. 2021): the part of the maximum-likelihood gradient that flows through the
sampler. One more sampler step from the negatives is taken on the *live*
energy, so its end point ``x~`` depends on the parameters, and

    L_KL = mean E_stop(x~) - H(x~)

(``E_stop``: parameters detached, so only ``x~`` carries the gradient) with
``H`` a nearest-neighbour estimate of the samples' entropy,
``d * mean log(distance to the nearest other sample)``: the sampler is
pulled to lower energies while its samples stay spread out.

Negatives are always detached: chains run on ``ctx.sample_energy_fn`` (the
energy with parameters stopped) and the final states pass through
``stop_gradient``, so no gradient flows through the MCMC chain.
"""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import LossConfig, config_class
from ebmkit.config.validators import non_negative, one_of
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import run_chain
from ebmkit.types import Array, Batch, BuildContext, EnergyFn, LossContext, PRNGKey, Scheduled

__all__ = ["OBJECTIVES", "CDConfig", "PCDConfig", "ContrastiveLoss", "cd_spec", "pcd_spec"]

#: The contrastive objectives of Du & Mordatch (2019).
OBJECTIVES = ("contrastive", "softplus", "logsumexp")


@config_class
class _ContrastiveConfig(LossConfig):
    """Shared fields of the contrastive losses.

    Attributes:
        alpha: weight of the energy-magnitude regulariser
            ``alpha * (mean E(x+)^2 + mean E(x-)^2)``; keeps energies near zero.
        objective: ``"contrastive"``, ``"softplus"`` or ``"logsumexp"``.
        kl_weight: weight of the KL term through the sampler (0: off).
    """

    alpha: float = attrs.field(default=0.1, validator=non_negative)
    objective: str = attrs.field(default="contrastive", validator=one_of(OBJECTIVES))
    kl_weight: float = attrs.field(default=0.0, validator=non_negative)


@config_class
class CDConfig(_ContrastiveConfig):
    """Contrastive divergence (CD-k): chains start at the data batch.

    Attributes:
        alpha: weight of the energy-magnitude regulariser.
        objective: ``"contrastive"``, ``"softplus"`` or ``"logsumexp"``.
        kl_weight: weight of the KL term through the sampler (0: off).
    """


@config_class
class PCDConfig(_ContrastiveConfig):
    """Persistent contrastive divergence: chains start from the replay buffer.

    Attributes:
        alpha: weight of the energy-magnitude regulariser.
        objective: ``"contrastive"``, ``"softplus"`` or ``"logsumexp"``.
        kl_weight: weight of the KL term through the sampler (0: off).
    """


class ContrastiveLoss:
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)``.

    Attributes:
        metrics: the metrics it returns besides ``loss``.
    """

    metrics = (
        "contrastive", "regulariser", "real_energy_mean", "fake_energy_mean", "energy_gap",
        "mcmc_energy_decrease", "mcmc_acceptance", "mcmc_grad_norm", "mcmc_non_finite",
    )

    def __init__(self, alpha: float, persistent: bool, objective: str = "contrastive", kl_weight: float = 0.0):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.alpha = float(alpha)
        self.persistent = persistent
        self.objective = objective
        self.kl_weight = float(kl_weight)
        if self.kl_weight > 0:
            self.metrics = (*type(self).metrics, "kl", "kl_entropy")

    def __repr__(self) -> str:
        return (
            f"ContrastiveLoss(alpha={self.alpha}, persistent={self.persistent}, "
            f"objective={self.objective!r}, kl_weight={self.kl_weight})"
        )

    def _objective(self, e_pos: Array, e_neg: Array) -> Array:
        if self.objective == "softplus":
            return jnp.mean(jax.nn.softplus(e_pos - e_neg))
        if self.objective == "logsumexp":
            weights = jax.lax.stop_gradient(jax.nn.softmax(-e_neg))
            return jnp.mean(e_pos) - jnp.sum(weights * e_neg)
        return jnp.mean(e_pos) - jnp.mean(e_neg)

    def _kl_term(self, rng_key: PRNGKey, energy_fn: EnergyFn, x_neg: Array, ctx: LossContext):
        """``(mean E_stop(x~), H(x~))`` after one sampler step on the live energy."""
        state = ctx.sampler.init(x_neg, energy_fn)
        tunables = dict(ctx.tunables)
        if ctx.sampler_state is not None:
            tunables.update(ctx.sampler.adapted_tunables(ctx.sampler_state))
        if isinstance(ctx.sampler, Scheduled):  # the settings of the chain's last step
            last = max(ctx.num_steps - 1, 0)
            tunables.update(ctx.sampler.schedule(jnp.asarray(last), max(ctx.num_steps, 1)))
        state, _ = ctx.sampler.kernel(rng_key, state, energy_fn, **tunables)
        x_kl = state.position
        energy = jnp.mean(ctx.sample_energy_fn(x_kl))
        flat = x_kl.reshape(x_kl.shape[0], -1)
        ref = jax.lax.stop_gradient(flat)
        sq = jnp.sum((flat[:, None, :] - ref[None, :, :]) ** 2, axis=-1)
        sq = jnp.where(jnp.eye(flat.shape[0], dtype=bool), jnp.inf, sq)
        entropy = flat.shape[1] * jnp.mean(0.5 * jnp.log(jnp.min(sq, axis=1) + 1e-12))
        return energy, entropy

    def negatives(self, rng_key: PRNGKey, x_pos: Array, ctx: LossContext):
        """Run the chains; returns ``(x_neg, chain summary, new buffer state)``.

        An adaptive sampler runs with (and keeps adapting) the adaptation
        state in ``ctx.sampler_state``; the summary carries the new one.
        """
        init_key, chain_key = jax.random.split(rng_key)
        slots = None
        if self.persistent:
            if ctx.buffer is None or ctx.buffer_state is None:
                raise ValueError(
                    "loss 'pcd' needs a replay buffer (set buffer = \"replay\"); "
                    "use loss 'cd' to start chains at the data instead"
                )
            x0, slots = ctx.buffer.sample(init_key, ctx.buffer_state, x_pos.shape[0])
        else:
            x0 = x_pos
        adaptive = ctx.sampler_state is not None
        x_neg, summary = run_chain(
            chain_key, ctx.sampler, x0, ctx.sample_energy_fn, ctx.num_steps,
            adaptation=ctx.sampler_state, adapt=adaptive, final_energy=False, **ctx.tunables,
        )
        x_neg = jax.lax.stop_gradient(x_neg)
        buffer_state = ctx.buffer_state
        if self.persistent:
            buffer_state = ctx.buffer.update(ctx.buffer_state, x_neg, slots)
        return x_neg, summary, buffer_state

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext):
        x_pos = batch.x
        x_neg, summary, buffer_state = self.negatives(rng_key, x_pos, ctx)
        n = x_pos.shape[0]
        # One forward pass over positives and negatives together: rows are
        # independent, and one larger matmul beats two small ones.
        energies = energy_fn(jnp.concatenate([x_pos, x_neg.astype(x_pos.dtype)], axis=0))
        e_pos, e_neg = energies[:n], energies[n:]
        real, fake = jnp.mean(e_pos), jnp.mean(e_neg)
        contrastive = self._objective(e_pos, e_neg)
        regulariser = self.alpha * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
        loss = contrastive + regulariser
        extra = {}
        if self.kl_weight > 0:
            kl_energy, entropy = self._kl_term(jax.random.fold_in(rng_key, 1), energy_fn, x_neg, ctx)
            kl = kl_energy - entropy
            loss = loss + self.kl_weight * kl
            extra = {"kl": kl, "kl_entropy": entropy}
        metrics = {
            "loss": loss,
            "contrastive": contrastive,
            "regulariser": regulariser,
            "real_energy_mean": real,
            "fake_energy_mean": fake,
            "energy_gap": fake - real,
            # The chains' final energies are the loss's own (the chain does not
            # evaluate them a second time: run_chain(final_energy=False)).
            "mcmc_energy_decrease": jnp.mean(summary.initial_energy) - jax.lax.stop_gradient(fake),
            "mcmc_acceptance": jnp.mean(summary.acceptance_rate),
            "mcmc_grad_norm": jnp.mean(summary.grad_norm),
            "mcmc_non_finite": jnp.mean(summary.non_finite.astype(jnp.float32)),
            **extra,
        }
        new_sampler_state = summary.adaptation if ctx.sampler_state is not None else None
        return loss, metrics, ctx._replace(buffer_state=buffer_state, sampler_state=new_sampler_state)


def _build_cd(config: CDConfig, ctx: BuildContext | None = None) -> ContrastiveLoss:
    return ContrastiveLoss(config.alpha, persistent=False, objective=config.objective, kl_weight=config.kl_weight)


def _build_pcd(config: PCDConfig, ctx: BuildContext | None = None) -> ContrastiveLoss:
    return ContrastiveLoss(config.alpha, persistent=True, objective=config.objective, kl_weight=config.kl_weight)


cd_spec = ComponentSpec(
    kind="loss",
    name="cd",
    config=CDConfig,
    build=_build_cd,
    summary="Contrastive divergence (CD-k): chains start at the data batch",
    needs=("sampler",),
)

pcd_spec = ComponentSpec(
    kind="loss",
    name="pcd",
    config=PCDConfig,
    build=_build_pcd,
    summary="Persistent contrastive divergence: chains start from the replay buffer",
    needs=("sampler", "buffer"),
)
