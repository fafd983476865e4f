"""contrib/ebmkit-mala: an outside distribution plugs in with no special casing.

The plugin is found through its ``ebmkit.samplers`` entry point only. When the
distribution is not installed (``pip install -e contrib/ebmkit-mala``), the
fixture installs it as a fake distribution built from the entry points its own
pyproject.toml declares, so what is tested is still that declaration.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fakedist import make_dist

import ebmkit
from ebmkit import registry
from ebmkit.config import SamplerConfig, load_config, structure
from ebmkit.testing import check_component, iter_registered

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "ebmkit-mala"
PYPROJECT = tomllib.loads((CONTRIB / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture
def mala(tmp_path, monkeypatch):
    """Make sure ebmkit-mala is discoverable; yields its version."""
    try:
        dist = md.distribution("ebmkit-mala")
    except md.PackageNotFoundError:
        project = PYPROJECT["project"]
        make_dist(tmp_path, project["name"], project["version"], project["entry-points"], {})
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.syspath_prepend(str(CONTRIB))
        registry.invalidate_caches()
        yield project["version"]
        registry.invalidate_caches()
        return
    yield dist.version


def test_declares_one_sampler_entry_point():
    project = PYPROJECT["project"]
    assert project["name"] == "ebmkit-mala"
    assert any(dep.startswith("ebmkit-jax") for dep in project["dependencies"])
    assert project["entry-points"] == {"ebmkit.samplers": {"mala": "ebmkit_mala.mala:spec"}}


def test_mala_is_listed_without_being_imported(mala):
    rows = [r for r in registry.listing() if r.name == "mala"]
    assert [(r.kind, r.dist, r.version, r.target) for r in rows] == [
        ("sampler", "ebmkit-mala", mala, "ebmkit_mala.mala:spec")
    ]
    assert rows[0].summary.startswith("Metropolis-adjusted Langevin")
    assert any(c.id == "sampler:mala" for c in iter_registered())

    code = (
        "import sys, ebmkit\n"
        "assert any(r.name == 'mala' for r in ebmkit.registry.listing())\n"
        "assert 'ebmkit_mala.mala' not in sys.modules\n"
    )
    # A fresh interpreter that sees the same sys.path (and so the same plugins).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1800, env=env, cwd=str(Path(__file__).parent))
    assert out.returncode == 0, out.stderr


def test_mala_is_selectable_like_a_builtin(mala):
    spec = ebmkit.get_spec("sampler", "mala")
    assert spec.config.__module__ == "ebmkit_mala.mala"
    cfg = load_config(sampler="mala")
    assert type(cfg.sampler) is spec.config
    assert load_config(sampler={"name": "mala", "step_size": 0.05}).sampler == spec.config(step_size=0.05)
    assert load_config(overrides=["sampler=mala", "sampler.num_steps=3"]).sampler.num_steps == 3
    assert structure("ebmkit-mala:mala", SamplerConfig) == spec.config()
    assert f"provider = \"ebmkit-mala {mala}\"" in ebmkit.dump_config(cfg)


def test_mala_passes_conformance(mala):
    report = check_component("sampler", "mala")
    assert report.skipped == ()
    assert "chains move toward low energy (sign of the gradient)" in report.passed
