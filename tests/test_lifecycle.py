"""A run you can trust from start to finish: no diverged state on disk, one
writer per run directory, resume at or past the end, the run's own config on
resume, history kept across resumes, interrupts that save and say how to go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import ebmkit
from ebmkit.job import run_lock
from ebmkit.training.checkpoint import Checkpointer

TINY = ["energy.hidden_dims=[16,16]", "sampler.num_steps=3", "buffer.capacity=512", "train.batch_size=32"]


def _job(out: Path, *sets: str, **kwargs):
    return ebmkit.train_job(None, overrides=[*TINY, *sets], out=out, plots=False, **kwargs)


def test_a_diverged_state_never_reaches_disk(tmp_path):
    """Divergence between two logged steps is caught before the checkpoint due
    in between: the checkpoint cadence is finer than the logging one here."""
    out = tmp_path / "div"
    with pytest.raises(ebmkit.TrainingDiverged) as info:
        _job(out, "train.learning_rate=10", "train.log_every=100", "train.checkpoint_every=5", "train.steps=300")
    assert "rolled back" in str(info.value)
    checkpoints = Checkpointer(out / "checkpoints")
    for step in checkpoints.steps():
        assert checkpoints.metadata(step)["verified_finite"] is True
    # What is on disk restores finite: reopen the last checkpoint.
    run = ebmkit.open_run(out)
    state = run.model.train_state()._replace(rng_key=None)
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_one_writer_per_run_directory(tmp_path):
    out = tmp_path / "locked"
    with run_lock(out):
        with pytest.raises(ebmkit.RunDirectoryError, match=rf"pid {os.getpid()}"):
            _job(out, "train.steps=10")
    # Released: the next writer gets in, and a killed holder would leave no lock (an OS lock).
    assert _job(out, "train.steps=10", "train.log_every=5")["steps"] == 10


def test_resume_finishes_a_complete_run_and_refuses_fewer_steps(tmp_path):
    out = tmp_path / "done"
    _job(out, "train.steps=20", "train.log_every=10", "train.checkpoint_every=10")
    (out / "summary.json").unlink()  # as if killed after the last checkpoint, before the summary
    again = ebmkit.train_job(None, out=out, resume=True, plots=False)
    assert again["steps"] == 20 and "already reached step 20" in again["note"]
    assert (out / "summary.json").is_file()
    with pytest.raises(ebmkit.CheckpointError, match="past the 10 steps asked for"):
        ebmkit.train_job(None, out=out, resume=True, overrides=["train.steps=10"], plots=False)


def test_resume_uses_the_runs_own_config_and_records_changes(tmp_path):
    out = tmp_path / "own"
    _job(out, "train.steps=20", "train.log_every=5", "train.checkpoint_every=10")
    rows = (out / "metrics.jsonl").read_text().splitlines()
    # Drop the last checkpoint: the resume redoes steps 11-20, whose rows must not repeat.
    import shutil

    shutil.rmtree(out / "checkpoints" / "20")
    summary = ebmkit.train_job(None, out=out, resume=True, overrides=["train.steps=30", "train.learning_rate=5e-4"],
                               plots=False)
    assert summary["steps"] == 30
    saved = ebmkit.load_config(out / "config.toml")
    assert saved.energy.hidden_dims == (16, 16) and saved.train.steps == 30  # not the default config
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30] and len(rows) == 4
    change = json.loads((out / "resumes.jsonl").read_text().splitlines()[-1])
    assert change["changes"]["train.steps"] == [20, 30]
    assert change["changes"]["train.learning_rate"] == [0.001, 0.0005]
    with pytest.raises(ebmkit.RunDirectoryError, match="cannot change energy.hidden_dims"):
        ebmkit.train_job(None, out=out, resume=True, overrides=["energy.hidden_dims=[8]"], plots=False)


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "ebmkit.cli", "train", "--out", str(out), "--steps", "1000000",
           *[a for s in [*TINY, "train.log_every=10", "train.checkpoint_every=0"] for a in ("--set", s)]]
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 600  # generous: a loaded machine compiles slowly
    while time.monotonic() < deadline and proc.poll() is None and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT at step" in err and f"ebmkit train --out {out} --resume" in err
    step = int(err.split("stopped by SIGINT at step ")[1].split(";")[0])
    assert step in Checkpointer(out / "checkpoints").steps()


def test_progress_lines_off_a_terminal_and_the_scheduled_learning_rate(tmp_path, capsys):
    out = tmp_path / "lines"
    summary = ebmkit.train_job(
        None, overrides=[*TINY, "train.steps=20", "train.log_every=5", "train.lr_schedule=cosine"],
        out=out, plots=False, progress="lines",
    )
    err = capsys.readouterr().err
    assert "compiling the training step" in err
    assert "step 20/20  loss" in err and "gap" in err and "steps/s" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [row["learning_rate"] for row in rows]
    # cosine from 1e-3 at step 0 to 0 at step 20: the logged rate is the one in force
    assert rates == sorted(rates, reverse=True) and rates[0] < 1e-3 and rates[-1] < 1e-6
    assert summary["steps"] == 20


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path):
    out = tmp_path / "corrupt"
    _job(out, "train.steps=20", "train.log_every=10", "train.checkpoint_every=10")
    data_files = sorted(p for p in (out / "checkpoints" / "20" / "state").rglob("*") if p.is_file()
                        and p.parent.name == "d" and p.stat().st_size > 1000)
    assert data_files
    rng = np.random.default_rng(0)
    for path in data_files:  # random bytes in the middle of every array file of step 20
        raw = bytearray(path.read_bytes())
        middle = len(raw) // 2
        raw[middle:middle + 256] = rng.integers(0, 256, 256, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match=r"checkpoints/20 is corrupt .* resumed from .*checkpoints/10"):
        run = ebmkit.open_run(out)
    assert run.step == 10
    with pytest.raises(ebmkit.CheckpointError, match="corrupt|unreadable|NaN"):
        Checkpointer(out / "checkpoints").restore(jax.device_get(run.trainer.state), 20)


def test_a_file_run_records_an_absolute_path_and_huge_text_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(folder / "points.csv", rng.normal(size=(200, 2)), delimiter=",")
    (folder / "run.toml").write_text('dataset = { name = "file", path = "points.csv" }\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ebmkit.train_job(folder / "run.toml", overrides=[*TINY, "train.steps=4"], out=tmp_path / "run", plots=False)
    saved = ebmkit.load_config(tmp_path / "run" / "config.toml")
    assert saved.dataset.path == str((folder / "points.csv").resolve())
    monkeypatch.chdir(tmp_path)
    assert ebmkit.open_run(tmp_path / "run").step == 4  # from any directory

    huge = folder / "huge.csv"
    with open(huge, "wb") as fh:
        fh.truncate(300 * 2**20)  # sparse: no disk used
    with pytest.raises(ebmkit.ConfigError, match="too large to parse"):
        ebmkit.train_job(None, overrides=[*TINY, "train.steps=2", f'dataset={{name="file", path="{huge}"}}'],
                         out=tmp_path / "huge", plots=False)
