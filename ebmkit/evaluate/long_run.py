"""Do the model's samples match its density? The long-run check.

An EBM trained with short chains (K steps per update) can learn a good density
while its own sampler, run for longer than K, drifts away from it: short-run,
non-convergent learning (Nijkamp, Hill et al., "On the anatomy of MCMC-based
maximum likelihood learning of energy-based models", AAAI 2020). The density
is then fine and the samples are not, or the other way round.

:func:`long_run_check` runs the model's sampler for ``multiples`` of K steps,
from the replay buffer (where training left the chains) and from fresh noise,
and reports for each run:

* ``escape_fraction``: samples outside the data box, against the model's own
  ``tail_mass`` there for 2-D data (a model with mass outside the box *should*
  have samples there; drifting chains have many more);
* ``energy_mean`` of the samples against ``data_energy_mean`` of held-out data
  (long chains far below the data's energy have found spurious minima);
* for 2-D data, ``tv``: the total-variation distance between a histogram of
  the samples and the model's own density on the same bins (normalised over
  the whole plane; everything outside the box is one bin), next to ``tv_floor``,
  the same distance for as many *exact* draws from that density. A sampler that
  converges scores near the floor.

``verdict`` sums it up; :func:`advice` says what to do about a model whose
long-run samples diverge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ebmkit.evaluate.grid import grid_nll
from ebmkit.nn import graphdefs, split_energy
from ebmkit.sampling import run_chain

__all__ = [
    "long_run_check",
    "continue_chains",
    "sample_report",
    "density_tv",
    "advice",
    "sampler_for",
    "ESCAPE_LIMIT",
    "TV_MARGIN",
]

#: Escaping samples above this fraction (above the model's own mass outside the
#: box, for 2-D data) fail the check.
ESCAPE_LIMIT = 0.01
#: A TV distance more than this above the exact-draw floor fails the check.
TV_MARGIN = 0.05
_BINS = 32


@functools.lru_cache(maxsize=16)
def _chain_program(eval_graphdef: Any, sampler: Any, num_steps: int):
    def run(params, rest, rng_key, x0):
        def energy_fn(x):
            return nnx.merge(eval_graphdef, params, rest)(x)

        return run_chain(rng_key, sampler, x0, energy_fn, num_steps, **dict(sampler.tunables))

    return jax.jit(run)


def _bin_probabilities(energy_fn: Any, bounds: tuple[float, float], bins: int, sub: int) -> tuple[np.ndarray, float]:
    """The model's probability of each of ``bins × bins`` cells of the box (by a
    ``sub × sub`` midpoint rule per cell), normalised over the whole plane, and
    the probability of the outside."""
    low, high = float(bounds[0]), float(bounds[1])
    n = bins * sub
    h = (high - low) / n
    centres = low + h * (np.arange(n) + 0.5)
    xx, yy = np.meshgrid(centres, centres, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    neg_e = -np.asarray(energy_fn(pts), np.float64)
    full = grid_nll(energy_fn, np.zeros((1, 2), np.float32), (low, high), n)
    cell = np.exp(neg_e - full.log_z) * h * h
    per_bin = cell.reshape(bins, sub, bins, sub).sum(axis=(1, 3))
    return per_bin, full.tail_mass


def density_tv(
    samples: np.ndarray, energy_fn: Any, bounds: tuple[float, float], *, bins: int = _BINS, sub: int = 8,
    seed: int = 0,
) -> tuple[float, float]:
    """``(tv, tv_floor)``: total-variation distance between the 2-D samples'
    histogram and the model's density on ``bins × bins`` cells of the box plus
    one outside cell, and the same for as many exact draws from the density."""
    samples = np.asarray(samples, np.float64)
    probs, outside = _bin_probabilities(energy_fn, bounds, bins, sub)
    p = np.append(probs.ravel(), max(outside, 0.0))
    p = p / p.sum()
    low, high = float(bounds[0]), float(bounds[1])
    inside = np.all((samples >= low) & (samples < high), axis=1)
    idx = np.floor((samples[inside] - low) / (high - low) * bins).astype(int)
    counts = np.zeros(bins * bins + 1)
    np.add.at(counts, idx[:, 0] * bins + idx[:, 1], 1.0)
    counts[-1] = np.count_nonzero(~inside)
    tv = 0.5 * float(np.abs(counts / len(samples) - p).sum())
    exact = np.random.default_rng(seed).multinomial(len(samples), p)
    floor = 0.5 * float(np.abs(exact / len(samples) - p).sum())
    return tv, floor


def _eval_variables(model: Any) -> tuple[Any, Any]:
    """The parameters the model evaluates with (its EMA when it keeps one,
    see ``EBM.evaluate_with``), so chains agree with ``model.energy``."""
    if hasattr(model, "eval_variables"):
        return model.eval_variables()
    return split_energy(model.energy_net)


def sampler_for(model: Any, name: str, options: dict[str, Any] | None = None) -> Any:
    """A sampler other than the model's own, for sampling a trained model.

    ``name`` is a registered sampler (e.g. ``"replica_exchange"``, the one that
    gets the weights of separated modes right), ``options`` its config fields.
    A ``step_size`` not given is the model's own sampler's, when both have one
    (the step that suited training suits the ``T = 1`` moves).
    """
    from ebmkit.components import build_component
    from ebmkit.config import load_config

    options = dict(options or {})
    own = getattr(getattr(model, "sampler", None), "tunables", {}) or {}
    config = load_config(sampler={"name": name, **options}).sampler
    if "step_size" not in options and "step_size" in own and hasattr(config, "step_size"):
        config = load_config(sampler={"name": name, **options, "step_size": float(own["step_size"])}).sampler
    return build_component(config)


def continue_chains(model: Any, x0: Any, num_steps: int, *, seed: int = 0, sampler: Any = None) -> np.ndarray:
    """Run the model's sampler (or ``sampler``) ``num_steps`` steps from
    ``x0[B, *event]`` (e.g. states of the replay buffer) in eval mode; one
    compiled program per length."""
    sampler = model.sampler if sampler is None else sampler
    if sampler is None:
        raise ValueError("the model has no sampler to run")
    _, eval_graphdef = graphdefs(model.energy_net)
    params, rest = _eval_variables(model)
    x, _ = _chain_program(eval_graphdef, sampler, int(num_steps))(
        params, rest, jax.random.key(seed), jnp.asarray(x0, jnp.float32)
    )
    return np.asarray(x)


def sample_report(model: Any, dataset: Any, samples: Any, *, seed: int = 0) -> dict[str, float]:
    """How samples sit against the data box and, for 2-D data, the model's own
    density: ``escape_fraction``, ``tail_mass``, ``tv`` and ``tv_floor``."""
    x = np.asarray(samples, np.float64)
    out: dict[str, float] = {}
    bounds = dataset.bounds
    if bounds is None:
        return out
    flat = x.reshape(len(x), -1)
    out["escape_fraction"] = float(np.mean(~np.all((flat >= bounds[0]) & (flat <= bounds[1]), axis=1)))
    if tuple(dataset.event_shape) == (2,):
        finite = np.all(np.isfinite(flat), axis=1)
        out["tail_mass"] = grid_nll(model.energy, np.zeros((1, 2), np.float32), bounds, 256).tail_mass
        out["tv"], out["tv_floor"] = density_tv(x[finite], model.energy, bounds, seed=seed)
    return out


def long_run_check(
    model: Any,
    dataset: Any,
    *,
    multiples: Sequence[int] = (10, 100),
    num_chains: int = 2000,
    seed: int = 0,
    steps: Sequence[int] | None = None,
    sampler: Any = None,
    starts: Sequence[str] = ("buffer", "noise"),
) -> dict[str, Any]:
    """Run the model's sampler ``m × K`` steps for each ``m`` in ``multiples``,
    from the buffer and from noise, and compare the samples with the data and
    with the model's own density.

    Args:
        model: an :class:`~ebmkit.EBM` with a sampler (and, for the runs from
            the buffer, a filled replay buffer).
        dataset: its data set (held-out points and the box).
        multiples: chain lengths in units of the training K.
        num_chains: chains per run.
        seed: seeds the chains and the exact-draw floor.
        steps: chain lengths in sampler steps, instead of ``multiples``.
        sampler: run this sampler instead of the model's own (see
            :func:`sampler_for`); ``multiples`` still count the training K.
        starts: which starts to run, of ``"buffer"`` and ``"noise"``.

    Returns:
        ``{"runs": [{"start", "steps", "escape_fraction", "energy_mean",
        "tv", "tv_floor"}...], "data_energy_mean", "tail_mass", "verdict",
        "converges"}``.

    Raises:
        ValueError: the model has no sampler.
    """
    training_k = max(int(model.sampler.num_steps), 1) if model.sampler is not None else 1
    sampler = model.sampler if sampler is None else sampler
    if sampler is None:
        raise ValueError("long-run check: the model has no sampler to run")
    unknown = set(starts) - {"buffer", "noise"}
    if unknown:
        raise ValueError(f"long-run check: starts must be 'buffer' or 'noise', got {sorted(unknown)}")
    _, eval_graphdef = graphdefs(model.energy_net)
    params, rest = _eval_variables(model)
    held = np.asarray(dataset.held_out(num_chains), np.float32)
    data_energy = float(np.mean(np.asarray(model.energy(held))))
    bounds = dataset.bounds
    two_d = tuple(dataset.event_shape) == (2,) and bounds is not None
    tail_mass = grid_nll(model.energy, held, bounds, 256).tail_mass if two_d else 0.0
    key = jax.random.key(seed)
    chain_starts: dict[str, jax.Array] = {}
    key, fresh_key, buffer_key = jax.random.split(key, 3)
    if "noise" in starts:
        chain_starts["noise"] = model.fresh_starts.fresh(fresh_key, num_chains)
    if "buffer" in starts and model.buffer is not None and len(model.sample_buffer) > 0:
        chain_starts["buffer"] = model.sample_from_buffer(num_chains, rng_key=buffer_key)
    if steps is not None:
        lengths = [int(n) for n in steps]
    else:
        lengths = [int(m) * training_k for m in multiples]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"long-run check: chain lengths must be >= 1, got {lengths}")
    runs = []
    for start, x0 in chain_starts.items():
        for length in lengths:
            key, chain_key = jax.random.split(key)
            x, _ = _chain_program(eval_graphdef, sampler, length)(params, rest, chain_key, jnp.asarray(x0))
            x = np.asarray(x, np.float64)
            finite = np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
            row: dict[str, Any] = {"start": start, "steps": length, "non_finite_fraction": float(np.mean(~finite))}
            if bounds is not None:
                low, high = bounds
                outside = ~np.all((x.reshape(len(x), -1) >= low) & (x.reshape(len(x), -1) <= high), axis=1)
                row["escape_fraction"] = float(np.mean(outside | ~finite))
            energies = np.asarray(model.energy(np.where(np.isfinite(x), x, 0.0).astype(np.float32)))
            row["energy_mean"] = float(np.mean(energies[finite])) if finite.any() else math.nan
            if two_d:
                row["tv"], row["tv_floor"] = density_tv(x[finite], model.energy, bounds, seed=seed)
            runs.append(row)
    # A run that fails while a longer run from the same start passes has not
    # mixed yet (e.g. a fresh replica-exchange ladder); divergence is when the
    # longest runs fail.
    longest = {start: max(r["steps"] for r in runs if r["start"] == start) for start in chain_starts}
    failures, unmixed = [], []
    for row in runs:
        problems = []
        where = f"{row['steps']} steps from {row['start']}"
        if row.get("escape_fraction", 0.0) > tail_mass + ESCAPE_LIMIT:
            problems.append(
                f"{row['escape_fraction']:.1%} of the samples escape the data box after {where} "
                f"(the model's own mass there: {tail_mass:.1%})"
            )
        if "tv" in row and row["tv"] > row["tv_floor"] + TV_MARGIN:
            problems.append(
                f"samples after {where} are {row['tv']:.2f} in total variation from the model's own density "
                f"(exact draws: {row['tv_floor']:.2f})"
            )
        (failures if row["steps"] == longest[row["start"]] else unmixed).extend(problems)
    if failures:
        verdict = "; ".join(failures + unmixed)
    else:
        verdict = "long-run samples match the model's density"
        if unmixed:
            verdict += " (shorter runs had not mixed yet: " + "; ".join(unmixed) + ")"
    return {
        "runs": runs,
        "sampler": _sampler_name(sampler),
        "data_energy_mean": data_energy,
        "tail_mass": tail_mass,
        "converges": not failures,
        "verdict": verdict,
    }


def _sampler_name(sampler: Any) -> str:
    from ebmkit.config.converter import component_name

    try:
        return component_name(sampler.config)[0]
    except Exception:  # noqa: BLE001 - a hand-made sampler without a registered config
        return type(sampler).__name__


def advice() -> str:
    """What to do about a model whose long-run samples do not match its density."""
    return (
        "The model was learnt by short-run, non-convergent MCMC: its density can be good where its samples "
        "are not (the anatomy of MCMC-based maximum-likelihood learning, Nijkamp, Hill et al. 2020). "
        "For samples that match the density, train a convergent recipe: walls at the data's box "
        "(--set base_measure.kind=box) or a Gaussian base measure with replay-buffer restarts beyond the box "
        "(--set base_measure.kind=gaussian --set buffer.init_margin=0.5), and a sampler with a Metropolis "
        "correction (sampler = \"hmc\"); or sample with replica exchange from the buffer, which also gets the "
        "weights of separated modes right (ebmkit sample RUN --start buffer --sampler replica_exchange --steps 1000)."
    )
