"""contrib/ebmkit-blackjax: an outside distribution plugs in with no special casing.

The plugin is found through its ``ebmkit.samplers`` entry points only. When the
distribution is not installed (``pip install -e contrib/ebmkit-blackjax``), the
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

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "ebmkit-blackjax"
PYPROJECT = tomllib.loads((CONTRIB / "pyproject.toml").read_text(encoding="utf-8"))
DIST = "ebmkit-blackjax"
SAMPLERS = {
    "blackjax_mala": "ebmkit_blackjax.mala:spec",
    "blackjax_hmc": "ebmkit_blackjax.hmc:spec",
    "blackjax_nuts": "ebmkit_blackjax.nuts:spec",
    "blackjax_mclmc": "ebmkit_blackjax.mclmc:spec",
}


@pytest.fixture
def blackjax_plugin(tmp_path, monkeypatch):
    """Make sure ebmkit-blackjax is discoverable; yields its version."""
    try:
        dist = md.distribution(DIST)
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


def test_declares_four_sampler_entry_points():
    project = PYPROJECT["project"]
    assert project["name"] == DIST
    assert any(dep.startswith("ebmkit-jax") for dep in project["dependencies"])
    assert any(dep.startswith("blackjax>=1.7") for dep in project["dependencies"])
    assert project["entry-points"] == {"ebmkit.samplers": SAMPLERS}


def test_samplers_are_listed_without_being_imported(blackjax_plugin):
    rows = sorted(
        (r.kind, r.name, r.dist, r.version, r.target) for r in registry.listing() if r.dist == DIST
    )
    assert rows == sorted(("sampler", name, DIST, blackjax_plugin, target) for name, target in SAMPLERS.items())
    summaries = {r.name: r.summary for r in registry.listing() if r.dist == DIST}
    assert summaries["blackjax_nuts"].startswith("No-U-Turn Sampler (BlackJAX)")
    assert {f"sampler:{name}" for name in SAMPLERS} <= {c.id for c in iter_registered()}

    code = (
        "import sys, ebmkit\n"
        f"names = {{r.name for r in ebmkit.registry.listing() if r.dist == {DIST!r}}}\n"
        f"assert names == {set(SAMPLERS)!r}, names\n"
        "assert not any(m.startswith('ebmkit_blackjax') for m in sys.modules)\n"
        "assert 'blackjax' not in sys.modules\n"
    )
    # A fresh interpreter that sees the same sys.path (and so the same plugins).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1800, env=env, cwd=str(Path(__file__).parent))
    assert out.returncode == 0, out.stderr


def test_samplers_are_selectable_like_builtins(blackjax_plugin):
    spec = ebmkit.get_spec("sampler", "blackjax_nuts")
    assert spec.config.__module__ == "ebmkit_blackjax.nuts"
    cfg = load_config(sampler="blackjax_nuts")
    assert type(cfg.sampler) is spec.config
    assert load_config(sampler={"name": "blackjax_nuts", "warmup_steps": 50}).sampler == spec.config(
        warmup_steps=50
    )
    assert load_config(overrides=["sampler=blackjax_hmc", "sampler.num_steps=3"]).sampler.num_steps == 3
    assert structure("ebmkit-blackjax:blackjax_mala", SamplerConfig) == ebmkit.get_spec(
        "sampler", "blackjax_mala"
    ).config()
    assert f"provider = \"{DIST} {blackjax_plugin}\"" in ebmkit.dump_config(cfg)


# The package's own tests run the suite over all four (test_blackjax_conformance);
# here one, found through the (possibly fake) distribution's entry point.
@pytest.mark.parametrize("name", ["blackjax_mala"])
def test_sampler_passes_conformance(blackjax_plugin, name):
    report = check_component("sampler", name)
    assert report.skipped == ()
    assert "chains move toward low energy (sign of the gradient)" in report.passed
    assert "leaves a Gaussian target invariant (mean and variance)" in report.passed
