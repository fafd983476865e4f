"""Samplers side by side: ebmkit's built-ins against BlackJAX's own kernels.

    python -m benchmarks.samplers                      # all targets (~5-10 min on 2 cores)
    python -m benchmarks.samplers --targets aniso,mixture --chains 64 --grads 4000

Every sampler runs ``--chains`` chains on each target: an adaptation phase
(``--warmup`` steps for the samplers that adapt), then as many transitions as
spend ``--grads`` gradient evaluations per chain, every draw recorded. Reported
per target and sampler: effective sample size per 1,000 gradient evaluations
and per second (bulk ESS of the worst coordinate, and of its square: how well
variances are estimated), split R̂, acceptance, divergences, and the error of
a known answer:

* ``aniso``: 10-d Gaussian, variances 0.01 ... 1; the worst relative error of a variance.
* ``banana``: x₀ ~ N(0, 10²), x₁ | x₀ ~ N(3 − 0.03 x₀², 1); error of E[x₁] (0) and of var x₀ / 100.
* ``mixture``: 0.3 N(−5, 0.5²) + 0.7 N(5, 0.5²) (plus a N(0, 1) coordinate),
  every chain started in the light mode; the weight of the heavy mode (0.7).
* ``funnel``: Neal's funnel in 10-d, v ~ N(0, 3²), xᵢ | v ~ N(0, eᵛ); error of var v / 9.
* ``8gaussians``: the exact density of the 8gaussians toy (what a trained
  toy energy approximates); the largest error of a mode's weight (1/8 each).
* ``trained``: an energy trained here (``examples/8gaussians.toml``, 2,000
  steps, about a minute); the largest error of a mode's weight against the
  model's own weights, integrated on a 600 × 600 grid.

BlackJAX runs NUTS and HMC after its window adaptation, and MALA at the step
ebmkit's adaptation found, in the same process on the same targets; ESS comes
from the same estimator (``ebmkit.evaluate.chains``) for all. Wall times
exclude compilation; NUTS chains run in lockstep under ``vmap`` (every chain
waits for the longest trajectory), which its per-second figures pay for.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import blackjax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

from ebmkit.evaluate.chains import chain_diagnostics  # noqa: E402
from ebmkit.registry import get_spec  # noqa: E402
from ebmkit.sampling import trace_chain, warmup  # noqa: E402
from ebmkit.types import Adaptive  # noqa: E402

# -- targets: energy [B] of x [B, d], a start, and the known answer's error ------------

ANISO_VAR = np.geomspace(0.01, 1.0, 10).astype(np.float32)
_ANGLES = np.arange(8) * (np.pi / 4)
EIGHT_CENTERS = (2.0 * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1) / 1.414).astype(np.float32)
EIGHT_STD = 0.5 / 1.414


def aniso(x):
    return 0.5 * jnp.sum(x**2 / ANISO_VAR, axis=-1)


def banana(x):
    return 0.5 * (x[:, 0] ** 2 / 100.0 + (x[:, 1] - 3.0 + 0.03 * x[:, 0] ** 2) ** 2)


def mixture(x):
    modes = jnp.log(jnp.array([0.3, 0.7])) - 0.5 * ((x[:, :1] - 5.0 * jnp.array([-1.0, 1.0])) / 0.5) ** 2
    return -logsumexp(modes, axis=-1) + 0.5 * x[:, 1] ** 2


def funnel(x):
    v, rest = x[:, 0], x[:, 1:]
    return v**2 / 18.0 + 0.5 * jnp.sum(rest**2, axis=-1) * jnp.exp(-v) + 0.5 * rest.shape[-1] * v


def eight(x):
    sq = jnp.sum((x[:, None, :] - EIGHT_CENTERS) ** 2, axis=-1)
    return -logsumexp(-0.5 * sq / EIGHT_STD**2, axis=-1)


def _aniso_error(draws):
    return float(np.max(np.abs(draws.reshape(-1, 10).var(0) / ANISO_VAR - 1)))


def _banana_error(draws):
    flat = draws.reshape(-1, 2)
    return float(max(abs(flat[:, 1].mean()), abs(flat[:, 0].var() / 100.0 - 1)))


def _mixture_answer(draws):
    return float(np.mean(draws[..., 0] > 0))


def _funnel_error(draws):
    return float(abs(draws[..., 0].var() / 9.0 - 1))


def _eight_error(draws):
    flat = draws.reshape(-1, 2)
    nearest = np.argmin(((flat[:, None, :] - EIGHT_CENTERS) ** 2).sum(-1), axis=1)
    weights = np.bincount(nearest, minlength=8) / len(flat)
    return float(np.max(np.abs(weights - 0.125)))


def _start_normal(key, n, d, scale=1.0):
    return scale * jax.random.normal(key, (n, d))


def trained_target(steps: int = 2000) -> dict[str, Any]:
    """A toy energy trained here (examples/8gaussians.toml, ``steps`` steps):
    its known answer is its own mode weights, integrated on a fine grid."""
    from flax import nnx

    import ebmkit
    from ebmkit.components import build_dataset, data_context
    from ebmkit.nn.eval import graphdefs
    from ebmkit.training import Trainer

    root = Path(__file__).resolve().parents[1]
    config = ebmkit.load_config(root / "examples" / "8gaussians.toml", overrides=[f"train.steps={steps}"])
    dataset = build_dataset(config.dataset)
    model = ebmkit.EBM(config, data=data_context(dataset))
    Trainer(model, dataset, hooks=False, evaluate=lambda _t: {}).fit()
    _, eval_graphdef = graphdefs(model.energy_net)
    params, rest = model.eval_variables()

    def energy(x):
        return nnx.merge(eval_graphdef, params, rest)(x)

    # The model's own weight of each mode: its density on a 600 x 600 grid over
    # [-6, 6]^2 (the data lie within 3), each cell given to the nearest centre.
    g = np.linspace(-6, 6, 600, dtype=np.float32)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    e = np.concatenate([np.asarray(jax.jit(energy)(pts[i:i + 40000])) for i in range(0, len(pts), 40000)])
    p = np.exp(-(e - e.min()))
    owner = np.argmin(((pts[:, None, :] - EIGHT_CENTERS) ** 2).sum(-1), axis=1)
    truth = np.bincount(owner, weights=p, minlength=8) / p.sum()

    def answer(draws):
        flat = draws.reshape(-1, 2)
        nearest = np.argmin(((flat[:, None, :] - EIGHT_CENTERS) ** 2).sum(-1), axis=1)
        return float(np.max(np.abs(np.bincount(nearest, minlength=8) / len(flat) - truth)))

    return {"energy": energy, "dim": 2, "answer": answer, "what": "max |mode weight − the model's own|",
            "start": lambda k, n: _start_normal(k, n, 2)}


TARGETS: dict[str, dict[str, Any]] = {
    "aniso": {"energy": aniso, "dim": 10, "answer": _aniso_error, "what": "max |var/true − 1|",
              "start": lambda k, n: _start_normal(k, n, 10)},
    "banana": {"energy": banana, "dim": 2, "answer": _banana_error, "what": "max(|E x₁|, |var x₀/100 − 1|)",
               "start": lambda k, n: _start_normal(k, n, 2)},
    "mixture": {"energy": mixture, "dim": 2, "answer": _mixture_answer, "what": "heavy-mode weight (0.7)",
                "start": lambda k, n: jnp.stack([jnp.full((n,), -5.0), jnp.zeros((n,))], axis=1)},
    "funnel": {"energy": funnel, "dim": 10, "answer": _funnel_error, "what": "|var v / 9 − 1|",
               "start": lambda k, n: _start_normal(k, n, 10)},
    "8gaussians": {"energy": eight, "dim": 2, "answer": _eight_error, "what": "max |mode weight − 1/8|",
                   "start": lambda k, n: _start_normal(k, n, 2)},
}


# -- ebmkit's samplers -------------------------------------------------------------------


def ebmkit_samplers(warmup_steps: int) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "ebmkit langevin": ("langevin", {"step_size": 0.005}),
        "ebmkit mala": ("mala", {"step_size": 0.01, "warmup_steps": warmup_steps}),
        "ebmkit hmc (10 leapfrog)": ("hmc", {"step_size": 0.05, "warmup_steps": warmup_steps}),
        "ebmkit hmc (length 1.5)": ("hmc", {"step_size": 0.05, "warmup_steps": warmup_steps,
                                            "trajectory_length": 1.5}),
        # Every replica adapts its own MALA step (the ladder's hot end needs larger ones).
        "ebmkit replica_exchange (mala)": ("replica_exchange", {
            "step_size": 0.01, "num_replicas": 8, "max_temperature": 50.0,
            "base_options": {"warmup_steps": warmup_steps, "adaptation": "shared"}}),
    }


def run_ebmkit(name: str, fields: dict[str, Any], target: dict[str, Any], chains: int, grads: int, seed: int):
    spec = get_spec("sampler", name)
    sampler = spec.create(spec.config(**fields))
    energy = target["energy"]
    key = jax.random.key(seed)
    x0 = target["start"](jax.random.fold_in(key, 1), chains)

    @jax.jit
    def adapt(k, x):
        if not isinstance(sampler, Adaptive):
            return x, None
        return warmup(k, sampler, x, energy)

    x, adaptation = adapt(jax.random.fold_in(key, 2), x0)
    # Gradient evaluations per transition, from one transition.
    probe = jax.jit(lambda k, x, a: trace_chain(k, sampler, x, energy, 1, adaptation=a)[1].num_grad_evals)
    per_step = float(np.mean(np.asarray(probe(jax.random.fold_in(key, 3), x, adaptation))))
    steps = max(int(grads / per_step), 8)
    program = jax.jit(lambda k, x, a: trace_chain(k, sampler, x, energy, steps, adaptation=a))
    compiled = program.lower(jax.random.fold_in(key, 4), x, adaptation).compile()
    t0 = time.perf_counter()
    _, summary, trace = compiled(jax.random.fold_in(key, 4), x, adaptation)
    jax.block_until_ready(trace.position)
    seconds = time.perf_counter() - t0
    extra = {}
    if adaptation is not None and hasattr(adaptation, "log_step"):
        extra["step"] = float(np.median(np.exp(np.asarray(adaptation.log_step))))
    elif adaptation is not None and hasattr(adaptation, "step"):
        extra["step"] = float(np.median(np.exp(np.asarray(adaptation.step.log_step))))
    divergences = None if summary.divergences is None else float(np.sum(np.asarray(summary.divergences)))
    return (np.asarray(trace.position), np.asarray(trace.acceptance_rate),
            float(np.sum(np.asarray(summary.num_grad_evals))), seconds, divergences, extra)


# -- BlackJAX's own kernels ---------------------------------------------------------------


def run_blackjax(kind: str, target: dict[str, Any], chains: int, grads: int, warmup_steps: int, seed: int,
                 mala_step: float | None = None):
    energy = target["energy"]

    def logdensity(x):
        return -energy(x[None])[0]

    key = jax.random.key(seed)
    x0 = target["start"](jax.random.fold_in(key, 1), chains)
    keys = jax.random.split(jax.random.fold_in(key, 2), chains)
    if kind == "mala":
        step = jnp.full((chains,), mala_step)
        states = jax.vmap(blackjax.mala.init, in_axes=(0, None))(x0, logdensity)
        params_axes = None

        def make_step(p):
            return blackjax.mala(logdensity, p)

        params = step
        per_step = 1.0
    else:
        algorithm = blackjax.nuts if kind == "nuts" else blackjax.hmc
        extra = {} if kind == "nuts" else {"num_integration_steps": 10}

        def adapt_one(k, x):
            wa = blackjax.window_adaptation(algorithm, logdensity, **extra)
            (state, parameters), _ = wa.run(k, x, num_steps=warmup_steps)
            return state, parameters

        states, params = jax.jit(jax.vmap(adapt_one))(keys, x0)
        params_axes = 0

        def make_step(p):
            return algorithm(logdensity, **{**extra, **p})

        per_step = None

    def one_chain(k, state, p, steps):
        alg = make_step(p)

        def body(s, kk):
            s, info = alg.step(kk, s)
            n = getattr(info, "num_integration_steps", 10 if kind == "hmc" else 1)
            return s, (s.position, info.acceptance_rate, jnp.asarray(n, jnp.float32),
                       jnp.asarray(getattr(info, "is_divergent", False), jnp.float32))

        _, out = jax.lax.scan(body, state, jax.random.split(k, steps))
        return out

    if per_step is None:  # probe NUTS/HMC's cost per transition
        probe = jax.jit(jax.vmap(lambda k, s, p: one_chain(k, s, p, 20), in_axes=(0, 0, params_axes)))
        per_step = float(np.mean(np.asarray(probe(keys, states, params)[2])))
    steps = max(int(grads / per_step), 8)
    program = jax.jit(jax.vmap(lambda k, s, p: one_chain(k, s, p, steps), in_axes=(0, 0, 0 if params_axes == 0 else 0)))
    run_keys = jax.random.split(jax.random.fold_in(key, 3), chains)
    compiled = program.lower(run_keys, states, params).compile()
    t0 = time.perf_counter()
    pos, acc, n, div = compiled(run_keys, states, params)
    jax.block_until_ready(pos)
    seconds = time.perf_counter() - t0
    extra_info = {}
    if isinstance(params, dict) and "step_size" in params:
        extra_info["step"] = float(np.median(np.asarray(params["step_size"])))
    return (np.swapaxes(np.asarray(pos), 0, 1), np.asarray(acc), float(np.sum(np.asarray(n))), seconds,
            float(np.sum(np.asarray(div))) if kind != "mala" else None, extra_info)


# -- the run -------------------------------------------------------------------------------


def evaluate(draws, acceptance, grads, seconds, divergences, extra, target):
    burn = 0  # the adaptation phase already ran; every recorded draw counts
    d = chain_diagnostics(draws[burn:], acceptance_rate=acceptance, num_grad_evals=grads, seconds=seconds)
    sq = chain_diagnostics(np.square(draws[burn:] - draws[burn:].mean(axis=(0, 1))), num_grad_evals=grads)
    return {
        "ess_per_1000_grads": d["ess_per_1000_grads"],
        "ess_sq_per_1000_grads": 1000.0 * sq["ess_bulk"] / grads,
        "ess_per_second": d["ess_per_second"],
        "rhat": d["rhat"],
        "acceptance": d["acceptance_rate"],
        "divergences": divergences,
        "answer": target["answer"](draws),
        "seconds": seconds,
        "grads_per_chain": grads / draws.shape[1],
        **extra,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join([*TARGETS, "trained"]))
    parser.add_argument("--chains", type=int, default=128)
    parser.add_argument("--grads", type=int, default=10000, help="gradient evaluations per chain after warm-up")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    tables = []
    for tname in [t for t in args.targets.split(",") if t]:
        if tname == "trained":
            _common.log("trained: training examples/8gaussians.toml for 2,000 steps")
            TARGETS["trained"] = trained_target()
        target = TARGETS[tname]
        rows: dict[str, dict[str, Any]] = {}
        for label, (name, fields) in ebmkit_samplers(args.warmup).items():
            _common.log(f"{tname}: {label}")
            rows[label] = evaluate(*run_ebmkit(name, fields, target, args.chains, args.grads, args.seed), target=target)
        mala_step = rows["ebmkit mala"].get("step", 0.01)
        for kind in ("nuts", "hmc", "mala"):
            label = f"blackjax {kind}" + (" (window adaptation)" if kind != "mala" else " (ebmkit's step)")
            _common.log(f"{tname}: {label}")
            rows[label] = evaluate(
                *run_blackjax(kind, target, args.chains, args.grads, args.warmup, args.seed, mala_step), target=target
            )
        results[tname] = rows
        header = ["sampler", "ESS/1k grads", "ESS(x²)/1k grads", "ESS/s", "R̂", "accept", "divergent",
                  target["what"], "step"]
        table_rows = [
            [label, r["ess_per_1000_grads"], r["ess_sq_per_1000_grads"], r["ess_per_second"], r["rhat"],
             r["acceptance"], r["divergences"] if r["divergences"] is not None else "-", r["answer"],
             r.get("step", float("nan"))]
            for label, r in rows.items()
        ]
        tables.append(f"### {tname} ({args.chains} chains, {args.grads} gradients per chain)\n\n"
                      + _common.markdown_table(header, table_rows))
    return _common.emit("samplers", {"args": vars(args), "results": results}, tables, json_path=args.json)


if __name__ == "__main__":
    main()
