"""Trainer: metrics, hooks, checkpoints, bit-exact resume, crash safety, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import ebmkit
from ebmkit.components import build_dataset
from ebmkit.hookspecs import hookimpl
from ebmkit.plugins import get_plugin_manager
from ebmkit.training import Trainer, TrainingDiverged
from ebmkit.training.checkpoint import Checkpointer, CheckpointError, flatten_state

TINY = {
    "energy": {"name": "mlp", "hidden_dims": [16, 16]},
    "sampler": {"name": "langevin", "num_steps": 3},
    "buffer": {"name": "replay", "capacity": 256},
    "dataset": "8gaussians",
}


def make_trainer(run_dir=None, **train):
    settings = {"steps": 40, "batch_size": 32, "log_every": 10, "checkpoint_every": 20, **train}
    config = ebmkit.load_config(TINY, train=settings)
    dataset = build_dataset(config.dataset)
    model = ebmkit.EBM(config, event_shape=dataset.event_shape, data_bounds=dataset.bounds)
    return Trainer(model, dataset, run_dir=run_dir)


def params_of(trainer):
    return flatten_state(jax.device_get(trainer.state))


def test_fit_writes_metrics_config_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, keep_checkpoints=2)
    result = trainer.fit()
    assert result.step == 40
    assert [row["step"] for row in result.history] == [10, 20, 30, 40]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    for key in ("loss", "real_energy_mean", "fake_energy_mean", "energy_gap", "steps_per_s"):
        assert key in rows[-1]
    assert ebmkit.load_config(tmp_path / "config.toml") == trainer.config
    assert Checkpointer(tmp_path / "checkpoints").steps() == [20, 40]  # keep the last 2
    for key in ("nll", "kl_gap", "energy_gap", "steps_per_s"):
        assert np.isfinite(result.summary[key])
    # The model holds the trained state afterwards.
    np.testing.assert_array_equal(
        jax.tree.leaves(trainer.model.train_state().energy_params)[0], jax.tree.leaves(trainer.state.energy_params)[0]
    )


@pytest.mark.parametrize("data_on_device", ["always", "never"])
def test_resume_is_bit_exact(tmp_path, data_on_device):
    full = make_trainer(tmp_path / "full", steps=40, data_on_device=data_on_device)
    full.fit()
    first = make_trainer(tmp_path / "split", steps=20, data_on_device=data_on_device)
    first.fit()
    assert (first.device_data is not None) == (data_on_device == "always")
    second = make_trainer(tmp_path / "split", steps=40, data_on_device=data_on_device)
    second.fit(resume=True)
    a, b = params_of(full), params_of(second)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The metrics file continues instead of starting over.
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]


def test_steps_per_call_scans_several_steps(tmp_path):
    one = make_trainer(steps=20, steps_per_call=1)
    one.fit()
    four = make_trainer(steps=20, steps_per_call=4)
    four.fit()
    a, b = params_of(one), params_of(four)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_hooks_fire_on_the_host(tmp_path):
    calls = []

    class Recorder:
        @hookimpl
        def ebmkit_run_start(self, config, run_dir):
            calls.append(("start", run_dir))

        @hookimpl
        def ebmkit_step_end(self, step, metrics):
            assert isinstance(metrics["loss"], float)
            calls.append(("step", step))

        @hookimpl
        def ebmkit_checkpoint_saved(self, step, path):
            assert Path(path).exists()
            calls.append(("checkpoint", step))

        @hookimpl
        def ebmkit_run_end(self, config, run_dir, summary, error):
            calls.append(("end", error))

    pm = get_plugin_manager()
    recorder = Recorder()
    pm.register(recorder, name="test-recorder")
    try:
        make_trainer(tmp_path, steps=20).fit()
    finally:
        pm.unregister(recorder)
    assert calls[0] == ("start", tmp_path)
    assert ("step", 10) in calls and ("step", 20) in calls
    assert ("checkpoint", 0) in calls and ("checkpoint", 20) in calls
    assert calls[-1] == ("end", None)


def test_divergence_rolls_back_then_explains(tmp_path):
    trainer = make_trainer(tmp_path, steps=200, learning_rate=10.0, max_retries=2)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "diverged" in message
    assert "after 2 rollback(s)" in message
    assert "learning rate 5" in message and "learning rate 2.5" in message
    assert "train.learning_rate" in message  # the advice
    # What is on disk is the last good state: loadable and finite.
    ckpt = Checkpointer(tmp_path / "checkpoints")
    state, meta = ckpt.restore(jax.device_get(trainer.state))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.energy_params))
    assert meta["step"] == 0


def test_corrupt_checkpoint_is_named_and_the_previous_one_resumes(tmp_path):
    make_trainer(tmp_path, steps=20).fit()
    step_dir = tmp_path / "checkpoints" / "20"
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.name != "_METADATA":
            path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=r"checkpoints/20 is corrupt .* resumed from .*checkpoints/\d+ instead"):
        result = make_trainer(tmp_path, steps=40).fit(resume=True)
    assert result.step == 40
    assert (tmp_path / "checkpoints" / "20.corrupt").is_dir()  # kept aside, not overwritten


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, steps=20).fit()
    config = ebmkit.load_config({**TINY, "energy": {"name": "mlp", "hidden_dims": [8]}}, train={"steps": 40})
    dataset = build_dataset(config.dataset)
    other = Trainer(ebmkit.EBM(config, event_shape=(2,), data_bounds=dataset.bounds), dataset, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="shape"):
        other.checkpointer.restore(jax.device_get(other.state))
    with pytest.raises(CheckpointError, match="different config"):
        other.restore()


_KILL_CHILD = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from ebmkit.training.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1], keep=5)
    rng = np.random.default_rng(0)
    for step in range(1, 100):
        state = {"w": np.full((2_000_000,), step, np.float32), "v": rng.normal(size=(500, 500)).astype(np.float32)}
        print("BEGIN", step, flush=True)
        ckpt.save(step, state, {"step": step})
        print("END", step, flush=True)
    """
)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_readable(tmp_path):
    directory = tmp_path / "ckpt"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(directory)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    lines = []
    try:
        while True:
            line = child.stdout.readline()
            assert line, f"child exited early: {lines}"
            lines.append(line.strip())
            if line.strip() == "BEGIN 3":
                time.sleep(0.05)  # inside the third save
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
    # What the child printed before it died: on a busy machine it may have got
    # past save 3 before the signal landed, so judge by its own record.
    lines += [line.strip() for line in child.stdout.read().splitlines()]
    ended = [int(line.split()[1]) for line in lines if line.startswith("END")]
    begun = max(int(line.split()[1]) for line in lines if line.startswith("BEGIN"))
    ckpt = Checkpointer(directory)
    steps = ckpt.steps()
    # The finished saves are there (the newest 4: keep=5 may have pruned older
    # ones); the one cut short either committed whole (before END was
    # printed) or left no trace.
    assert steps and set(ended[-4:]) <= set(steps) and set(steps) <= set(ended) | {begun}, (steps, lines)
    template = {"w": np.zeros((2_000_000,), np.float32), "v": np.zeros((500, 500), np.float32)}
    state, meta = ckpt.restore(template)
    assert float(np.asarray(state["w"])[0]) == meta["step"] == steps[-1]
    if begun not in steps:
        # The interrupted save never became a checkpoint; the previous one is intact.
        state2, _ = ckpt.restore(template, max(ended))
        assert float(np.asarray(state2["w"])[-1]) == float(max(ended))


def test_resume_refuses_a_missing_checkpoint(tmp_path):
    from ebmkit.job import RunDirectoryError, train_job

    with pytest.raises(RunDirectoryError, match="nothing to resume"):
        train_job(TINY, out=tmp_path, resume=True, plots=False)


def test_dataset_shape_must_match_the_model():
    config = ebmkit.load_config(TINY)
    model = ebmkit.EBM(config, event_shape=(3,))
    with pytest.raises(ValueError, match="shape"):
        Trainer(model, build_dataset(config.dataset))


def test_batches_drawn_on_the_device_depend_on_the_step_only():
    """Drawing inside the compiled step: the same batches whatever steps_per_call;
    a data set that cannot is refused for 'always'."""
    one = make_trainer(steps=8, steps_per_call=1, data_on_device="always")
    two = make_trainer(steps=8, steps_per_call=4, data_on_device="always")
    one.fit()
    two.fit()
    a, b = params_of(one), params_of(two)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # And they are the batches of the data set (a run on host batches ends elsewhere,
    # but near: the same distribution).
    host = make_trainer(steps=8, data_on_device="never")
    host.fit()
    assert one.device_data is not None and host.device_data is None

    class HostOnly(ebmkit.data.Dataset):  # a data set without a device sampler
        name, event_shape, bounds = "host_only", (2,), (-4.0, 4.0)

        def sample(self, rng, n):
            return rng.normal(size=(n, 2)).astype(np.float32)

    config = ebmkit.load_config(TINY, train={"data_on_device": "always"})
    with pytest.raises(ebmkit.ConfigError, match="train.data_on_device.*host only"):
        Trainer(ebmkit.EBM(config, event_shape=(2,)), HostOnly())
    assert Trainer(ebmkit.EBM(ebmkit.load_config(TINY), event_shape=(2,)), HostOnly()).device_data is None
