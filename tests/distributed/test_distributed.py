"""Data-parallel training (ebmkit.distributed) on forced CPU devices.

JAX reads ``--xla_force_host_platform_device_count`` once, when it starts its
CPU backend, so every check that needs several devices runs in a child
process started with that flag; the child prints one JSON report and the tests
below assert on it. Kept small: a 16-unit MLP, 3 Langevin steps, a few updates.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ebmkit
from ebmkit.config.schema import parse_mesh
from ebmkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _child_env(devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def _report(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"the child printed no report:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("REPORT "):])


# -- one process, four devices ------------------------------------------------------

_FOUR_DEVICES = textwrap.dedent(
    r"""
    import json, shutil, sys
    from pathlib import Path
    import jax, jax.numpy as jnp, numpy as np
    import ebmkit, ebmkit.training
    from ebmkit import distributed as dist
    from ebmkit.training.checkpoint import Checkpointer, flatten_state
    from ebmkit.components import build_dataset
    from ebmkit.training import Trainer

    tmp = Path(sys.argv[1])
    TINY = {"energy": {"name": "mlp", "hidden_dims": [16, 16]}, "sampler": {"name": "langevin", "num_steps": 3},
            "buffer": {"name": "replay", "capacity": 64}, "dataset": "8gaussians"}
    report = {"device_count": jax.device_count()}

    def make(devices=4, run_dir=None, buffer=None, **train):
        settings = {"steps": 8, "batch_size": 16, "log_every": 2, "checkpoint_every": 4, **train}
        config = ebmkit.load_config({**TINY, "buffer": buffer or TINY["buffer"]}, train=settings,
                                    distributed={"devices": devices} if devices else {})
        data = build_dataset(config.dataset)
        model = ebmkit.EBM(config, event_shape=data.event_shape, data_bounds=data.bounds)
        return Trainer(model, data, run_dir=run_dir, evaluate=lambda trainer: {})

    def max_diff(a, b):
        return max([float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))] or [0.0])

    def host(tree):
        return flatten_state(jax.device_get(tree))

    # 1. Four devices against the one-device emulation of the same program.
    trainer = make()
    init = jax.device_get(trainer.state)
    xs = trainer._batches(4)
    sharded, metrics = trainer._step(trainer.state, trainer.parallel.put_batches(xs))
    reference, ref_metrics = jax.jit(dist.emulate(trainer.local_program, 4))(
        jax.device_put(init, jax.devices()[0]), jax.tree.map(jnp.asarray, xs))
    report["equivalence"] = {
        "params": max_diff(sharded.energy_params, reference.energy_params),
        "opt_state": max_diff(sharded.opt_state, reference.opt_state),
        "buffer": max_diff(sharded.buffer_state.data, reference.buffer_state.data),
        "filled_equal": bool(np.array_equal(sharded.buffer_state.filled, reference.buffer_state.filled)),
        "key_equal": bool(np.array_equal(jax.random.key_data(sharded.rng_key), jax.random.key_data(reference.rng_key))),
        "loss": max_diff(metrics["loss"], ref_metrics["loss"]),
        "params_moved": max_diff(sharded.energy_params, init.energy_params),
    }
    # Different devices ran different chains (their own keys, their own slots).
    starts = np.asarray(sharded.buffer_state.data).reshape(4, 16, 2)
    report["devices_differ"] = bool(all(not np.allclose(starts[0], starts[d]) for d in (1, 2, 3)))

    # 2. Placement, and what the compiled step communicates.
    data = sharded.buffer_state.data
    report["buffer_spec"] = list(data.sharding.spec)
    report["buffer_shards"] = sorted([[s.device.id, *s.data.shape] for s in data.addressable_shards])
    report["filled_spec"] = list(sharded.buffer_state.filled.sharding.spec)
    report["params_replicated"] = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded.energy_params))
    hlo = trainer._step.lower(sharded, trainer.parallel.put_batches(xs)).compile().as_text()
    report["collectives"] = dist.collective_bytes(hlo)
    n_metrics = len([k for k in metrics if k not in ("diverged", "grad_norm")])
    report["volume"] = dist.communication_volume(sharded, 4, batch_size=16, event_shape=(2,), num_metrics=n_metrics)

    # 3. What cannot be split says so.
    errors = {}
    for name, kwargs in {
        "batch": {"batch_size": 18},
        "capacity": {"buffer": {"name": "replay", "capacity": 66}},
        "devices": {"devices": 8},
    }.items():
        try:
            make(**kwargs)
            errors[name] = None
        except dist.ShardingError as exc:
            errors[name] = str(exc)
    report["errors"] = errors

    # 4. Checkpoints: save on 4, resume on 4 (bit-exact), on 1 and on 2.
    full = make(run_dir=tmp / "full")
    full.fit()
    first = make(run_dir=tmp / "split", steps=4)
    first.fit()
    second = make(run_dir=tmp / "split")
    second.fit(resume=True)
    a, b = host(full.state), host(second.state)
    report["resume_bit_exact"] = sorted(k for k in a if not np.array_equal(a[k], b[k]))  # keys that differ
    report["resume_buffer_spec"] = list(second.state.buffer_state.data.sharding.spec)
    report["history_steps"] = [row["step"] for row in full.history]
    report["metrics_rows"] = [json.loads(l)["step"] for l in (tmp / "split" / "metrics.jsonl").read_text().splitlines()]
    report["model_state_local"] = len(full.model.train_state().buffer_state.data.devices())
    saved = host(full.state)
    for devices, label in ((None, "one"), (2, "two")):
        shutil.copytree(tmp / "full", tmp / label)
        other = make(devices=devices, run_dir=tmp / label, steps=10)
        other.restore()
        restored = host(other.state)
        report[f"restore_on_{label}"] = {
            "equal": sorted(k for k in saved if not np.array_equal(saved[k], restored[k])),
            "buffer_devices": len(other.state.buffer_state.data.devices()),
        }
        other.fit(resume=True)
        if label == "one":
            other_one = other.state
        report[f"restore_on_{label}"]["step"] = other.step
        report[f"restore_on_{label}"]["finite"] = bool(all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(other.state.energy_params))))
    # 5. Divergence on four devices rolls back to the sharded snapshot, then explains.
    wild = make(steps=60, learning_rate=10.0, max_retries=1, log_every=5, checkpoint_every=0, steps_per_call=5)
    try:
        wild.fit()
        report["diverged"] = None
    except ebmkit.training.TrainingDiverged as exc:
        report["diverged"] = {"message": str(exc), "spec": list(wild.state.buffer_state.data.sharding.spec)}

    # 6. Philox keys (lax.mulhi) compile in a program split over the mesh.
    from jax.sharding import PartitionSpec as P
    noise = jax.jit(jax.shard_map(lambda x: x + jax.random.normal(jax.random.key(0, impl="philox4x32"), x.shape),
                                  mesh=trainer.parallel.mesh, in_specs=P("data"), out_specs=P("data")))
    report["philox_on_mesh"] = bool(np.all(np.isfinite(np.asarray(noise(jnp.zeros(8))))))

    # ... and a one-device checkpoint (just written by "one") onto four.
    back = make(run_dir=tmp / "one", steps=12)
    report["restore_one_on_four"] = {"step": back.restore(), "spec": list(back.state.buffer_state.data.sharding.spec),
                                     "equal": bool(np.array_equal(host(back.state.buffer_state)["data"], host(other_one.buffer_state)["data"]))}
    print("REPORT " + json.dumps(report), flush=True)
    """
)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("four")
    proc = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES, str(tmp)], capture_output=True, text=True,
        env=_child_env(4), timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _report(proc.stdout)


def test_four_devices_match_the_one_device_emulation(four_devices):
    # Same global batch, same per-device keys, same buffer slices; only the
    # order of the float32 reductions in the gradient mean differs (an
    # all-reduce across devices versus a reduce over a vmapped axis). One ulp
    # at |g| ~ 1 is 1.2e-7; Adam divides it by sqrt(v), so after four steps at
    # lr 1e-3 a parameter moves by ~1e-9. 1e-6 leaves room for the MCMC chains
    # that follow to amplify it, and is far below what one update moves.
    eq = four_devices["equivalence"]
    assert four_devices["device_count"] == 4
    assert eq["params"] <= 1e-6, eq
    assert eq["opt_state"] <= 1e-6, eq
    assert eq["buffer"] <= 1e-5, eq
    assert eq["loss"] <= 1e-5, eq
    assert eq["filled_equal"] and eq["key_equal"], eq
    assert eq["params_moved"] > 1e-3, eq  # the comparison is not vacuous
    assert four_devices["devices_differ"]


def test_buffer_is_sharded_and_never_gathered(four_devices):
    assert four_devices["buffer_spec"] == ["data"]
    assert four_devices["filled_spec"] == ["data"]
    # Capacity 64 over four devices: sixteen slots on each, one shard per device.
    assert four_devices["buffer_shards"] == [[d, 16, 2] for d in range(4)]
    assert four_devices["params_replicated"]
    # The compiled step's only collective is the all-reduce of the gradients
    # and metrics: no all-gather, all-to-all or permute of the buffer or batch.
    collectives = four_devices["collectives"]
    volume = four_devices["volume"]
    assert set(collectives) == {"all-reduce"}, collectives
    assert collectives["all-reduce"] == volume["allreduce_bytes"], (collectives, volume)
    assert volume["buffer_bytes_moved"] == 0


def test_what_cannot_be_split_says_what_to_change(four_devices):
    errors = four_devices["errors"]
    assert "train.batch_size = 18" in errors["batch"] and "multiple of 4" in errors["batch"]
    assert "16 or 20" in errors["batch"]
    assert "buffer.capacity = 66" in errors["capacity"] and "multiple of 4" in errors["capacity"]
    assert "asked for 8 devices" in errors["devices"]
    assert "xla_force_host_platform_device_count=8" in errors["devices"]


def test_checkpoint_on_four_devices_resumes_bit_exactly(four_devices):
    assert four_devices["resume_bit_exact"] == []
    assert four_devices["resume_buffer_spec"] == ["data"]
    assert four_devices["history_steps"] == [2, 4, 6, 8]
    assert four_devices["metrics_rows"] == [2, 4, 6, 8]  # one aggregated stream, continued
    assert four_devices["model_state_local"] == 1  # the model gets a gathered copy after training


@pytest.mark.parametrize("label,devices", [("one", 1), ("two", 2)])
def test_checkpoint_on_four_devices_restores_onto_another_mesh(four_devices, label, devices):
    restored = four_devices[f"restore_on_{label}"]
    assert restored["equal"] == []  # the same global arrays, re-split
    assert restored["buffer_devices"] == devices
    assert restored["step"] == 10 and restored["finite"]


def test_divergence_rolls_back_on_four_devices(four_devices):
    diverged = four_devices["diverged"]
    assert diverged is not None, "lr 10 should diverge"
    assert "after 1 rollback(s)" in diverged["message"] and "rolled back to step 0" in diverged["message"]
    assert diverged["spec"] == ["data"]  # the restored snapshot is sharded again


def test_philox_keys_compile_on_a_mesh(four_devices):
    # jaxlib 0.10's chlo.mulhi does not compile in partitioned programs;
    # ebmkit.distributed swaps in JAX's portable lowering (see there).
    assert four_devices["philox_on_mesh"]


def test_one_device_checkpoint_restores_onto_four(four_devices):
    back = four_devices["restore_one_on_four"]
    assert back == {"step": 10, "spec": ["data"], "equal": True}


# -- the command line -----------------------------------------------------------------


def test_train_command_on_four_devices(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ebmkit.cli", "train", "--devices", "4", "--steps", "20", "--out", str(out),
         "--no-progress", "--set", "train.log_every=5", "--set", "train.batch_size=64"],
        capture_output=True, text=True, env=_child_env(4), timeout=1800, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "devices      4" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    assert all(np.isfinite(row["loss"]) for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 4 and summary["steps"] == 20
    assert ebmkit.load_config(out / "config.toml").distributed.devices == 4


@pytest.mark.parametrize("devices", [2, 4])
def test_default_config_on_n_devices_without_xla_flags(tmp_path, devices):
    """`ebmkit train --devices N` with the default config and log_every, and no
    XLA_FLAGS: the CLI makes N CPU devices, and bounded dispatch keeps XLA's
    CPU collectives from timing out in their rendezvous on a busy machine."""
    env = {k: v for k, v in _child_env(1).items() if k != "XLA_FLAGS"}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ebmkit.cli", "train", "--devices", str(devices), "--steps", "300", "--out", str(out),
         "--no-progress"],
        capture_output=True, text=True, env=env, timeout=1800, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == devices and summary["steps"] == 300


def test_devices_beyond_what_jax_sees_is_a_clear_cli_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ebmkit.cli", "train", "--devices", "3", "--steps", "2", "--out", str(tmp_path / "r"),
         "--no-progress"],
        capture_output=True, text=True, env=_child_env(2), timeout=1800, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "asked for 3 devices" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_mesh_and_devices_flags_reach_the_config(tmp_path):
    from click.testing import CliRunner

    from ebmkit.cli import cli

    result = CliRunner().invoke(cli, ["train", "--mesh", "data=2", "--devices", "4", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "mesh 'data=2' and devices = 4 disagree" in result.output
    result = CliRunner().invoke(cli, ["train", "--mesh", "model=2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "only a 'data' axis is supported" in result.output


# -- two processes on one machine --------------------------------------------------------

_PROCESS = textwrap.dedent(
    r"""
    import hashlib, json, sys
    from pathlib import Path
    import numpy as np
    from ebmkit import distributed as dist
    from ebmkit.config import load_config

    run_dir = Path(sys.argv[1])
    TINY = {"energy": {"name": "mlp", "hidden_dims": [16, 16]}, "sampler": {"name": "langevin", "num_steps": 3},
            "buffer": {"name": "replay", "capacity": 64}, "dataset": "8gaussians"}
    config = load_config(TINY, train={"steps": 4, "batch_size": 16, "log_every": 2, "checkpoint_every": 2})
    assert dist.initialize(config.distributed)  # from $JAX_COORDINATOR_ADDRESS etc.

    import jax
    from ebmkit.components import build_dataset
    from ebmkit.model import EBM
    from ebmkit.training import Trainer

    def digest(tree):
        h = hashlib.sha256()
        for x in jax.tree.leaves(tree):
            h.update(np.asarray(x).tobytes())
        return h.hexdigest()

    data = build_dataset(config.dataset)
    report = {"process": jax.process_index(), "processes": jax.process_count(),
              "devices": jax.device_count(), "local_devices": jax.local_device_count()}
    trainer = Trainer(EBM(config, event_shape=data.event_shape, data_bounds=data.bounds), data,
                      run_dir=run_dir, evaluate=lambda t: {})
    report["mesh"] = trainer.parallel.num_devices
    probe = np.random.default_rng(trainer.parallel.data_seed(0))
    report["first_batch"] = digest(data.sample(probe, trainer.parallel.local_batch_size(16)))
    trainer.fit()
    report["step"] = trainer.step
    report["params"] = digest(trainer.model.train_state().energy_params)
    report["buffer_shards"] = len(trainer.state.buffer_state.data.addressable_shards)
    report["finite"] = bool(all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(trainer.model.train_state().energy_params)))
    # Resume in the same processes from the checkpoint both just wrote.
    again = Trainer(EBM(config, event_shape=data.event_shape, data_bounds=data.bounds), data,
                    run_dir=run_dir, evaluate=lambda t: {})
    report["restored_step"] = again.restore()
    report["restored_params"] = digest(again.parallel.to_local(again.state.energy_params))
    print("REPORT " + json.dumps(report), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_on_loopback_agree_on_the_parameters(tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(tmp_path / "run")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_child_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                           JAX_PROCESS_ID=str(pid)),
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=1800)
            assert proc.returncode == 0, stderr[-4000:]
            outputs.append(_report(stdout))
    finally:
        for proc in procs:
            proc.kill()
    first, second = outputs
    assert (first["process"], second["process"]) == (0, 1)
    for report in outputs:
        assert report["processes"] == 2 and report["devices"] == 4 and report["local_devices"] == 2
        assert report["mesh"] == 4 and report["buffer_shards"] == 2
        assert report["step"] == 4 and report["finite"] and report["restored_step"] == 4
    assert first["params"] == second["params"]  # replicated parameters agree bit for bit
    assert first["restored_params"] == second["restored_params"] == first["params"]
    assert first["first_batch"] != second["first_batch"]  # each host reads its own data
    # Process 0 alone reports.
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]


# -- configuration (no devices needed) ------------------------------------------------------


def test_distributed_config_from_flags_and_files():
    assert ebmkit.load_config().distributed.num_devices is None
    assert ebmkit.load_config(overrides=["distributed.devices=4"]).distributed.num_devices == 4
    assert ebmkit.load_config(overrides=['distributed.mesh="data=2"']).distributed.num_devices == 2
    assert parse_mesh(" data = 8 ") == 8
    with pytest.raises(ConfigError, match="disagree"):
        ebmkit.load_config(distributed={"devices": 4, "mesh": "data=2"})
    with pytest.raises(ConfigError, match="only a 'data' axis"):
        ebmkit.load_config(distributed={"mesh": "data=2,model=2"})
    with pytest.raises(ConfigError, match="multihost"):
        ebmkit.load_config(distributed={"multihost": "yes"})


def test_communication_volume_from_shapes():
    from ebmkit.distributed import communication_volume
    from ebmkit.training import TrainState

    params = {"w": np.zeros((10, 10), np.float32), "b": np.zeros(10, np.float32)}
    buffer = (np.zeros((64, 2), np.float32), np.zeros(64, bool))
    state = TrainState(
        energy_params=params, energy_state={}, loss_params=None, loss_state=None, opt_state=(),
        buffer_state=buffer, sampler_state=None, rng_key=np.zeros(2, np.uint32),
    )
    one = communication_volume(state, 1, batch_size=16, event_shape=(2,), num_metrics=10)
    four = communication_volume(state, 4, batch_size=16, event_shape=(2,), num_metrics=10)
    assert one["allreduce_bytes"] == 0
    assert four["allreduce_bytes"] == 440 + 40
    assert four["ring_bytes_per_device"] == 720  # 2 (N-1)/N of the payload
    assert four["buffer_bytes_per_device"] == (64 * 2 * 4 + 64) // 4
    assert four["batch_bytes_per_device"] == 4 * 2 * 4


def test_classic_training_is_unchanged_without_a_mesh():
    from ebmkit.components import build_dataset
    from ebmkit.training import Trainer

    config = ebmkit.load_config({"energy": {"name": "mlp", "hidden_dims": [8]}, "buffer": {"name": "replay", "capacity": 32}},
                                train={"steps": 2, "batch_size": 8})
    data = build_dataset(config.dataset)
    trainer = Trainer(ebmkit.EBM(config, event_shape=(2,), data_bounds=data.bounds), data)
    assert trainer.parallel is None and trainer.is_main_process
