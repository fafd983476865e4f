"""Quick regression check: ``python -m benchmarks`` (under 3 minutes on 2 CPU cores).

Runs, in one process with XLA pinned to one thread:

1. training throughput (``bench_train --quick``): Trainer and the guide path's
   ``model.train_step`` vs hand-written PCD;
2. sampling throughput (``bench_sample --quick``): ``generate`` vs hand-written
   Langevin (2-d and 784-d MLPs) and HMC (2-d);
3. learning quality on one toy (``benchmarks/quality.py::run_toy``), skipped
   with a note when that module is not there.

Each part prints its own tables and JSON line; the last line is one JSON
object with every target and its measured figure (``--json PATH`` also writes
it to a file). Exit status 0 unless a part crashed: missed speed targets are
reported, not failed, because timings on a shared machine move by ±30 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common

_common.pin_threads()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402


def _run_quality(name: str, seconds: float) -> dict[str, Any]:
    try:
        quality = importlib.import_module("benchmarks.quality")
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks.quality", "benchmarks"):
            raise
        return {"skipped": "benchmarks/quality.py does not exist yet; learning quality not measured"}
    run_toy = getattr(quality, "run_toy", None)
    if run_toy is None:
        return {"skipped": "benchmarks/quality.py has no run_toy(name, seconds)"}
    result = run_toy(name, seconds)
    return result if isinstance(result, dict) else {"result": result}


def _part(name: str, fn, results: dict[str, Any], errors: dict[str, str]) -> None:
    t0 = time.perf_counter()
    _common.log(f"== {name}")
    try:
        results[name] = fn()
    except Exception:  # a crashed part is reported, the others still run
        errors[name] = traceback.format_exc()
        _common.log(errors[name])
    _common.log(f"== {name}: {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="8gaussians", help="toy data set for the quality check")
    parser.add_argument("--toy-seconds", type=float, default=45.0, help="training time budget of the toy")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: train,sample,quality")
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not each part's output")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}

    from benchmarks import bench_sample, bench_train

    start = time.perf_counter()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    sink = io.StringIO() if args.quiet else None

    def quiet(fn):
        def run():
            if sink is None:
                return fn()
            with contextlib.redirect_stdout(sink):
                return fn()

        return run

    if "train" not in skip:
        _part("train", quiet(lambda: bench_train.main(["--quick"])), results, errors)
    if "sample" not in skip:
        _part("sample", quiet(lambda: bench_sample.main(["--quick", "--prngs", "default"])), results, errors)
    if "quality" not in skip:
        _part("quality", lambda: _run_quality(args.toy, args.toy_seconds), results, errors)

    targets = []
    train = results.get("train")
    if train:
        t = train["targets"]
        if t["spc1_vs_reference"]:
            targets.append(["train: Trainer steps_per_call=1 vs reference", t["spc1_vs_reference"]["wall"]["median"], ">= 1.0"])
        targets.append([f"train: {t['best_case']} vs reference", t["best_vs_reference"]["wall"]["median"], ">= 1.2"])
        if t.get("guide_vs_reference"):
            targets.append(["train: guide path model.train_step vs reference",
                            t["guide_vs_reference"]["wall"]["median"], ">= 1.0"])
    for r in (results.get("sample") or {}).get("results", []):
        for name, c in r["cases"].items():
            if name.startswith("ebmkit[") and "speed_vs_reference" in c:
                targets.append([f"sample: {r['model']} {r['sampler']} generate vs reference",
                                c["speed_vs_reference"]["wall"]["median"], ">= 1.0"])
    for label, c in ((r["model"] + " " + r["sampler"], r["compile"]) for r in (results.get("sample") or {}).get("results", [])):
        for info in c.values():
            targets.append([f"sample: {label} recompiles on 2nd call", info["compiles_second_call"], "0"])
    quality = results.get("quality")
    if quality is not None:
        if "skipped" in quality:
            measured: Any = quality["skipped"]
        elif "kl_gap" in quality:
            measured = quality["kl_gap"]
        else:
            measured = json.dumps(quality)[:120]
        targets.append([f"quality: {args.toy} KL gap (nats), {args.toy_seconds:g} s budget", measured,
                        "<= 0.05 (item 5)"])
    elapsed = time.perf_counter() - start
    targets.append(["total wall time (s)", elapsed, "< 180"])
    table = _common.markdown_table(["check", "measured", "target"], targets)
    summary = {
        "targets": [dict(zip(("check", "measured", "target"), row, strict=True)) for row in targets],
        "elapsed_s": elapsed,
        "errors": errors,
    }
    report = _common.emit("benchmarks_quick", summary, [table], json_path=args.json)
    if errors:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
