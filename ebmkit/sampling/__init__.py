"""Running MCMC chains, and the pieces every sampler plugin shares.

* :func:`run_chain` / :func:`warmup`: K kernel steps in one ``lax.scan``
  (one compiled program, no host sync), with schedules and adaptation;
  :func:`trace_chain` also records thinned draws for diagnostics.
* :class:`BoundSampler`: a sampler's ``init`` + ``kernel`` bound to its config.
* :class:`BoundEnergy` / :func:`energy_module`: an energy function that keeps
  its network reachable, for samplers that use an energy's optional protocols.
* :func:`noise_key`: the fast, exact noise generator (:mod:`ebmkit.sampling.noise`).
* :func:`per_chain_diagnostics`: ``grad_norm`` and ``non_finite`` per chain.
"""

from ebmkit.sampling.binder import BoundSampler
from ebmkit.sampling.bound_energy import BoundEnergy, energy_module
from ebmkit.sampling.chain import (
    ChainSummary,
    ChainTrace,
    check_binary_starts,
    per_row_energy_and_grad,
    run_chain,
    trace_chain,
    tunables_for,
    warmup,
)
from ebmkit.sampling.diagnostics import event_axes, per_chain, per_chain_diagnostics
from ebmkit.sampling.noise import AUTO_MIN_SIZE, DEFAULT_PRNG, PRNGS, noise_key, resolve_prng

__all__ = [
    "check_binary_starts",
    "AUTO_MIN_SIZE",
    "BoundEnergy",
    "BoundSampler",
    "ChainSummary",
    "ChainTrace",
    "DEFAULT_PRNG",
    "PRNGS",
    "energy_module",
    "event_axes",
    "noise_key",
    "per_chain",
    "per_chain_diagnostics",
    "per_row_energy_and_grad",
    "resolve_prng",
    "run_chain",
    "trace_chain",
    "tunables_for",
    "warmup",
]
