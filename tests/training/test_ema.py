"""Parameter EMA (``train.ema_decay``): kept in the compiled step, checkpointed,
used for sampling and evaluation, never for training's own chains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ebmkit
from ebmkit.components import build_dataset
from ebmkit.errors import ConfigError
from ebmkit.evaluate import evaluate_dataset
from ebmkit.training import Trainer
from ebmkit.training.checkpoint import Checkpointer, flatten_state
from ebmkit.training.fusion import fuse_steps
from ebmkit.types import Batch

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "energy": {"name": "mlp", "hidden_dims": [16, 16]},
    "sampler": {"name": "langevin", "num_steps": 3},
    "buffer": {"name": "replay", "capacity": 64},
    "dataset": "8gaussians",
}


def make_model(**train):
    settings = {"steps": 6, "batch_size": 32, "log_every": 2, "checkpoint_every": 0, **train}
    config = ebmkit.load_config(TINY, train=settings)
    dataset = build_dataset(config.dataset)
    return ebmkit.EBM(config, event_shape=dataset.event_shape, data_bounds=dataset.bounds), dataset


def make_trainer(run_dir=None, *, evaluate=lambda trainer: {}, **train):
    model, dataset = make_model(**train)
    return Trainer(model, dataset, run_dir=run_dir, evaluate=evaluate, hooks=False)


def host(tree):
    return {k: np.asarray(v) for k, v in flatten_state(jax.device_get(tree)).items()}


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(32, 2)).astype(np.float32) * 2 for _ in range(n)]


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, float("nan")])
def test_decay_outside_zero_one_is_refused(value):
    with pytest.raises(ConfigError, match="train.ema_decay"):
        ebmkit.load_config(train={"ema_decay": value})


def test_unset_or_zero_is_off():
    assert ebmkit.load_config().train.ema is None
    assert ebmkit.load_config(train={"ema_decay": 0.0}).train.ema is None
    assert ebmkit.load_config(overrides=["train.ema_decay=0.999"]).train.ema == 0.999


def test_off_keeps_no_average_anywhere(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.state.ema_params is None and trainer.model.evaluate_with == "live"
    trainer.fit()
    assert trainer.state.ema_params is None and trainer.model.ema_params is None
    # The checkpoint format is the one written before parameter EMA existed.
    assert not any(k.startswith("ema_params") for k in host(trainer.state))
    meta = Checkpointer(tmp_path / "checkpoints").metadata()
    assert meta["ema_decay"] is None
    with pytest.raises(ValueError, match="ema_decay"):
        trainer.model.evaluate_with = "ema"
    with pytest.raises(ValueError, match="expected one of"):
        trainer.model.evaluate_with = "average"


def test_average_never_changes_training():
    """Chains run on the live parameters: with or without the average, the
    live trajectory is the same, bit for bit (fused calls included)."""
    off = make_trainer(steps_per_call=3)
    off.fit()
    on = make_trainer(steps_per_call=3, ema_decay=0.9)
    on.fit()
    a, b = host(off.state), host(on.state)
    assert {k for k in b if k.startswith("ema_params")} and set(a) == {k for k in b if not k.startswith("ema_params")}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_average_matches_a_host_reference_per_step_and_fused():
    decay = 0.7
    model, _ = make_model(ema_decay=decay)
    start = model.train_state()
    ema = host(start.energy_params)
    initial = host(start.ema_params)
    for key in ema:  # a bias-free start: the average begins at the parameters
        np.testing.assert_array_equal(initial[key], ema[key], err_msg=key)
    # One step per call: the host reference from the parameter trajectory.
    step = model.train_step_fn()
    state = jax.tree.map(jnp.copy, start)
    xs = batches(4)
    for x in xs:
        state, _ = step(state, Batch(jnp.asarray(x)))
        params = host(state.energy_params)
        ema = {k: decay * ema[k] + (1 - decay) * params[k] for k in ema}
    got = host(state.ema_params)
    for key in ema:
        np.testing.assert_allclose(got[key], ema[key], rtol=1e-6, atol=1e-7, err_msg=key)
    assert max(np.max(np.abs(got[k] - params[k])) for k in got) > 1e-4  # not just the parameters
    # Four steps in one scanned call: the same average.
    many = jax.jit(fuse_steps(model.train_step_fn(jit=False), 1e4))
    fused, _ = many(jax.tree.map(jnp.copy, start), Batch(jnp.asarray(np.stack(xs))))
    got = host(fused.ema_params)
    for key in ema:
        np.testing.assert_allclose(got[key], ema[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_checkpoints_keep_the_average_and_resume_bit_exactly(tmp_path):
    full = make_trainer(tmp_path / "full", steps=8, ema_decay=0.8, checkpoint_every=4)
    full.fit()
    first = make_trainer(tmp_path / "split", steps=4, ema_decay=0.8)
    first.fit()
    saved = host(first.state)
    assert any(k.startswith("ema_params/") for k in saved)
    # Round trip: a new trainer restores the average as saved.
    again = make_trainer(tmp_path / "split", steps=4, ema_decay=0.8)
    assert again.restore() == 4
    restored = host(again.state)
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)
    second = make_trainer(tmp_path / "split", steps=8, ema_decay=0.8)
    second.fit(resume=True)
    a, b = host(full.state), host(second.state)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_from_a_checkpoint_without_the_average(tmp_path):
    old = make_trainer(tmp_path, steps=4)
    old.fit()
    at_four = host(old.state.energy_params)
    resumed = make_trainer(tmp_path, steps=4, ema_decay=0.5)
    with pytest.warns(RuntimeWarning, match="holds no parameter EMA"):
        assert resumed.restore() == 4
    # The average starts at the checkpoint's parameters.
    ema = host(resumed.state.ema_params)
    for key in at_four:
        np.testing.assert_array_equal(ema[key], at_four[key], err_msg=key)
    more = make_trainer(tmp_path, steps=6, ema_decay=0.5)
    with pytest.warns(RuntimeWarning, match="holds no parameter EMA"):
        more.fit(resume=True)
    assert more.step == 6 and np.all(np.isfinite(np.concatenate([v.ravel() for v in host(more.state.ema_params).values()])))
    # And back: a checkpoint with an average loads into a run without one.
    off = make_trainer(tmp_path, steps=6)
    assert off.restore() == 6 and off.state.ema_params is None


def test_sampling_and_evaluation_use_the_average():
    """Decay near 1 and a large learning rate: after a few steps the live
    parameters moved far while the average still sits at the initial ones,
    so evaluation must match an untrained model's."""
    decay = 1 - 1e-7
    trainer = make_trainer(evaluate=None, steps=5, learning_rate=0.05, ema_decay=decay)
    untrained, dataset = make_model(steps=5, learning_rate=0.05)
    x = jnp.asarray(dataset.held_out(64))
    result = trainer.fit()
    model = trainer.model
    assert model.evaluate_with == "ema"
    initial = np.asarray(untrained.energy(x))
    np.testing.assert_allclose(np.asarray(model.energy(x)), initial, rtol=1e-4, atol=1e-4)
    with model.evaluating_with("live"):
        live = np.asarray(model.energy(x))
    assert model.evaluate_with == "ema"
    assert np.max(np.abs(live - initial)) > 100 * 1e-4  # the live parameters did move
    key = jax.random.key(7)
    np.testing.assert_allclose(
        np.asarray(model.generate(32, rng_key=key)), np.asarray(untrained.generate(32, rng_key=key)),
        rtol=1e-3, atol=1e-3,
    )
    # The summary's evaluation is the average's; the live figures beside it.
    summary = result.summary
    assert summary["evaluated_with"] == "ema" and summary["ema_decay"] == decay
    expected = evaluate_dataset(untrained.energy, dataset)
    assert summary["nll"] == pytest.approx(expected["nll"], abs=1e-3)
    with model.evaluating_with("live"):
        assert summary["live_nll"] == pytest.approx(evaluate_dataset(model.energy, dataset)["nll"], abs=1e-3)
    assert abs(summary["live_nll"] - summary["nll"]) > 1e-2


def test_reopened_run_samples_with_the_average(tmp_path):
    from ebmkit.run import open_run

    trainer = make_trainer(tmp_path, steps=4, learning_rate=0.05, ema_decay=0.6, checkpoint_every=2)
    trainer.fit()
    x = jnp.asarray(trainer.dataset.held_out(16))
    run = open_run(tmp_path)
    assert run.model.evaluate_with == "ema"
    np.testing.assert_array_equal(np.asarray(run.model.energy(x)), np.asarray(trainer.model.energy(x)))
    np.testing.assert_array_equal(np.asarray(run.model.energy(x)), np.asarray(trainer.energy_fn()(x)))
    with run.model.evaluating_with("live"):
        np.testing.assert_array_equal(np.asarray(run.model.energy(x)), np.asarray(trainer.energy_fn("live")(x)))


_TWO_DEVICES = textwrap.dedent(
    r"""
    import json, sys
    import jax, numpy as np
    import ebmkit
    from ebmkit.components import build_dataset
    from ebmkit.training import Trainer
    from ebmkit.training.checkpoint import flatten_state

    decay = 0.7
    config = ebmkit.load_config(
        {"energy": {"name": "mlp", "hidden_dims": [16]}, "sampler": {"name": "langevin", "num_steps": 2},
         "buffer": {"name": "replay", "capacity": 32}, "dataset": "8gaussians"},
        train={"steps": 6, "batch_size": 16, "checkpoint_every": 0, "ema_decay": decay},
        distributed={"devices": 2})
    data = build_dataset(config.dataset)

    def make():
        return Trainer(ebmkit.EBM(config, event_shape=(2,), data_bounds=data.bounds), data,
                       run_dir=sys.argv[1], evaluate=lambda t: {}, hooks=False)

    host = lambda tree: {k: np.asarray(v, np.float64) for k, v in flatten_state(jax.device_get(tree)).items()}
    trainer = make()
    ema = host(trainer.state.energy_params)
    for _ in range(4):  # one step per call: the host reference sees every step
        trainer.state, _ = trainer._step(trainer.state, trainer._device_batches(1))
        params = host(trainer.state.energy_params)
        ema = {k: decay * ema[k] + (1 - decay) * params[k] for k in ema}
    got = host(trainer.state.ema_params)
    errors = [float(np.max(np.abs(got[k] - ema[k]))) for k in ema]
    fused = make()  # the same data and keys, two steps per call
    for _ in range(2):
        fused.state, _ = fused._step(fused.state, fused._device_batches(2))
    fused_got = host(fused.state.ema_params)
    fused_errors = [float(np.max(np.abs(fused_got[k] - ema[k]))) for k in ema]
    replicated = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(trainer.state.ema_params))
    trainer.step = 4
    trainer.save_checkpoint()
    again = make()
    again.restore()
    restored = host(again.state.ema_params)
    print("REPORT " + json.dumps({"devices": jax.device_count(), "max_error": max(errors),
                                  "fused_max_error": max(fused_errors),
                                  "replicated": replicated,
                                  "restored_equal": all(np.array_equal(restored[k], got[k]) for k in got)}))
    """
)


def test_average_on_two_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["devices"] == 2
    assert report["max_error"] < 1e-6
    assert report["fused_max_error"] < 1e-4
    assert report["replicated"] and report["restored_equal"]
