"""Roofline: how close a Langevin step gets to this machine's fp32 matmul peak.

    python -m benchmarks.bench_roofline            # ~1-2 min
    python -m benchmarks.bench_roofline --quick

Peak: a large jitted ``jnp.dot`` (n x n times n x n, fp32, same thread
settings), 2 n^3 FLOPs a call; the best size of ``--peak-sizes``.

FLOPs of one Langevin step of an MLP at batch B, counted as matrix-multiply
work only (2 FLOPs per multiply-add; biases, activations, noise and the update
are not counted): the forward pass costs 2 B sum(in * out) over the layers and
the input-gradient backward pass the same again (each layer's dX = dY W^T; no
weight gradients, the parameters are fixed), so a step is 4 B sum(in * out).
For 784-128-256-128-1 at B = 256 that is 170.0 MFLOP.

Achieved FLOP/s = steps/s x FLOPs per step; the peak call is timed in the same
round-robin as the chains, so each round gives its own achieved/peak ratio
(reported: median of rounds, and best step time / best peak time).

Also measured: the share of a 784-d step spent drawing the Gaussian noise
(the reference with and without it), the noise draw alone by bit generator
(bits vs the normal transform), and, for the 2-d MLP, the per-step overhead:
step time minus its FLOPs at peak, and the step time at batch 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_sample import build_model, init_mlp, mlp_energy, reference_langevin  # noqa: E402


def langevin_flops(dims: tuple[int, ...], batch: int) -> float:
    """Matmul FLOPs of forward + input-gradient backward (see the module docstring)."""
    return 4.0 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def reference_no_noise(n_chains: int, dim: int, n_steps: int, step_size: float):
    """The reference chain with the noise term removed (what the matmuls cost)."""

    @jax.jit
    def generate(params, rng_key):
        x = jax.random.uniform(rng_key, (n_chains, dim), minval=-1.0, maxval=1.0)
        grad_energy = jax.grad(lambda y: mlp_energy(params, y).sum())

        def step(x, _):
            return x - step_size * grad_energy(x), None

        x, _ = jax.lax.scan(step, x, None, length=n_steps)
        return x

    return generate


def peak_case(n: int) -> tuple[Callable[[], Any], float]:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return (lambda: dot(a, b).block_until_ready()), 2.0 * n**3


def noise_cases(shape: tuple[int, ...], n_draws: int) -> dict[str, Callable[[], Any]]:
    """``n_draws`` draws of ``shape`` in a ``lax.scan``, per bit generator and stage."""
    out: dict[str, Callable[[], Any]] = {}
    for impl in ("threefry2x32", "philox4x32"):
        for stage in ("bits", "normal"):
            def body(acc, k, stage=stage):
                if stage == "bits":
                    return acc + jax.random.bits(k, shape, jnp.uint32).astype(jnp.float32), None
                return acc + jax.random.normal(k, shape), None

            fn = jax.jit(lambda key, body=body: jax.lax.scan(body, jnp.zeros(shape), jax.random.split(key, n_draws))[0])
            key = jax.random.key(0, impl=impl)
            out[f"{impl} {stage}"] = lambda fn=fn, key=key: fn(key).block_until_ready()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=60, help="Langevin steps per timed call")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--peak-sizes", default="1024,2048")
    parser.add_argument("--hidden", default="128,256,128", help="hidden widths of the 784-d MLP")
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--small-steps", type=int, default=200, help="chain length of the 2-d MLP overhead runs")
    parser.add_argument("--quick", action="store_true", help="5 repeats, peak at n=1024 only")
    parser.add_argument("--no-ablation", action="store_true",
                        help="skip the diagnostic rows (Philox reference, prng='key', noise draws alone)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.peak_sizes = 5, "1024"
    k, b = args.steps, args.batch
    hidden = tuple(int(h) for h in args.hidden.split(","))
    dims = (args.dim, *hidden, 1)
    flops = langevin_flops(dims, b)
    step_size = 0.01
    noise_scale = float(np.sqrt(2 * step_size))
    params = init_mlp(jax.random.key(42), dims)
    key = jax.random.key(7)

    # -- peak -------------------------------------------------------------------------
    _common.log("bench_roofline: peak matmul")
    peaks = {int(n): peak_case(int(n)) for n in args.peak_sizes.split(",")}
    t_peak = _common.alternate({f"dot {n}": fn for n, (fn, _) in peaks.items()}, args.repeats)
    peak_rates = {n: w / min(t_peak["wall"][f"dot {n}"]) for n, (_, w) in peaks.items()}
    peak_n = max(peak_rates, key=peak_rates.get)
    peak_fn, peak_work = peaks[peak_n]

    # -- the 784-d step ---------------------------------------------------------------
    _common.log("bench_roofline: Langevin step of the large MLP")
    ref = reference_langevin(b, args.dim, k, step_size, noise_scale)
    ref_quiet = reference_no_noise(b, args.dim, k, step_size)
    philox_key = jax.random.key(7, impl="philox4x32")
    m_default = build_model(args.dim, hidden, {"name": "langevin", "step_size": step_size})
    m_key = build_model(args.dim, hidden, {"name": "langevin", "step_size": step_size, "prng": "key"})
    cases = {
        "peak dot": peak_fn,
        "reference (threefry noise)": lambda: ref(params, key).block_until_ready(),
        "reference (philox4x32 noise)": lambda: ref(params, philox_key).block_until_ready(),
        "reference without noise": lambda: ref_quiet(params, key).block_until_ready(),
        "ebmkit generate (prng=auto)": lambda: m_default.generate(b, n_steps=k).block_until_ready(),
        "ebmkit generate (prng=key)": lambda: m_key.generate(b, n_steps=k).block_until_ready(),
    }
    if args.no_ablation:
        del cases["reference (philox4x32 noise)"], cases["ebmkit generate (prng=key)"]
    times = _common.alternate(cases, args.repeats)
    peak_times = times["wall"]["peak dot"]
    rows = []
    large: dict[str, Any] = {}
    for name, ts in times["wall"].items():
        if name == "peak dot":
            continue
        per_round = [(flops * k / t) / (peak_work / p) for t, p in zip(ts, peak_times, strict=True)]
        entry = {
            "steps_per_s_median": k / statistics.median(ts),
            "steps_per_s_best": k / min(ts),
            "gflops_best": flops * k / min(ts) / 1e9,
            "fraction_of_peak_median_of_rounds": statistics.median(per_round),
            "fraction_of_peak_best": (flops * k / min(ts)) / (peak_work / min(peak_times)),
            "fraction_of_peak_cpu_time_median": statistics.median(
                (flops * k / t) / (peak_work / p)
                for t, p in zip(times["cpu"][name], times["cpu"]["peak dot"], strict=True)
            ),
        }
        large[name] = entry
        rows.append([name, entry["steps_per_s_median"], entry["gflops_best"],
                     entry["fraction_of_peak_median_of_rounds"], entry["fraction_of_peak_best"],
                     entry["fraction_of_peak_cpu_time_median"]])
    noise_share = {
        f"{label}": statistics.median(
            1 - q / t for q, t in zip(times["wall"]["reference without noise"], times["wall"][name], strict=True)
        )
        for label, name in (("threefry2x32", "reference (threefry noise)"), ("philox4x32", "reference (philox4x32 noise)"))
        if name in cases
    }

    # -- the noise draw alone ---------------------------------------------------------
    noise: dict[str, float] = {}
    if not args.no_ablation:
        _common.log("bench_roofline: noise draws")
        draws = 20
        t_noise = _common.alternate(noise_cases((b, args.dim), draws), args.repeats)
        noise = {name: 1e6 * min(ts) / draws for name, ts in t_noise["wall"].items()}

    # -- the 2-d MLP: per-step overhead -------------------------------------------------
    _common.log("bench_roofline: 2-d MLP overhead")
    small_dims = (2, 128, 128, 1)
    small_params = init_mlp(jax.random.key(3), small_dims)
    k_small = args.small_steps
    small = {}
    small_cases = {}
    for batch in (1, b):
        r = reference_langevin(batch, 2, k_small, step_size, noise_scale)
        small_cases[f"reference batch {batch}"] = lambda r=r: r(small_params, key).block_until_ready()
        m = build_model(2, (128, 128), {"name": "langevin", "step_size": step_size})
        small_cases[f"ebmkit generate batch {batch}"] = lambda m=m, batch=batch: m.generate(batch, n_steps=k_small).block_until_ready()
    small_cases["peak dot"] = peak_fn
    t_small = _common.alternate(small_cases, args.repeats)
    peak_small = peak_work / min(t_small["wall"]["peak dot"])
    for name, ts in t_small["wall"].items():
        if name == "peak dot":
            continue
        batch = int(name.rsplit(" ", 1)[1])
        step_us = 1e6 * min(ts) / k_small
        at_peak_us = 1e6 * langevin_flops(small_dims, batch) / peak_small
        small[name] = {"step_us_best": step_us, "step_us_median": 1e6 * statistics.median(ts) / k_small,
                       "matmul_us_at_peak": at_peak_us, "overhead_us": step_us - at_peak_us}
    srows = [[n, v["step_us_best"], v["step_us_median"], v["matmul_us_at_peak"], v["overhead_us"]] for n, v in small.items()]

    best_ebm = max((n for n in large if n.startswith("ebmkit")),
                   key=lambda n: large[n]["fraction_of_peak_median_of_rounds"])
    tables = [
        _common.markdown_table(["peak: n", "GFLOP/s (best)"], [[n, r / 1e9] for n, r in peak_rates.items()]),
        _common.markdown_table(
            ["784-d Langevin step", "steps/s median", "GFLOP/s best", "of peak (median of rounds)", "of peak (best/best)", "of peak (CPU time)"],
            rows,
        ),
        _common.markdown_table(
            ["noise draw " + "x".join(map(str, (b, args.dim))), "µs per draw (best)"], [[n, v] for n, v in noise.items()]
        ),
        _common.markdown_table(
            ["noise share of a 784-d reference step", "fraction (median of rounds)"], [[n, v] for n, v in noise_share.items()]
        ),
        _common.markdown_table([f"2-d MLP, {k_small} steps", "µs/step best", "µs/step median", "matmul µs at peak", "overhead µs"], srows),
    ]
    return _common.emit(
        "bench_roofline",
        {
            "settings": {**vars(args), "dims": dims, "flops_per_step": flops,
                         "flop_count": "matmul only: forward 2*B*sum(in*out) + input-gradient backward the same"},
            "peak_gflops": {n: r / 1e9 for n, r in peak_rates.items()},
            "peak_size_used": peak_n,
            "large_mlp": large,
            "target": {"fraction_of_peak": 0.5, "ebmkit_best_case": best_ebm,
                       "achieved_median_of_rounds": large[best_ebm]["fraction_of_peak_median_of_rounds"]},
            "noise_share_of_reference_step": noise_share,
            "noise_draw_us": noise,
            "mlp2d_per_step": small,
            "raw_seconds": times,
        },
        tables,
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
