"""Convolutional energies: achieved FLOP/s against the fp32 matmul peak, and
the convolution formulations tried for the CNN training step on CPU.

    python -m benchmarks.bench_conv            # ~5-8 min (both recipes, all variants)
    python -m benchmarks.bench_conv --quick    # ~2-3 min
    python -m benchmarks.bench_conv --recipes digits_deep --no-variants

For each recipe (``examples/<name>.toml``: its ``cnn`` energy, its Langevin
settings, batch and optimiser) it times, in one interleaved round-robin with a
large ``jnp.dot`` (the peak, as ``bench_roofline`` measures it):

* **grad**: one input-gradient pass ``dE/dx`` at the recipe's batch;
* **chain**: K Langevin steps (drift, Gaussian noise, clamp) in one
  ``lax.scan``, the way a training chain runs them;
* **train step**: the whole compiled ``model.train_step_fn()`` on a fixed
  batch (chain, positives + negatives forward/backward, Adam).

FLOPs are counted analytically, convolutions only (2 FLOPs per multiply-add;
GroupNorm, SiLU, the head, noise and Adam are not counted). A 3x3 layer costs
``F = 2 B Ho Wo Cin Cout 9`` forward; its input gradient costs the same again
and its kernel gradient the same again. So one input-gradient pass is
``2 sum F``; a training step is K of them (the chain; its last gradient is
never computed, the first is at the starts) plus one parameter-gradient pass
over the 2B positives and negatives: forward, activation gradients (none for
the first layer's input, which is data) and kernel gradients.

Formulations compared against **plain** (``nnx.Conv`` calling
``jax.lax.conv_general_dilated``, what ``cnn`` computed before), all computing
the same function (the energies and input gradients of every variant are
checked against plain's and reported):

* **custom VJP** (what ``cnn`` now computes,
  ``ebmkit_builtins.energies.cnn.conv_general_dilated``): the input gradient
  written out with a materialised flipped kernel, so XLA keeps a canonical
  convolution inside loops; identical results;
* **fast GroupNorm** (:func:`fast_group_norm`, here only): the same GroupNorm
  formula with per-channel sums over H x W first, alone and with the custom VJP;
* **im2col**: nine shifted (strided) slices of the padded input concatenated,
  then one matmul against the reshaped kernel;
* **NCHW**: the same convolution on a transposed input (``NCHW``/``HWIO``);
* **plain, unrolled scan**: plain convolutions, the chain's ``lax.scan`` fully
  unrolled (no while loop).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from ebmkit_builtins.energies import cnn  # noqa: E402
from flax import nnx  # noqa: E402

import ebmkit  # noqa: E402
from benchmarks.bench_roofline import peak_case  # noqa: E402
from ebmkit.types import Batch  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# -- formulations ------------------------------------------------------------------------


def _same_pads(shape: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...], padding: Any) -> list:
    if isinstance(padding, str):
        return list(jax.lax.padtype_to_pads(shape, kernel, strides, padding))
    return [tuple(p) for p in padding]


def im2col_conv(inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None, **_kw):
    """NHWC/HWIO convolution as nine shifted slices and one matmul."""
    b, h, w, c = inputs.shape
    kh, kw, ci, co = kernel.shape
    sh, sw = (int(s) for s in window_strides)
    (plo, phi), (qlo, qhi) = _same_pads((h, w), (kh, kw), (sh, sw), padding)
    xp = jnp.pad(inputs, ((0, 0), (plo, phi), (qlo, qhi), (0, 0)))
    ho, wo = (h + plo + phi - kh) // sh + 1, (w + qlo + qhi - kw) // sw + 1
    cols = [
        jax.lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
        for i in range(kh) for j in range(kw)
    ]
    patches = jnp.concatenate(cols, axis=-1).reshape(b * ho * wo, kh * kw * ci)  # (i, j, c): HWIO order
    y = jnp.dot(patches, kernel.reshape(kh * kw * ci, co), precision=precision)
    return y.reshape(b, ho, wo, co)


def nchw_conv(inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, precision=None, **_kw):
    """The same convolution with the input transposed to NCHW at the boundary."""
    y = jax.lax.conv_general_dilated(inputs.transpose(0, 3, 1, 2), kernel, window_strides, padding,
                                     dimension_numbers=("NCHW", "HWIO", "NCHW"), precision=precision)
    return y.transpose(0, 2, 3, 1)


def fast_group_norm(norm: nnx.GroupNorm, x: jax.Array) -> jax.Array:
    """``norm(x)`` for an ``nnx.GroupNorm`` over ``x[B, H, W, C]`` (a variant tried).

    The same formula as flax's (``var = E[x^2] - E[x]^2`` clipped at 0, then
    ``(x - mean) * rsqrt(var + eps) * scale + bias``), but the sums run over
    ``H * W`` first, per channel (a reduction XLA vectorises along the
    contiguous channel axis), and only then over each group's channels; flax
    reduces ``x.reshape(B, H, W, G, C / G)`` over three strided axes at once,
    which XLA's CPU backend runs 2-5x slower (forward and backward). Only the
    summation order differs (float32 rounding). Any other use (other shapes,
    reduction axes, a named axis, half precision) calls ``norm(x)``.
    """
    plain = (
        x.ndim == 4
        and x.dtype == jnp.float32
        and norm.reduction_axes is None
        and norm.feature_axis in (-1, 3)
        and norm.axis_name is None
        and norm.dtype in (None, jnp.float32)
        and norm.param_dtype == jnp.float32
        and norm.use_fast_variance
    )
    if not plain:
        return norm(x)
    b, h, w, c = x.shape
    groups, size = norm.num_groups, norm.group_size
    flat = x.reshape(b, h * w, c)
    sums = jnp.stack([flat.sum(axis=1), (flat * flat).sum(axis=1)])  # [2, B, C]
    mu, mu2 = sums.reshape(2, b, groups, size).sum(axis=-1) / (h * w * size)
    var = jnp.maximum(0.0, mu2 - mu * mu)
    mul = jax.lax.rsqrt(jnp.repeat(var, size, axis=1) + norm.epsilon)
    if norm.scale is not None:
        mul = mul * norm.scale[...]
    y = (x - jnp.repeat(mu, size, axis=1)[:, None, None, :]) * mul[:, None, None, :]
    if norm.bias is not None:
        y = y + norm.bias[...]
    return y


class FastGroupNorm(nnx.GroupNorm):
    """``nnx.GroupNorm`` computed by :func:`fast_group_norm` (same parameters)."""

    def __call__(self, x, *, mask=None):
        return fast_group_norm(self, x) if mask is None else super().__call__(x, mask=mask)


#: name -> (convolution, GroupNorm computed by fast_group_norm); "plain" is the
#: code before this benchmark's change, "custom VJP (cnn now)" the code after.
FORMULATIONS: dict[str, tuple[Callable[..., Any], bool]] = {
    "plain": (jax.lax.conv_general_dilated, False),
    "custom VJP (cnn now)": (cnn.conv_general_dilated, False),
    "custom VJP + fast GroupNorm": (cnn.conv_general_dilated, True),
    "fast GroupNorm": (jax.lax.conv_general_dilated, True),
    "im2col": (im2col_conv, False),
    "NCHW": (nchw_conv, False),
}
SHIPPED = "custom VJP (cnn now)"


def convs_of(net: nnx.Module) -> list[nnx.Conv]:
    return [m for _, m in nnx.iter_modules(net) if isinstance(m, nnx.Conv)]


def build(recipe: str, formulation: str) -> ebmkit.EBM:
    """The recipe's model with its convolutions and GroupNorms computed as ``formulation``."""
    model = ebmkit.assemble(str(EXAMPLES / f"{recipe}.toml"))
    conv_fn, fast_norm = FORMULATIONS[formulation]
    for conv in convs_of(model.energy_net):
        conv.conv_general_dilated = conv_fn
    if fast_norm:
        for _, module in nnx.iter_modules(model.energy_net):
            if type(module) is nnx.GroupNorm:
                module.__class__ = FastGroupNorm
    return model


# -- FLOPs -------------------------------------------------------------------------------


def conv_flops(model: ebmkit.EBM, batch: int) -> list[float]:
    """Forward FLOPs of each convolution at ``batch`` (2 B Ho Wo Cin Cout kh kw)."""
    out = []
    h, w = model.event_shape[:2]
    for conv in convs_of(model.energy_net):
        kh, kw, ci, co = conv.kernel[...].shape
        s = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
        h, w = -(-h // s), -(-w // s)
        out.append(2.0 * batch * h * w * ci * co * kh * kw)
    return out


def flop_counts(model: ebmkit.EBM, batch: int, k: int) -> dict[str, float]:
    fwd = conv_flops(model, batch)
    fwd2 = conv_flops(model, 2 * batch)
    grad = 2.0 * sum(fwd)
    param = 3.0 * sum(fwd2) - fwd2[0]
    return {"forward": sum(fwd), "grad": grad, "chain": k * grad, "train_step": k * grad + param}


# -- the timed functions -----------------------------------------------------------------


def energy_parts(model: ebmkit.EBM):
    graphdef, params = nnx.split(model.energy_net)
    params = jax.tree.map(jnp.copy, params)  # the train step donates the model's own arrays

    def grad_fn(p, x):
        return jax.grad(lambda y: nnx.merge(graphdef, p)(y).sum())(x)

    def energy_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    return params, jax.jit(energy_fn), grad_fn


def chain_fn(grad_fn, k: int, step_size: float, noise: float, clamp: tuple[float, float], unroll: int = 1):
    """K Langevin steps in one ``lax.scan`` (drift, noise, clamp), as a training chain."""

    def chain(p, x, key):
        def body(y, kk):
            y = y - step_size * grad_fn(p, y) + noise * jax.random.normal(kk, y.shape)
            return jnp.clip(y, *clamp), None

        return jax.lax.scan(body, x, jax.random.split(key, k), unroll=unroll)[0]

    return jax.jit(chain)


def dim_labels(compiled_text: str) -> list[str]:
    return re.findall(r"dim_labels=([^,\s]+)", compiled_text)


def max_rel(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def bench_recipe(recipe: str, args: argparse.Namespace, peak_fn: Callable[[], Any], peak_work: float) -> dict[str, Any]:
    probe = ebmkit.assemble(str(EXAMPLES / f"{recipe}.toml"))
    cfg = probe.config
    b, k = cfg.train.batch_size, cfg.sampler.num_steps
    step_size, noise = float(cfg.sampler.step_size), float(cfg.sampler.noise_scale)
    clamp = tuple(float(c) for c in cfg.sampler.clamp)
    flops = flop_counts(probe, b, k)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1.0, 1.0, (b, *probe.event_shape)).astype(np.float32))
    data = jnp.asarray(rng.uniform(-1.0, 1.0, (b, *probe.event_shape)).astype(np.float32))
    key = jax.random.key(0)
    forms = ["plain", SHIPPED] + ([] if args.no_variants else ["custom VJP + fast GroupNorm", "fast GroupNorm", "im2col", "NCHW"])
    step_forms = ["plain", SHIPPED] + ([] if args.no_variants else ["custom VJP + fast GroupNorm", "fast GroupNorm", "im2col"])
    cases: dict[str, dict[str, Callable[[], Any]]] = {"grad": {}, "chain": {}, "train step": {}}
    check: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    ref_e = ref_g = None
    calls = args.grad_calls
    for form in forms:
        model = build(recipe, form)
        params, energy_jit, grad_fn = energy_parts(model)
        grad_jit = jax.jit(grad_fn)
        e, g = energy_jit(params, x), grad_jit(params, x)
        if ref_e is None:
            ref_e, ref_g = e, g
        check[form] = {"energy_max_rel": max_rel(e, ref_e), "grad_max_rel": max_rel(g, ref_g)}

        def run_grad(grad_jit=grad_jit, params=params):
            for _ in range(calls):
                out = grad_jit(params, x)
            out.block_until_ready()

        cases["grad"][form] = run_grad
        chains = {form: chain_fn(grad_fn, k, step_size, noise, clamp)}
        if form == "plain" and not args.no_variants:
            chains["plain, unrolled scan"] = chain_fn(grad_fn, k, step_size, noise, clamp, unroll=k)
        for name, ch in chains.items():
            compiled = ch.lower(params, x, key).compile()
            labels[name] = dim_labels(compiled.as_text())
            cases["chain"][name] = lambda c=compiled, params=params: c(params, x, key).block_until_ready()
        if form in step_forms:
            step = model.train_step_fn()
            box = {"state": model.train_state()}
            batch = Batch(data, None)

            def run_step(step=step, box=box, batch=batch):
                box["state"], metrics = step(box["state"], batch)
                jax.block_until_ready(metrics)

            cases["train step"][form] = run_step
    out: dict[str, Any] = {
        "batch": b, "num_steps": k, "hidden_dims": list(cfg.energy.hidden_dims), "event_shape": list(probe.event_shape),
        "flops": flops, "equivalence_vs_plain": check, "chain_conv_dim_labels": labels, "sections": {},
    }
    for section, fns in cases.items():
        _common.log(f"bench_conv: {recipe} {section} ({', '.join(fns)})")
        load_before = _common._load()
        times = _common.alternate({"peak dot": peak_fn, **fns}, args.repeats)
        load_after = _common._load()
        work = flops["grad"] * calls if section == "grad" else flops["chain" if section == "chain" else "train_step"]
        per_call = calls if section == "grad" else 1
        entries = {}
        for name in fns:
            ts, ps = times["wall"][name], times["wall"]["peak dot"]
            frac = [(work / t) / (peak_work / p) for t, p in zip(ts, ps, strict=True)]
            entries[name] = {
                "ms_median": 1e3 * statistics.median(ts) / per_call,
                "ms_best": 1e3 * min(ts) / per_call,
                "gflops_median": work / statistics.median(ts) / 1e9,
                "fraction_of_peak_median_of_rounds": statistics.median(frac),
                "speed_vs_plain": _common.ratio(times["wall"]["plain"], ts) if name != "plain" else None,
                "speed_vs_plain_cpu": _common.ratio(times["cpu"]["plain"], times["cpu"][name]) if name != "plain" else None,
            }
        peak = peak_work / statistics.median(times["wall"]["peak dot"])
        out["sections"][section] = {"cases": entries, "peak_gflops_median": peak / 1e9,
                                    "load_average": [load_before, load_after], "raw_seconds": times}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="digits_deep,mnist_deep", help="examples/<name>.toml, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--grad-calls", type=int, default=10, help="input-gradient calls per timed grad round")
    parser.add_argument("--peak-size", type=int, default=1024)
    parser.add_argument("--no-variants", action="store_true", help="plain and the shipped formulation only")
    parser.add_argument("--quick", action="store_true", help="3 repeats, plain and the shipped formulation only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.no_variants = 3, True
    peak_fn, peak_work = peak_case(args.peak_size)
    results = {}
    tables = []
    for recipe in args.recipes.split(","):
        r = bench_recipe(recipe, args, peak_fn, peak_work)
        results[recipe] = r
        f = r["flops"]
        tables.append(_common.markdown_table(
            [f"{recipe}: conv FLOPs (B={r['batch']}, K={r['num_steps']})", "MFLOP"],
            [[name, v / 1e6] for name, v in f.items()],
        ))
        rows = []
        for section, sec in r["sections"].items():
            for name, e in sec["cases"].items():
                sp, cp = e["speed_vs_plain"], e["speed_vs_plain_cpu"]
                rows.append([section, name, e["ms_median"], e["gflops_median"], e["fraction_of_peak_median_of_rounds"],
                             "-" if sp is None else sp["median"], "-" if sp is None else f"{sp['low']:.2f}-{sp['high']:.2f}",
                             "-" if cp is None else cp["median"], sec["peak_gflops_median"],
                             " / ".join(str(la[0]) if la else "?" for la in sec["load_average"])])
        tables.append(_common.markdown_table(
            [recipe, "formulation", "ms (median)", "GFLOP/s", "of peak", "speed vs plain", "per-round range",
             "speed vs plain (CPU time)", "peak GFLOP/s", "1-min load before / after"],
            rows,
        ))
        tables.append(_common.markdown_table(
            [f"{recipe}: vs plain", "energy max rel. diff", "input-gradient max rel. diff"],
            [[n, c["energy_max_rel"], c["grad_max_rel"]] for n, c in r["equivalence_vs_plain"].items()],
        ))
        tables.append(_common.markdown_table(
            [f"{recipe}: chain (lax.scan)", "convolution dim_labels in the compiled chain"],
            [[n, " ".join(sorted(set(v)))] for n, v in r["chain_conv_dim_labels"].items()],
        ))
    return _common.emit(
        "bench_conv",
        {"settings": {**vars(args), "load_average_end": list(os.getloadavg()),
                      "flop_count": "3x3 convolutions only: forward 2*B*Ho*Wo*Cin*Cout*9; input gradient and kernel "
                                    "gradient the same again each"},
         "recipes": results},
        tables,
        json_path=args.json,
    )


if __name__ == "__main__":
    main()
