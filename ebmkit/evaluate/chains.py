"""Chain diagnostics: effective sample size, split-R̂, autocorrelation.

From recorded draws ``[T, B, *event]`` (``T`` draws of ``B`` chains, e.g.
:func:`ebmkit.sampling.trace_chain`'s ``ChainTrace``):

* **bulk ESS** (rank-normalised split-chain ESS) and **tail ESS** (the ESS of
  the 5 % and 95 % quantile indicators), the modern estimators that stay
  honest on heavy tails and chains that disagree;
* **split-R̂** (rank-normalised and folded): far above 1.01 means the chains
  have not mixed (stuck in different modes, or still moving);
* the **autocorrelation** function, averaged over chains and coordinates;
* ESS **per second** and **per gradient evaluation** when the cost is given.

The estimators are BlackJAX's (``blackjax.diagnostics``), applied to each
coordinate of the draws (at most ``max_coordinates`` of them, evenly spaced
through the flattened event, for images), to the squared coordinates (which
report how well variances are estimated), and to the energy when given.
Summaries take the worst coordinate: the smallest ESS, the largest R̂.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from blackjax import diagnostics as bjd

__all__ = ["autocorrelation", "chain_diagnostics", "coordinates", "sampler_diagnostics"]


def coordinates(draws: Any, max_coordinates: int = 32) -> np.ndarray:
    """``draws[T, B, *event]`` as ``[T, B, D]`` with at most ``max_coordinates``
    coordinates, evenly spaced through the flattened event."""
    x = np.asarray(draws, np.float64)
    if x.ndim < 2:
        raise ValueError(f"draws must be [T, B, *event] (draws, chains, event); got shape {x.shape}")
    x = x.reshape(x.shape[0], x.shape[1], -1)
    dim = x.shape[2]
    if dim > max_coordinates:
        x = x[:, :, np.linspace(0, dim - 1, max_coordinates).round().astype(int)]
    return x


def autocorrelation(x: Any, max_lag: int = 50) -> np.ndarray:
    """Autocorrelation at lags ``0..max_lag`` of ``x[T, B, D]`` (or ``[T, B]``),
    each chain and coordinate centred on its own mean, averaged over both."""
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    n = x.shape[0]
    x = x - x.mean(axis=0, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, n=size, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=0)[: min(max_lag, n - 1) + 1]
    var = acov[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = acov / var
    rho = np.where(var > 0, rho, np.nan).reshape(rho.shape[0], -1)
    # A constant series has no autocorrelation: NaN, without numpy's warning.
    count = np.sum(np.isfinite(rho), axis=1)
    total = np.nansum(rho, axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@jax.jit
def _estimates(x: Any, energy: Any) -> dict[str, Any]:
    """Every estimator in one compiled program (BlackJAX's functions run op
    by op take tens of seconds even on small inputs; compiled, one program
    per input shape takes a few): bulk and tail ESS and R̂ of each coordinate
    of ``x[T, B, D]``, bulk ESS of its squares, bulk ESS and R̂ of ``energy[T, B, 1]``."""
    axes = {"chain_axis": 1, "sample_axis": 0}
    centred_sq = jax.numpy.square(x - x.mean(axis=(0, 1)))
    return {
        "bulk": bjd.ess_bulk(x, **axes),
        "tail": bjd.ess_tail(x, **axes),
        "rhat": bjd.rhat(x, **axes),
        "bulk_sq": bjd.ess_bulk(centred_sq, **axes),
        "energy_bulk": bjd.ess_bulk(energy, **axes),
        "energy_rhat": bjd.rhat(energy, **axes),
    }


def chain_diagnostics(
    draws: Any,
    *,
    energy: Any = None,
    acceptance_rate: Any = None,
    num_grad_evals: float | None = None,
    seconds: float | None = None,
    max_coordinates: int = 32,
    max_lag: int = 50,
) -> dict[str, Any]:
    """ESS, R̂ and autocorrelation of recorded draws.

    Args:
        draws: ``[T, B, *event]``, ``T ≥ 4`` draws of ``B ≥ 2`` chains (R̂ needs
            several chains; ESS works with one).
        energy: optional ``[T, B]`` energies of the draws.
        acceptance_rate: optional ``[T, B]`` (or any shape) acceptance rates.
        num_grad_evals: gradient evaluations all chains spent producing the
            draws (adds ``ess_per_1000_grads``).
        seconds: wall time spent producing them (adds ``ess_per_second``).
        max_coordinates: coordinates examined for large events.
        max_lag: the autocorrelation's last lag.

    Returns:
        A dict: ``ess_bulk``, ``ess_tail`` (the smallest over coordinates,
        total over chains), ``ess_bulk_sq`` (of the squared coordinates),
        ``rhat`` (the largest), ``ess_bulk_energy`` and ``rhat_energy`` with
        ``energy``; ``acceptance_rate``; ``ess_per_1000_grads`` and
        ``ess_per_second`` (from the smallest bulk ESS) when the cost is given;
        ``autocorrelation`` (an array over lags) and the per-coordinate arrays
        ``ess_bulk_per_coordinate`` and ``rhat_per_coordinate``.

    Raises:
        ValueError: too few draws or chains, or non-finite draws.
    """
    x = coordinates(draws, max_coordinates)
    num_draws, num_chains = x.shape[:2]
    if num_draws < 4:
        raise ValueError(f"chain diagnostics need at least 4 draws per chain, got {num_draws}")
    if num_chains < 2:
        raise ValueError(f"R̂ needs at least 2 chains, got {num_chains}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the draws hold NaN or infinite values: the chains diverged; diagnostics would be meaningless")
    if energy is not None:
        e = np.asarray(energy, np.float32)
        if e.shape != (num_draws, num_chains):
            raise ValueError(f"energy must be [T, B] = {(num_draws, num_chains)}, got {e.shape}")
    else:
        e = x[..., 0]  # a stand-in of the same shape; its figures are dropped
    est = {k: np.asarray(v) for k, v in _estimates(x.astype(np.float32), e[..., None]).items()}
    bulk, tail, rhat, bulk_sq = est["bulk"], est["tail"], est["rhat"], est["bulk_sq"]
    out: dict[str, Any] = {
        "num_draws": int(num_draws),
        "num_chains": int(num_chains),
        "ess_bulk": float(np.min(bulk)),
        "ess_tail": float(np.min(tail)),
        "ess_bulk_sq": float(np.min(bulk_sq)),
        "rhat": float(np.max(rhat)),
    }
    if energy is not None:
        out["ess_bulk_energy"] = float(np.ravel(est["energy_bulk"])[0])
        out["rhat_energy"] = float(np.ravel(est["energy_rhat"])[0])
    if acceptance_rate is not None:
        out["acceptance_rate"] = float(np.mean(np.asarray(acceptance_rate)))
    if num_grad_evals is not None and num_grad_evals > 0:
        out["ess_per_1000_grads"] = 1000.0 * out["ess_bulk"] / float(num_grad_evals)
    if seconds is not None and seconds > 0:
        out["ess_per_second"] = out["ess_bulk"] / float(seconds)
    out["autocorrelation"] = autocorrelation(x, max_lag)
    out["ess_bulk_per_coordinate"] = bulk
    out["rhat_per_coordinate"] = rhat
    return out


def sampler_diagnostics(
    model: Any,
    *,
    num_chains: int = 64,
    num_steps: int = 200,
    seed: Any = 0,
    sampler: Any = None,
    x0: Any = None,
    burn_in: float = 0.5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the model's sampler (or ``sampler``) and diagnose its chains.

    ``seed`` is an int or a ``jax.random.key``. ``num_chains`` chains start from the model's fresh starts (or ``x0``); an
    adaptive sampler first runs its adaptation phase; then ``num_steps`` steps
    are recorded in one compiled program, the first ``burn_in`` fraction is
    dropped, and :func:`chain_diagnostics` judges the rest. The cost figures
    count the recorded steps after ``burn_in`` (compilation excluded).

    Returns:
        The final positions ``[num_chains, *event]`` and the report:
        :func:`chain_diagnostics`'s scalars (``ess_bulk``, ``ess_tail``,
        ``ess_bulk_sq``, ``rhat``, ``ess_bulk_energy``, ``rhat_energy``,
        ``acceptance_rate``, ``ess_per_1000_grads``, ``ess_per_second``), the
        chain settings, ``divergences`` for samplers that report them and
        ``autocorrelation_lag1``.
    """
    import time

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ebmkit.evaluate.long_run import _eval_variables
    from ebmkit.nn.eval import graphdefs
    from ebmkit.sampling import trace_chain, warmup
    from ebmkit.types import Adaptive

    sampler = model.sampler if sampler is None else sampler
    if sampler is None:
        raise ValueError("the model has no sampler to diagnose; pass one (e.g. ebmkit.evaluate.long_run.sampler_for)")
    if num_steps < 8:
        raise ValueError(f"chain diagnostics need num_steps >= 8 (4 draws after burn-in), got {num_steps}")
    _, eval_graphdef = graphdefs(model.energy_net)
    params, rest = _eval_variables(model)
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    start_key, chain_key = jax.random.split(key)
    if x0 is None:
        x0 = model.fresh_starts.fresh(start_key, num_chains)
    x0 = jnp.asarray(x0, jnp.float32)

    def run(params: Any, rest: Any, rng_key: Any, x: Any) -> Any:
        def energy_fn(v: Any) -> Any:
            return nnx.merge(eval_graphdef, params, rest)(v)

        adaptation = None
        if isinstance(sampler, Adaptive):
            warm_key, rng_key = jax.random.split(rng_key)
            x, adaptation = warmup(warm_key, sampler, x, energy_fn, **dict(sampler.tunables))
        return trace_chain(rng_key, sampler, x, energy_fn, num_steps, adaptation=adaptation, **dict(sampler.tunables))

    compiled = jax.jit(run).lower(params, rest, chain_key, x0).compile()
    start = time.perf_counter()
    x, summary, trace = compiled(params, rest, chain_key, x0)
    jax.block_until_ready(x)
    seconds = time.perf_counter() - start
    skip = int(num_steps * burn_in)
    kept = num_steps - skip
    grads = float(np.sum(np.asarray(summary.num_grad_evals))) * kept / num_steps
    report = chain_diagnostics(
        np.asarray(trace.position[skip:]),
        energy=np.asarray(trace.energy[skip:]),
        acceptance_rate=np.asarray(trace.acceptance_rate[skip:]),
        num_grad_evals=grads,
        seconds=seconds * kept / num_steps,
    )
    scalars = {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}
    scalars["autocorrelation_lag1"] = float(report["autocorrelation"][1])
    if summary.divergences is not None:
        scalars["divergences"] = float(np.sum(np.asarray(summary.divergences)))
    scalars["chain_steps"] = int(num_steps)
    scalars["burn_in_steps"] = skip
    return np.asarray(x), scalars
