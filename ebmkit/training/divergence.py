"""When training has diverged, and what to tell the user.

Inside the compiled step, :func:`diverged_flag` marks a step whose loss (or
declared energies) is non-finite or beyond ``train.energy_bound``; the trainer
reads the flags when it fetches metrics and rolls back to the last good state
with a new key and a lower learning rate, up to ``train.max_retries`` times.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ADVICE", "WATCHED", "diverged_flag", "divergence_reason"]

#: Metrics whose magnitude is watched: ``loss`` always, energies where a loss reports them.
WATCHED = ("loss", "real_energy_mean", "fake_energy_mean")

ADVICE = """What to try (most effective first):
  - lower the learning rate:        --set train.learning_rate=1e-4
  - clip gradients:                 --set train.max_grad_norm=1.0
  - regularise energies harder:     --set loss.alpha=0.1   (or higher)
  - smaller MCMC steps:             --set sampler.step_size=0.005
  - spectral normalisation:         --set energy.use_spectral_norm=true"""


def diverged_flag(metrics: Mapping[str, jax.Array], bound: float) -> jax.Array:
    """True where a watched metric is non-finite or above ``bound`` in magnitude (traced)."""
    values = jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in WATCHED if k in metrics])
    return jnp.any(~jnp.isfinite(values)) | jnp.any(jnp.abs(values) > bound)


def divergence_reason(row: Mapping[str, np.ndarray], bound: float) -> str:
    """Words for why the step with host metrics ``row`` was flagged."""
    watched = [k for k in WATCHED if k in row]
    if not all(np.all(np.isfinite(row[k])) for k in watched):
        return "non-finite loss or energies"
    return f"energy magnitude above {bound:g}"
