"""``jem``: the joint energy-based model (Grathwohl et al. 2020, "Your
classifier is secretly an energy based model").

With a conditional energy ``E(x, y)`` whose unconditioned call is the marginal
``E(x) = -log sum_y exp(-E(x, y))`` (the ``classifier`` energy), the joint
density ``log p(x, y) = log p(x) + log p(y | x)`` splits into a generative
part trained by persistent contrastive divergence and a classifier trained by
cross-entropy::

    L = weight_ce * CE + weight_px * (mean E(x+) - mean E(x-))
        + weight_px * alpha * (mean E(x+)^2 + mean E(x-)^2)

    CE = mean_i [E(x+_i, y_i) - E(x+_i)] = mean_i -log p(y_i | x+_i)

The negatives ``x-`` are drawn as in ``pcd``: chain starts from the replay
buffer, ``K`` sampler steps on the energy with parameters detached, written
back. With ``conditional = true`` each buffer slot ``s`` holds a chain of
class ``s mod K`` that runs on ``E(x, s mod K)`` (class-conditional chains,
as JEM's authors do for their class-conditional samples); the labels are
spread evenly over the slots, so the chains together still sample ``p(x)``.

The weights split the data term's pull on the logits ``f(x+)``: it moves
them by ``(weight_ce - weight_px) * p(y | x) - weight_ce * onehot(y)`` per
example (``alpha = 0``; the regulariser adds a pull along ``p(y | x)``
that mostly sets the level of ``logsumexp f(x)``). At equal weights (JEM's
joint likelihood ``log p(x, y)``, the default) the data only raise the true
class's logit; the other classes' logits are pushed down only through the
negatives, so a short run leaves
``p(y | x)`` under-confident. ``weight_ce > weight_px`` adds that push back
(``weight_ce = 2 * weight_px``: the joint likelihood plus one more
cross-entropy, which pushes the wrong logits down as the classifier alone
does); docs/benchmarks.md measures it on digits.

``weight_px = 0`` leaves the plain classifier (cross-entropy alone, no
sampler, no buffer): the baseline JEM is compared with.

Stability, as the authors recommend: a short learning-rate warm-up
(``train.warmup_steps``), the replay buffer's reinitialisation rate
(``buffer.reinit_prob``, 5 % by default), the energy regulariser ``alpha``,
and a diverged step rolled back by the trainer (``train.max_retries``).
"""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp

from ebmkit.config import LossConfig, config_class
from ebmkit.config.validators import non_negative
from ebmkit.registry import ComponentSpec
from ebmkit.sampling import run_chain
from ebmkit.types import Array, Batch, BuildContext, EnergyFn, LossContext, PRNGKey

__all__ = ["JEMConfig", "JEMLoss", "jem_spec"]


@config_class
class JEMConfig(LossConfig):
    """JEM: PCD on ``log p(x)`` plus cross-entropy on ``p(y | x)``.

    Attributes:
        weight_px: weight of the generative term (PCD on ``log p(x)``);
            0 trains the classifier alone (no sampler or buffer is built).
        weight_ce: weight of the cross-entropy ``-log p(y | x)``; above
            ``weight_px`` it sharpens ``p(y | x)`` (see the module docstring).
        alpha: weight of the energy regulariser
            ``alpha * (mean E(x+)^2 + mean E(x-)^2)`` (scaled by ``weight_px``).
        conditional: run each buffer slot's chain on the class-conditional
            energy ``E(x, slot mod K)`` instead of the marginal ``E(x)``.
    """

    weight_px: float = attrs.field(default=1.0, validator=non_negative)
    weight_ce: float = attrs.field(default=1.0, validator=non_negative)
    alpha: float = attrs.field(default=0.1, validator=non_negative)
    conditional: bool = False

    def __attrs_post_init__(self) -> None:
        if self.weight_px == 0 and self.weight_ce == 0:
            raise ValueError("weight_px and weight_ce are both 0: the loss would train nothing")


class JEMLoss:
    """``(rng_key, energy_fn, batch, ctx) -> (loss, metrics, ctx)``.

    Attributes:
        metrics: the metrics it returns besides ``loss``.
    """

    def __init__(self, *, weight_px: float, weight_ce: float, alpha: float, conditional: bool,
                 num_classes: int | None):
        self.weight_px = float(weight_px)
        self.weight_ce = float(weight_ce)
        self.alpha = float(alpha)
        self.conditional = bool(conditional)
        self.num_classes = num_classes
        self.generative = self.weight_px > 0
        self.metrics = ("ce", "real_energy_mean")
        if self.generative:
            self.metrics = (
                *self.metrics, "contrastive", "regulariser", "fake_energy_mean", "energy_gap",
                "mcmc_energy_decrease", "mcmc_acceptance", "mcmc_grad_norm", "mcmc_non_finite",
            )

    def __repr__(self) -> str:
        return (
            f"JEMLoss(weight_px={self.weight_px}, weight_ce={self.weight_ce}, alpha={self.alpha}, "
            f"conditional={self.conditional})"
        )

    def negatives(self, rng_key: PRNGKey, n: int, ctx: LossContext):
        """PCD negatives: ``(x_neg, chain summary, new buffer state)``."""
        if ctx.sampler is None or ctx.buffer is None or ctx.buffer_state is None:
            raise ValueError(
                "loss 'jem' with weight_px > 0 needs a sampler and a replay buffer "
                '(sampler = "langevin", buffer = "replay"); set loss.weight_px = 0 for the classifier alone'
            )
        init_key, chain_key = jax.random.split(rng_key)
        x0, slots = ctx.buffer.sample(init_key, ctx.buffer_state, n)
        energy_fn = ctx.sample_energy_fn
        if self.conditional:
            labels = (slots % self.num_classes).astype(jnp.int32)
            base = ctx.sample_energy_fn

            def energy_fn(x: Array) -> Array:
                return base(x, labels)

        x_neg, summary = run_chain(
            chain_key, ctx.sampler, x0, energy_fn, ctx.num_steps,
            adaptation=ctx.sampler_state, adapt=ctx.sampler_state is not None,
            # Marginal chains end where the loss evaluates E(x) anyway: the
            # chain need not evaluate its final positions a second time.
            final_energy=self.conditional, **ctx.tunables,
        )
        x_neg = jax.lax.stop_gradient(x_neg)
        return x_neg, summary, ctx.buffer.update(ctx.buffer_state, x_neg, slots)

    def __call__(self, rng_key: PRNGKey, energy_fn: EnergyFn, batch: Batch, ctx: LossContext):
        if batch.y is None:
            raise ValueError("loss 'jem' needs labelled batches (x, y); the batch has no labels")
        x_pos, y = batch.x, jnp.asarray(batch.y, jnp.int32)
        n = x_pos.shape[0]
        if self.generative:
            x_neg, summary, buffer_state = self.negatives(rng_key, n, ctx)
            energies = energy_fn(jnp.concatenate([x_pos, x_neg.astype(x_pos.dtype)], axis=0))
            e_pos, e_neg = energies[:n], energies[n:]
        else:
            e_pos = energy_fn(x_pos)
        try:
            e_joint = energy_fn(x_pos, y)
        except ValueError as exc:
            raise ValueError(
                f"loss 'jem' needs an energy that takes labels as its condition, E(x, y) "
                f'(energy = {{name = "classifier", network = "mlp"}}); the energy refused them: {exc}'
            ) from None
        # -log p(y | x) = E(x, y) - E(x): the marginal energy is the log-normaliser over labels.
        nll_y = e_joint - e_pos
        ce = jnp.mean(nll_y)
        loss = self.weight_ce * ce
        metrics = {"ce": ce, "real_energy_mean": jnp.mean(e_pos)}
        out_ctx = ctx
        if self.generative:
            real, fake = jnp.mean(e_pos), jnp.mean(e_neg)
            contrastive = real - fake
            regulariser = self.alpha * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
            loss = loss + self.weight_px * (contrastive + regulariser)
            metrics.update({
                "contrastive": contrastive,
                "regulariser": regulariser,
                "fake_energy_mean": fake,
                "energy_gap": fake - real,
                "mcmc_energy_decrease": jnp.mean(summary.initial_energy) - jax.lax.stop_gradient(
                    fake if summary.final_energy is None else jnp.mean(summary.final_energy)
                ),
                "mcmc_acceptance": jnp.mean(summary.acceptance_rate),
                "mcmc_grad_norm": jnp.mean(summary.grad_norm),
                "mcmc_non_finite": jnp.mean(summary.non_finite.astype(jnp.float32)),
            })
            new_sampler_state = summary.adaptation if ctx.sampler_state is not None else None
            out_ctx = ctx._replace(buffer_state=buffer_state, sampler_state=new_sampler_state)
        metrics["loss"] = loss
        return loss, metrics, out_ctx


def _build(config: JEMConfig, ctx: BuildContext | None = None) -> JEMLoss:
    num_classes = None if ctx is None else ctx.num_classes
    if config.conditional and config.weight_px > 0 and num_classes is None:
        raise ValueError("conditional chains need the number of classes; train on a labelled data set")
    return JEMLoss(
        weight_px=config.weight_px, weight_ce=config.weight_ce, alpha=config.alpha,
        conditional=config.conditional, num_classes=num_classes,
    )


def _needs(config: JEMConfig) -> tuple[str, ...]:
    return ("sampler", "buffer", "labels") if config.weight_px > 0 else ("labels",)


jem_spec = ComponentSpec(
    kind="loss",
    name="jem",
    config=JEMConfig,
    build=_build,
    summary="JEM: PCD on log p(x) plus cross-entropy on p(y|x) (needs a conditional energy, e.g. classifier)",
    needs=_needs,
)
