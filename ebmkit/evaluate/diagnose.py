"""The guide's health check of a trained EBM, for whatever components it has."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ebmkit.data import batch_from

__all__ = ["diagnose"]


def diagnose(
    model: Any,
    batch: Any,
    sample_shape: tuple[int, ...] | None = None,
    *,
    n_samples: int = 16,
    n_steps: int = 100,
    rng_key: Any = None,
    chain_statistics: bool = True,
) -> dict[str, float]:
    """The guide's health check of an EBM.

    Args:
        model: an :class:`ebmkit.EBM`.
        batch: real data, an array or a dict with ``image``/``data``.
        sample_shape: the event shape (default: the model's).
        n_samples: fresh chains to run.
        n_steps: their length.

    Returns:
        ``real_energy`` always; for a model with a sampler, ``fake_energy``,
        ``energy_gap`` (fake − real, should be > 0), ``mcmc_decrease`` (mean
        energy drop along the chains, should be > 0), ``sample_min``,
        ``sample_max`` and ``non_finite_fraction`` of the chains; for a model
        with a replay buffer, ``buffer_usage`` (filled fraction). With
        ``chain_statistics`` (and ``n_steps >= 8``, ``n_samples >= 2``), the
        chains' mixing from :func:`ebmkit.evaluate.chains.sampler_diagnostics`
        on the second half of ``n_steps`` recorded steps: ``ess_bulk``,
        ``ess_tail``, ``rhat``, ``ess_per_1000_grads``, ``ess_per_second``
        (and ``divergences`` for samplers that report them). What does not
        apply to the model's components is left out.
    """
    real = batch_from(batch)
    real_energy = float(jnp.mean(model.energy(real)))
    report: dict[str, float] = {"real_energy": real_energy}
    if getattr(model, "buffer", None) is not None:
        buffer = model.sample_buffer
        report["buffer_usage"] = len(buffer) / buffer.capacity
    if getattr(model, "sampler", None) is None:
        return report
    samples, info = model.generate(
        n_samples, shape=sample_shape, n_steps=n_steps, rng_key=rng_key, return_info=True
    )
    fake_energy = float(jnp.mean(model.energy(samples)))
    report.update(
        fake_energy=fake_energy,
        energy_gap=fake_energy - real_energy,
        mcmc_decrease=float(jnp.mean(info.initial_energy - info.final_energy)),
        sample_min=float(jnp.min(samples)),
        sample_max=float(jnp.max(samples)),
        non_finite_fraction=float(jnp.mean(info.non_finite)),
    )
    if chain_statistics and n_steps >= 8 and n_samples >= 2:
        import jax

        from ebmkit.evaluate.chains import sampler_diagnostics

        key = jax.random.fold_in(rng_key if rng_key is not None else jax.random.key(0), 0x455353)  # "ESS"
        _, chains = sampler_diagnostics(model, num_chains=n_samples, num_steps=n_steps, seed=key)
        for name in ("ess_bulk", "ess_tail", "rhat", "ess_per_1000_grads", "ess_per_second", "divergences"):
            if name in chains:
                report[name] = chains[name]
    return report
