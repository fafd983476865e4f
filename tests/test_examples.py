"""Every shipped example config loads, builds and (for a couple) trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ebmkit
from ebmkit.components import build_dataset, data_context
from ebmkit.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").rglob("*.toml"))


def test_there_is_an_example_for_every_built_in_dataset():
    built_in = {r.name for r in ebmkit.registry.listing() if r.kind == "dataset" and r.dist == "ebmkit-jax"}
    covered = set()
    for path in EXAMPLES:
        data = ebmkit.config.read_config_file(path)["dataset"]
        covered.add(data if isinstance(data, str) else data["name"])
    assert built_in <= covered, f"no example for {sorted(built_in - covered)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT / "examples").with_suffix("")) for p in EXAMPLES])
def test_example_builds(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # example paths are relative to the repository root
    config = ebmkit.load_config(path)
    dataset = build_dataset(config.dataset)
    model = ebmkit.EBM(config, data=data_context(dataset))  # the data's shape, bounds and support
    x = dataset.sample(np.random.default_rng(0), 4)
    assert model.energy(x).shape == (4,)


@pytest.mark.parametrize("name", ["8gaussians", "digits_deep"])
def test_example_trains_a_few_steps(name, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    overrides = ["train.steps=4", "train.log_every=2", "train.batch_size=16", "sampler.num_steps=2"]
    config = ebmkit.load_config(ROOT / "examples" / f"{name}.toml", overrides=overrides)
    dataset = build_dataset(config.dataset)
    model = ebmkit.EBM(config, event_shape=dataset.event_shape, data_bounds=dataset.bounds)
    result = Trainer(model, dataset, run_dir=tmp_path).fit()
    assert result.step == 4
    assert np.isfinite(result.history[-1]["loss"])
