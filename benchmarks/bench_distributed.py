"""Data-parallel step time and communication on 1, 2 and 4 forced CPU devices.

    python benchmarks/bench_distributed.py                  # default config, 1/2/4 devices
    python benchmarks/bench_distributed.py --devices 1,2,4,8 --steps 40 --json out.json

For each device count a child process is started with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX reads the flag once,
at start-up). The child builds the default assembly (mlp 128x128 + langevin
K=20 + pcd + replay 10,000 on 8gaussians, batch 256), places it on a mesh of N
devices and reports:

* ``step_ms``: median wall time of one training step (steps scanned per call,
  compilation excluded);
* the per-device share: ``local_batch`` = B/N chains and data rows,
  ``buffer_slots`` = C/N;
* ``allreduce_bytes``: the all-reduce payload per step computed from the
  sharded shapes (gradients + averaged metrics), ``ring_bytes_per_device``
  (what a ring all-reduce sends from each device), and ``hlo_collectives``:
  the same measured from the compiled program, so the two can be compared;
  ``buffer_bytes_moved`` is 0 by construction and ``hlo_collectives`` shows
  no all-gather.

Forced CPU devices share the machine's cores, so this checks that scaling is
*correct* (the work per device shrinks as 1/N, the communication stays the
size of the gradients), not that it is fast: on a 2-core machine 4 devices
cannot beat 1. On a multi-GPU host, run it without XLA_FLAGS on real devices
with ``--real``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(devices: int, steps: int, batch_size: int, steps_per_call: int) -> dict:
    import jax
    import numpy as np

    import ebmkit
    from ebmkit import distributed as dist
    from ebmkit.components import build_dataset
    from ebmkit.training import Trainer

    config = ebmkit.load_config(
        train={"steps": steps, "batch_size": batch_size, "steps_per_call": steps_per_call},
        distributed={"devices": devices} if devices else {},
    )
    data = build_dataset(config.dataset)
    model = ebmkit.EBM(config, event_shape=data.event_shape, data_bounds=data.bounds)
    trainer = Trainer(model, data, evaluate=lambda t: {})
    xs = trainer._device_batches(steps_per_call)
    compile_start = time.perf_counter()
    compiled = trainer._step.lower(trainer.state, xs).compile()
    compile_s = time.perf_counter() - compile_start
    collectives = dist.collective_bytes(compiled.as_text())

    state, metrics = trainer._step(trainer.state, xs)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(max(1, steps // steps_per_call)):
        xs = trainer._device_batches(steps_per_call)
        start = time.perf_counter()
        state, metrics = trainer._step(state, xs)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps_per_call)
    n_metrics = len([k for k in metrics if k not in ("diverged", "grad_norm")])
    volume = dist.communication_volume(
        state, max(devices, 1), batch_size=batch_size, event_shape=model.event_shape, num_metrics=n_metrics
    )
    shard = state.buffer_state.data.addressable_shards[0].data
    return {
        "devices": devices or "plain jit",
        "platform": jax.devices()[0].platform,
        "step_ms": 1e3 * statistics.median(times),
        "compile_s": compile_s,
        "local_batch": batch_size // max(devices, 1),
        "buffer_slots": int(shard.shape[0]),
        "buffer_spec": list(getattr(state.buffer_state.data.sharding, "spec", ())),
        "loss": float(np.asarray(metrics["loss"])[-1]),
        "finite": bool(np.all(np.isfinite(np.asarray(metrics["loss"])))),
        "hlo_collectives": collectives,
        **{k: v for k, v in volume.items() if k != "devices"},
    }


def run_child(devices: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    if not args.real:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(devices, 1)}"
        env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", str(devices), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--steps-per-call", str(args.steps_per_call)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"devices={devices} failed:\n{proc.stderr[-3000:]}")
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def table(rows: list[dict]) -> str:
    base = next((r["step_ms"] for r in rows if r["devices"] == 1), rows[0]["step_ms"])
    head = ("| devices | step (ms) | vs 1 | batch/device | buffer slots/device | all-reduce payload (B) "
            "| ring bytes/device | HLO collectives (B) | buffer bytes moved |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        hlo = ", ".join(f"{k} {v}" for k, v in sorted(r["hlo_collectives"].items())) or "none"
        lines.append(
            f"| {r['devices']} | {r['step_ms']:.2f} | {r['step_ms'] / base:.2f}x | {r['local_batch']} | "
            f"{r['buffer_slots']} | {r['allreduce_bytes']} | {r['ring_bytes_per_device']} | {hlo} | "
            f"{r['buffer_bytes_moved']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="0,1,2,4",
                        help="comma-separated device counts; 0 is the plain one-device trainer (no mesh)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per device count")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps-per-call", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--real", action="store_true", help="use the real devices (no forced CPU devices)")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = child(args.child, args.steps, args.batch_size, args.steps_per_call)
        print("RESULT " + json.dumps(result), flush=True)
        return
    rows = [run_child(int(n), args) for n in args.devices.split(",")]
    note = ("On 1 device the compiled step keeps a no-op all-reduce (it moves nothing); "
            "the payload column is what crosses devices.")
    report = {
        "config": "default (mlp 128x128, langevin K=20, pcd, replay 10000, 8gaussians)",
        "batch_size": args.batch_size,
        "steps_per_call": args.steps_per_call,
        "cpu_cores": os.cpu_count(),
        "results": rows,
        "note": note,
    }
    print(json.dumps(report, indent=2))
    print()
    print(table(rows))
    print()
    print(note)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
