"""Fault injection: kill -9 at random points, two writers, corrupt files, signals.

A run killed anywhere — between checkpoints, during a save, after its last
checkpoint — resumes to the same bits as a run never interrupted, and
finishes with its summary and plots.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ebmkit.training.checkpoint import Checkpointer

SETS = ["energy.hidden_dims=[16,16]", "sampler.num_steps=3", "buffer.capacity=512", "train.batch_size=32",
        "train.steps=60", "train.log_every=5", "train.checkpoint_every=10"]
ENV = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}


def _cmd(out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "ebmkit.cli", "train", "--out", str(out), "--no-progress", *extra]
    for s in SETS:
        args += ["--set", s]
    return args


def _final_state(out: Path) -> dict:
    checkpoints = Checkpointer(out / "checkpoints")
    step = checkpoints.latest_step()
    meta = checkpoints.metadata(step)
    assert step == 60 and meta["verified_finite"]
    restored = checkpoints._manager.restore(step)  # noqa: SLF001 - the raw arrays, no template needed
    return {k: np.asarray(v) for k, v in restored["state"].items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = subprocess.run(_cmd(out), capture_output=True, text=True, env=ENV, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _final_state(out)


def _kill_when(out: Path, predicate, delay: float) -> int:
    """Start a run, wait until ``predicate(out)`` holds, sleep ``delay``, kill -9."""
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and proc.poll() is None and not predicate(out):
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=1800)
    return proc.returncode


def _metrics_rows(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize(
    "name, predicate, delay",
    [
        ("between checkpoints", lambda out: _metrics_rows(out) >= 3, 0.0),
        ("around a save", lambda out: (out / "checkpoints" / "20").exists(), 0.0),
        ("after the last checkpoint", lambda out: (out / "checkpoints" / "60").exists(), 0.05),
    ],
)
def test_killed_anywhere_resumes_to_the_same_bits(tmp_path, reference, name, predicate, delay):
    out = tmp_path / "run"
    _kill_when(out, predicate, delay)
    proc = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, env=ENV, timeout=1800)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    assert (out / "summary.json").is_file() and (out / "curves.png").is_file()
    final = _final_state(out)
    assert final.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(final[key], reference[key], err_msg=f"{name}: {key}")
    steps = [int(line.split('"step": ')[1].split(",")[0].split("}")[0])
             for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5)), f"{name}: metrics rows {steps}"


def test_sigterm_saves_and_exits_143(tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(_cmd(out, "--steps", "1000000"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and proc.poll() is None and _metrics_rows(out) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "--resume" in err


def test_a_full_disk_is_one_line(tmp_path):
    """A file-size limit makes the first checkpoint's write fail (as a full disk would)."""
    import resource

    def limit():  # in the child only: 60 KiB per file
        resource.setrlimit(resource.RLIMIT_FSIZE, (60 * 1024, 60 * 1024))

    out = tmp_path / "full"
    cmd = _cmd(out, "--steps", "20", "--set", "buffer.capacity=20000")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800, preexec_fn=limit)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "File too large" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]


def test_two_writers_at_once_the_second_is_refused(tmp_path):
    out = tmp_path / "two"
    first = subprocess.Popen(_cmd(out, "--steps", "1000000"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and first.poll() is None and _metrics_rows(out) < 1:
        time.sleep(0.05)
    second = subprocess.run(_cmd(out), capture_output=True, text=True, env=ENV, timeout=1800)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=1800)
    assert second.returncode == 1
    assert f"being written by another ebmkit process (pid {first.pid})" in second.stderr, second.stderr[-2000:]
    assert first.returncode == 130
