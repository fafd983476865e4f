"""Discrete EBMs end to end: support checks at config time, a tiny RBM run on bits."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import ebmkit
from ebmkit.errors import ConfigError
from ebmkit.job import train_job


def test_continuous_samplers_on_bits_and_bit_samplers_on_points_are_config_errors():
    with pytest.raises(ConfigError) as info:
        ebmkit.assemble(dataset="binary_digits", energy="rbm", sampler="langevin")
    (problem,) = info.value.problems
    assert problem.path == "sampler" and "binary" in problem.message and "gibbs" in problem.suggestion
    with pytest.raises(ConfigError) as info:
        ebmkit.assemble(dataset="8gaussians", energy="rbm", sampler="gibbs")
    paths = {p.path: p for p in info.value.problems}
    assert set(paths) == {"energy", "sampler"}
    assert "mlp" in paths["energy"].suggestion and "langevin" in paths["sampler"].suggestion
    # The replay buffer and the losses take bits, and its fresh starts are bits.
    model = ebmkit.assemble(dataset="ising", energy="ising", sampler="gibbs", buffer={"name": "replay", "capacity": 64},
                            train={"batch_size": 16})
    starts = np.asarray(model.buffer.fresh(jax.random.key(0), 4000))
    assert set(np.unique(starts)) == {0.0, 1.0} and abs(starts.mean() - 0.5) < 0.01


def test_a_tiny_rbm_run_on_binary_digits_reports_its_exact_likelihood(tmp_path):
    config = {
        "dataset": "binary_digits",
        "energy": {"name": "rbm", "hidden": 16, "init_scale": 0.01},
        "sampler": {"name": "gibbs", "num_steps": 1},
        "loss": {"name": "pcd", "alpha": 0.0},  # maximum likelihood: no energy penalty
        "buffer": {"name": "replay", "capacity": 256},
        "train": {"steps": 150, "batch_size": 32, "learning_rate": 0.01, "log_every": 50},
    }
    summary = train_job(config, out=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["nll_exact"] == 1.0  # 16 hidden units: summed exactly
    assert written["log_likelihood"] == pytest.approx(-written["nll"])
    # An untrained RBM (W ≈ 0, biases 0) is uniform: 64 ln 2 nats. Training must beat it.
    assert summary["nll"] < 64 * math.log(2) - 5
    assert "samples.png" in summary["plots"]


def test_runs_without_a_buffer_start_chains_from_bits():
    model = ebmkit.assemble(dataset="binary_digits", energy="rbm", sampler="gibbs", loss="cd", train={"batch_size": 8})
    starts = np.asarray(model.fresh_starts.fresh(jax.random.key(0), 4000))
    assert set(np.unique(starts)) == {0.0, 1.0} and abs(starts.mean() - 0.5) < 0.01
    samples = np.asarray(model.generate(16, n_steps=2))
    assert samples.shape == (16, 8, 8, 1) and set(np.unique(samples)) <= {0.0, 1.0}
