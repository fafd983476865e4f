"""Sampling throughput: ``model.generate`` against hand-written ``lax.scan`` loops.

    python -m benchmarks.bench_sample                 # full run (~1-2 min)
    python -m benchmarks.bench_sample --quick         # fewer repeats, no 784-d HMC

For each energy (MLP 2-128-128-1 and 784-128-256-128-1, SiLU) and sampler
(Langevin, HMC) it times ``model.generate(n_chains, n_steps=...)`` through the
public API and a plain JAX reference written the simplest way a competent
engineer would (parameters as arguments, ``lax.scan`` over split keys,
``jax.random.normal`` with JAX's default key), alternating the two in one
process. Reported: steps/s (median and best), the per-round speed ratio
reference-time / ebmkit-time (> 1: ebmkit faster), the compile time of the
first ``generate`` call, and how many compilations a second call (and a call
with a new step size) triggered.
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
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ebmkit  # noqa: E402

#: The two energies of the issue: (name, input dim, hidden widths).
MODELS = {"mlp2d": (2, (128, 128)), "mlp784": (784, (128, 256, 128))}


# -- the hand-written references --------------------------------------------------------


def init_mlp(rng_key: jax.Array, dims: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """LeCun-normal kernels and zero biases, as ``nnx.Linear`` initialises them."""
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        rng_key, sub = jax.random.split(rng_key)
        params.append(
            {"w": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in), "b": jnp.zeros(fan_out)}
        )
    return params


def mlp_energy(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    for layer in params[:-1]:
        h = jax.nn.silu(h @ layer["w"] + layer["b"])
    return (h @ params[-1]["w"] + params[-1]["b"])[:, 0]


def reference_langevin(n_chains: int, dim: int, n_steps: int, step_size: float, noise_scale: float):
    """``generate(params, key) -> x``: uniform starts in [-1, 1], ULA in ``lax.scan``."""

    @jax.jit
    def generate(params, rng_key):
        init_key, chain_key = jax.random.split(rng_key)
        x = jax.random.uniform(init_key, (n_chains, dim), minval=-1.0, maxval=1.0)
        grad_energy = jax.grad(lambda y: mlp_energy(params, y).sum())

        def step(x, key):
            noise = jax.random.normal(key, x.shape)
            return x - step_size * grad_energy(x) + noise_scale * noise, None

        x, _ = jax.lax.scan(step, x, jax.random.split(chain_key, n_steps))
        return x

    return generate


def reference_hmc(n_chains: int, dim: int, n_steps: int, step_size: float, n_leapfrog: int):
    """``generate(params, key) -> x``: HMC, unit mass, leapfrog in ``fori_loop``."""

    @jax.jit
    def generate(params, rng_key):
        init_key, chain_key = jax.random.split(rng_key)
        x = jax.random.uniform(init_key, (n_chains, dim), minval=-1.0, maxval=1.0)

        def energy_and_grad(y):
            def total(z):
                e = mlp_energy(params, z)
                return e.sum(), e

            g, e = jax.grad(total, has_aux=True)(y)
            return e, g

        def leapfrog(_, carry):
            x, p, _, g = carry
            p = p - 0.5 * step_size * g
            x = x + step_size * p
            e, g = energy_and_grad(x)
            return x, p - 0.5 * step_size * g, e, g

        def step(carry, key):
            x, e, g = carry
            key_p, key_u = jax.random.split(key)
            p = jax.random.normal(key_p, x.shape)
            x1, p1, e1, g1 = jax.lax.fori_loop(0, n_leapfrog, leapfrog, (x, p, e, g))
            log_ratio = (e + 0.5 * jnp.sum(p**2, 1)) - (e1 + 0.5 * jnp.sum(p1**2, 1))
            accept = jnp.log(jax.random.uniform(key_u, e.shape)) < log_ratio
            return (
                jnp.where(accept[:, None], x1, x),
                jnp.where(accept, e1, e),
                jnp.where(accept[:, None], g1, g),
            ), None

        (x, _, _), _ = jax.lax.scan(step, (x, *energy_and_grad(x)), jax.random.split(chain_key, n_steps))
        return x

    return generate


# -- ebmkit side ------------------------------------------------------------------------


def build_model(dim: int, hidden: tuple[int, ...], sampler: dict[str, Any]) -> ebmkit.EBM:
    return ebmkit.assemble(
        energy={"name": "mlp", "hidden_dims": list(hidden), "activation": "silu"},
        sampler=sampler,
        event_shape=(dim,),
    )


class CompileCounter:
    """Counts XLA backend compilations (jax.monitoring events) while active."""

    count = 0
    seconds = 0.0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return

        def listener(name: str, duration: float, **_: Any) -> None:
            if name == "/jax/core/compile/backend_compile_duration":
                cls.count += 1
                cls.seconds += duration

        jax.monitoring.register_event_duration_secs_listener(listener)
        cls._installed = True


def first_and_second_call(call: Callable[[], Any], again: Callable[[], Any]) -> dict[str, Any]:
    """Wall time of the first call (trace + compile + run) and compilations of later calls."""
    CompileCounter.install()
    c0 = CompileCounter.count
    t0 = time.perf_counter()
    _common.block(call())
    first = time.perf_counter() - t0
    compiles_first = CompileCounter.count - c0
    c1 = CompileCounter.count
    t1 = time.perf_counter()
    _common.block(call())
    second = time.perf_counter() - t1
    compiles_second = CompileCounter.count - c1
    c2 = CompileCounter.count
    _common.block(again())
    compiles_new_tunable = CompileCounter.count - c2
    return {
        "first_call_s": first,
        "second_call_s": second,
        "compile_s_estimate": first - second,
        "compiles_first_call": compiles_first,
        "compiles_second_call": compiles_second,
        "compiles_new_step_size": compiles_new_tunable,
    }


def bench_case(
    model_name: str,
    sampler_name: str,
    *,
    n_chains: int,
    n_steps: int,
    repeats: int,
    prngs: tuple[str, ...],
    ablation: bool = True,
) -> dict[str, Any]:
    dim, hidden = MODELS[model_name]
    dims = (dim, *hidden, 1)
    params = init_mlp(jax.random.key(42), dims)
    key = jax.random.key(7)
    cases: dict[str, Callable[[], Any]] = {}
    if sampler_name == "langevin":
        step_size = 0.01
        noise_scale = float(np.sqrt(2 * step_size))
        ref = reference_langevin(n_chains, dim, n_steps, step_size, noise_scale)
        samplers = {
            p: {"name": "langevin", "step_size": step_size, **({} if p == "default" else {"prng": p})}
            for p in prngs
        }
        grad_evals = n_steps
    else:
        step_size, n_leapfrog = 0.05, 10
        ref = reference_hmc(n_chains, dim, n_steps, step_size, n_leapfrog)
        samplers = {"default": {"name": "hmc", "step_size": step_size, "num_integration_steps": n_leapfrog}}
        grad_evals = n_steps * n_leapfrog

    cases["reference"] = lambda: ref(params, key).block_until_ready()
    if sampler_name == "langevin" and ablation:
        # Ablation, not a target: the same reference fed Philox-4x32 keys.
        phx_key = jax.random.key(7, impl="philox4x32")
        cases["reference (philox4x32 keys)"] = lambda: ref(params, phx_key).block_until_ready()
    compile_info: dict[str, Any] = {}
    for label, sampler in samplers.items():
        model = build_model(dim, hidden, sampler)
        # The first generate of a fresh program: trace + compile + run.
        compile_info[label] = first_and_second_call(
            lambda m=model: m.generate(n_chains, n_steps=n_steps),
            lambda m=model: m.generate(n_chains, n_steps=n_steps, step_size=step_size * 0.5),
        )
        cases[f"ebmkit[{label}]"] = lambda m=model: m.generate(n_chains, n_steps=n_steps).block_until_ready()
    if sampler_name == "langevin" and ablation:
        # Python-side cost of one generate call: same call with no MCMC steps.
        probe = build_model(dim, hidden, next(iter(samplers.values())))
        cases["ebmkit generate(n_steps=0)"] = lambda: probe.generate(n_chains, n_steps=0).block_until_ready()
    times = _common.alternate(cases, repeats)
    out: dict[str, Any] = {
        "model": model_name,
        "dims": dims,
        "sampler": sampler_name,
        "n_chains": n_chains,
        "n_steps": n_steps,
        "grad_evals_per_call": grad_evals,
        "cases": _common.summarize(times, n_steps, reference="reference"),
        "compile": compile_info,
        "raw_seconds": times,
    }
    if "ebmkit generate(n_steps=0)" in cases:
        out["generate_call_overhead_us"] = 1e6 * min(times["wall"]["ebmkit generate(n_steps=0)"])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp2d,mlp784", help="comma list of: " + ",".join(MODELS))
    parser.add_argument("--samplers", default="langevin,hmc")
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--hmc-steps", type=int, default=None, help="HMC transitions (default: --steps)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--prngs", default="default,key",
        help="langevin 'prng' settings to time ('default': the sampler's own; "
        "'key': JAX's default Threefry stream, as the reference draws it)",
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats; HMC only on the 2-d MLP")
    parser.add_argument(
        "--no-ablation", action="store_true",
        help="skip the diagnostic rows (reference with Philox keys, generate with n_steps=0)",
    )
    parser.add_argument("--json", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    results = []
    for model_name in args.models.split(","):
        for sampler_name in args.samplers.split(","):
            if args.quick and sampler_name == "hmc" and model_name != "mlp2d":
                continue
            _common.log(f"bench_sample: {model_name} / {sampler_name}")
            prngs = tuple(p for p in args.prngs.split(",") if p)
            n_steps = args.steps if sampler_name == "langevin" else (args.hmc_steps or args.steps)
            results.append(
                bench_case(
                    model_name, sampler_name, n_chains=args.chains, n_steps=n_steps,
                    repeats=repeats, prngs=prngs, ablation=not args.no_ablation,
                )
            )

    rows = []
    for r in results:
        for name, c in r["cases"].items():
            speed = c.get("speed_vs_reference")
            rows.append([
                r["model"], r["sampler"], name, c["wall"]["rate_median"], c["wall"]["rate_best"],
                speed["wall"]["median"] if speed else "",
                speed["cpu"]["median"] if speed else "",
                speed["wall"]["of_best"] if speed else "",
            ])
    table = _common.markdown_table(
        ["model", "sampler", "who", "steps/s median", "steps/s best",
         "× ref (wall, median of rounds)", "× ref (CPU time)", "× ref (best vs best)"],
        rows,
    )
    crow = []
    for r in results:
        for label, c in r["compile"].items():
            crow.append([
                r["model"], r["sampler"], label, c["first_call_s"], c["second_call_s"],
                c["compiles_first_call"], c["compiles_second_call"], c["compiles_new_step_size"],
            ])
    ctable = _common.markdown_table(
        ["model", "sampler", "ebmkit prng", "first call s", "second call s", "compiles 1st", "compiles 2nd", "compiles new step_size"],
        crow,
    )
    return _common.emit(
        "bench_sample", {"settings": vars(args), "results": results}, [table, ctable], json_path=args.json
    )


if __name__ == "__main__":
    main()
