"""Samplers of binary data side by side: gibbs, gwg and dmala (DMALA / DULA).

    python -m benchmarks.discrete_samplers                    # both targets (about 30 min on 2 shared cores)
    python -m benchmarks.discrete_samplers --targets rbm --chains 32 --evals 1000

Every sampler runs ``--chains`` chains from uniform random bits on each
target: ``--burn`` energy evaluations per chain of burn-in (not recorded),
then ``--evals`` evaluations per chain, recorded (at most ``--draws`` draws
per chain, evenly thinned; by default every draw, since an ESS cannot exceed
the number of draws recorded). One gwg or dmala step costs one
energy-and-gradient evaluation; one gibbs sweep costs ``d`` energy
evaluations (``d`` bits), so its chains run ``evals / d`` sweeps. Reported
per target and sampler: the effective sample size (BlackJAX's bulk ESS, via
``ebmkit.evaluate.chains``, summed over chains) of the magnetisation (the
mean of the bits) and of the worst per-site mean, each per 1,000
evaluations and per second (the median of ``--repeats`` timed runs of the
compiled chain, compilation excluded), the mean acceptance, and the error of
the per-site means against their exact values.

Targets:

* ``rbm``: a random RBM with 20 visible and 10 hidden units (weights
  N(0, 0.7²), biases N(0, 0.5²), generator seed 1: visible marginals from 0.11
  to 0.92), sampled on its visible layer through its free
  energy ``E(v) = −bᵀv − Σ_j softplus(c_j + W_jᵀv)``. Its visible marginals are
  exact: ``p(h) ∝ exp(cᵀh) Π_i (1 + exp(b_i + W_i h))`` over the 2¹⁰ hidden
  states, and ``P(v_i = 1) = Σ_h p(h) σ(b_i + W_i h)``.
* ``ising``: a 10 × 10 periodic lattice with spins ``s = 2x − 1``,
  ``E = −J Σ_⟨ij⟩ s_i s_j`` (``J = --coupling``, 0.3 by default, below the
  critical 0.4407). With no field every site's mean is exactly 1/2 by symmetry.

Thread pinning as every benchmark here (``benchmarks._common.pin_threads``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ebmkit.errors import EbmkitError  # noqa: E402
from ebmkit.evaluate.chains import chain_diagnostics  # noqa: E402
from ebmkit.registry import get_spec  # noqa: E402
from ebmkit.sampling import trace_chain, warmup  # noqa: E402

# -- targets ------------------------------------------------------------------------------


def rbm_target(visible: int = 20, hidden: int = 10, seed: int = 1, weight_std: float = 0.7) -> dict[str, Any]:
    """A random RBM on its visible layer, with exact visible marginals."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, weight_std, (visible, hidden))
    b = rng.normal(0.0, 0.5, visible)
    c = rng.normal(0.0, 0.5, hidden)
    hs = np.array(list(itertools.product((0.0, 1.0), repeat=hidden)))  # [2^H, H]
    act = b + hs @ w.T  # [2^H, V]
    log_ph = hs @ c + np.sum(np.logaddexp(0.0, act), axis=1)
    ph = np.exp(log_ph - log_ph.max())
    ph /= ph.sum()
    exact = ph @ (1.0 / (1.0 + np.exp(-act)))
    wj, bj, cj = (jnp.asarray(a, jnp.float32) for a in (w, b, c))

    def energy(v):
        return -v @ bj - jnp.sum(jax.nn.softplus(cj + v @ wj), axis=-1)

    return {"energy": energy, "dim": visible, "exact_means": exact,
            "what": f"RBM {visible} visible x {hidden} hidden"}


def ising_target(side: int = 10, coupling: float = 0.3) -> dict[str, Any]:
    """A periodic ``side x side`` Ising lattice with no field (site means exactly 1/2)."""

    def energy(x):
        s = 2.0 * x.reshape(x.shape[0], side, side) - 1.0
        bonds = s * jnp.roll(s, 1, axis=1) + s * jnp.roll(s, 1, axis=2)
        return -coupling * jnp.sum(bonds, axis=(1, 2))

    return {"energy": energy, "dim": side * side, "exact_means": np.full(side * side, 0.5),
            "what": f"Ising {side}x{side}, J = {coupling}"}


# -- samplers ------------------------------------------------------------------------------


def samplers(warmup_steps: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """``{id: (label, registry name, config fields)}``."""
    return {
        "gibbs": ("gibbs (random scan)", "gibbs", {}),
        "gwg": ("gwg", "gwg", {}),
        "dmala": ("dmala α=0.2", "dmala", {"step_size": 0.2}),
        "dmala-adapted": ("dmala (adapted, target 0.6)", "dmala", {"step_size": 0.2, "warmup_steps": warmup_steps}),
        "dula": ("dula α=0.1", "dmala", {"step_size": 0.1, "adjusted": False}),
    }


def run(name: str, fields: dict[str, Any], target: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    spec = get_spec("sampler", name)
    sampler = spec.create(spec.config(**fields))
    energy, dim = target["energy"], target["dim"]
    # Energy evaluations per kernel call: a gibbs sweep flips each of the d sites once.
    evals_per_step = dim if name == "gibbs" else 1
    steps = max(args.evals // evals_per_step, 8)
    burn = max(args.burn // evals_per_step, 1)
    thin = max(1, steps // args.draws)
    steps -= steps % thin
    key = jax.random.key(args.seed)
    x0 = (jax.random.uniform(jax.random.fold_in(key, 1), (args.chains, dim)) < 0.5).astype(jnp.float32)

    @jax.jit
    def prepare(k, x):
        k1, k2 = jax.random.split(k)
        x, adaptation = warmup(k1, sampler, x, energy)
        x, _, _ = trace_chain(k2, sampler, x, energy, burn, adaptation=adaptation, thin=burn)
        return x, adaptation

    x, adaptation = prepare(jax.random.fold_in(key, 2), x0)
    program = jax.jit(lambda k, x_, a: trace_chain(k, sampler, x_, energy, steps, adaptation=a, thin=thin))
    compiled = program.lower(jax.random.fold_in(key, 3), x, adaptation).compile()
    seconds, out = [], None
    for r in range(args.repeats):
        t0 = time.perf_counter()
        result = compiled(jax.random.fold_in(key, 3 + r), x, adaptation)
        jax.block_until_ready(result[2].position)
        seconds.append(time.perf_counter() - t0)
        out = out or result
    _, summary, trace = out
    draws = np.asarray(trace.position, np.float32)  # [T, B, d]
    total_evals = float(steps * evals_per_step * args.chains)
    wall = statistics.median(seconds)
    magnet = chain_diagnostics(draws.mean(axis=-1, keepdims=True))
    sites = chain_diagnostics(draws, max_coordinates=dim)
    error = float(np.max(np.abs(draws.reshape(-1, dim).mean(axis=0) - target["exact_means"])))
    row = {
        "ess_magnetisation": magnet["ess_bulk"],
        "ess_worst_site": sites["ess_bulk"],
        "ess_magnetisation_per_1000_evals": 1000.0 * magnet["ess_bulk"] / total_evals,
        "ess_worst_site_per_1000_evals": 1000.0 * sites["ess_bulk"] / total_evals,
        "ess_magnetisation_per_second": magnet["ess_bulk"] / wall,
        "ess_worst_site_per_second": sites["ess_bulk"] / wall,
        "rhat": max(magnet["rhat"], sites["rhat"]),
        "acceptance": float(np.mean(np.asarray(summary.acceptance_rate))),
        "max_marginal_error": error,
        "seconds_median": wall,
        "kernel_calls": steps,
        "evals_per_chain": steps * evals_per_step,
        "thin": thin,
    }
    if adaptation is not None and hasattr(adaptation, "log_step"):
        row["step"] = float(np.median(np.exp(np.asarray(adaptation.log_step))))
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="rbm,ising")
    parser.add_argument("--samplers", default="gibbs,gwg,dmala,dmala-adapted,dula")
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--evals", type=int, default=4000, help="recorded energy evaluations per chain")
    parser.add_argument("--burn", type=int, default=2000, help="burn-in energy evaluations per chain")
    parser.add_argument("--draws", type=int, default=4000, help="at most this many recorded draws per chain")
    parser.add_argument("--warmup", type=int, default=500, help="adaptation steps of the adapted dmala")
    parser.add_argument("--coupling", type=float, default=0.3)
    parser.add_argument("--side", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    unknown = sorted(set(filter(None, args.samplers.split(","))) - set(samplers(0)))
    if unknown:
        parser.error(f"unknown --samplers {unknown}; known: {', '.join(samplers(0))}")
    builders = {"rbm": rbm_target,
                "ising": lambda: ising_target(args.side, args.coupling)}
    notes = []
    results: dict[str, Any] = {}
    tables = []
    for tname in [t for t in args.targets.split(",") if t]:
        target = builders[tname]()
        rows: dict[str, dict[str, Any]] = {}
        chosen = samplers(args.warmup)
        for sid in [s for s in args.samplers.split(",") if s]:
            label, name, fields = chosen[sid]
            try:
                get_spec("sampler", name)
            except EbmkitError as exc:
                note = f"{label}: skipped ({name!r} is not registered: {type(exc).__name__})"
                if note not in notes:
                    notes.append(note)
                    print(f"note: {note}")
                continue
            _common.log(f"{tname}: {label}")
            rows[label] = run(name, fields, target, args)
        results[tname] = rows
        header = ["sampler", "draws/chain", "ESS(M)/1k evals", "ESS(site)/1k evals", "ESS(M)/s", "ESS(site)/s",
                  "R̂", "accept", "max |mean − exact|", "step"]
        table_rows = [
            [label, r["kernel_calls"] // r["thin"], r["ess_magnetisation_per_1000_evals"], r["ess_worst_site_per_1000_evals"],
             r["ess_magnetisation_per_second"], r["ess_worst_site_per_second"], r["rhat"], r["acceptance"],
             r["max_marginal_error"], r.get("step", float("nan"))]
            for label, r in rows.items()
        ]
        tables.append(f"### {target['what']} ({args.chains} chains, {args.evals} evaluations per chain)\n\n"
                      + _common.markdown_table(header, table_rows))
    return _common.emit("discrete_samplers", {"args": vars(args), "notes": notes, "results": results}, tables,
                        json_path=args.json)


if __name__ == "__main__":
    main()
