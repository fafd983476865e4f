"""The ``ebmkit`` command line, against fake installed distributions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakedist import make_dist

import ebmkit
import ebmkit.registry
from ebmkit.cli import cli, parse_attributes_section
from ebmkit.plugins import reset_plugin_manager

COMPONENTS = """
    from ebmkit.config import (
        BufferConfig, DatasetConfig, EnergyConfig, LossConfig, SamplerConfig, config_class, positive,
    )
    import attrs
    from ebmkit.registry import ComponentSpec


    @config_class
    class ToyEnergyConfig(EnergyConfig):
        '''A toy energy.

        Attributes:
            hidden_dims: widths of the hidden
                layers, input to output.
            scale (float): multiplies the energy.
            activation: ``tanh`` or ``relu``.
            temperature: divides the energy when set.
        '''

        hidden_dims: tuple[int, ...] = (8, 8)
        scale: float = attrs.field(default=1.0, validator=positive)
        activation: str = "tanh"
        temperature: float | None = None


    @config_class
    class ToySamplerConfig(SamplerConfig):
        step_size: float = 0.1


    @config_class
    class ToyLossConfig(LossConfig):
        pass


    @config_class
    class ToyBufferConfig(BufferConfig):
        capacity: int = 100


    @config_class
    class ToyDataConfig(DatasetConfig):
        num_points: int = 64


    @config_class
    class ThingDataConfig(DatasetConfig):
        pass


    def build(config):
        return config


    energy = ComponentSpec("energy", "toy_energy", ToyEnergyConfig, build, summary="A toy energy for CLI tests")
    sampler = ComponentSpec("sampler", "toy_sampler", ToySamplerConfig, build, summary="A toy sampler")
    loss = ComponentSpec("loss", "toy_loss", ToyLossConfig, build, summary="A toy loss")
    buffer = ComponentSpec("buffer", "toy_buffer", ToyBufferConfig, build, summary="A toy buffer")
    data = ComponentSpec("dataset", "toy_data", ToyDataConfig, build, summary="A toy data set")
    thing_energy = ComponentSpec("energy", "thing", ToyEnergyConfig, build)
    thing_data = ComponentSpec("dataset", "thing", ThingDataConfig, build)
"""

MODULE = "fake_testkit_components"

TESTKIT_EPS = {
    "ebmkit.energies": {"toy_energy": f"{MODULE}:energy", "thing": f"{MODULE}:thing_energy"},
    "ebmkit.samplers": {"toy_sampler": f"{MODULE}:sampler"},
    "ebmkit.losses": {"toy_loss": f"{MODULE}:loss"},
    "ebmkit.buffers": {"toy_buffer": f"{MODULE}:buffer"},
    "ebmkit.datasets": {"toy_data": f"{MODULE}:data", "thing": f"{MODULE}:thing_data"},
}

CONFIG = """
    energy = { name = "toy_energy", scale = 2.0 }
    sampler = "toy_sampler"
    loss = "toy_loss"
    buffer = "toy_buffer"
    dataset = "toy_data"

    [train]
    steps = 10
"""


class Env:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.monkeypatch = monkeypatch
        self.runner = CliRunner()

    def dist(self, name: str, entry_points: dict, modules: dict, version: str = "1.0") -> Path:
        where = self.root / name
        make_dist(where, name, version, entry_points, modules)
        self.monkeypatch.syspath_prepend(str(where))
        self.reload()
        return where

    def testkit(self) -> Path:
        return self.dist("fake-testkit", TESTKIT_EPS, {MODULE: COMPONENTS})

    def reload(self) -> None:
        ebmkit.registry.invalidate_caches()
        reset_plugin_manager()

    def run(self, *args: str):
        return self.runner.invoke(cli, list(args))

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("EBMKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("EBMKIT_DISABLE_PLUGINS", raising=False)
    e = Env(tmp_path, monkeypatch)
    e.reload()
    yield e
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]
    monkeypatch.undo()
    e.reload()


# -- ebmkit plugins ---------------------------------------------------------------


def test_plugins_table_lists_builtins(env):
    result = env.run("plugins")
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["kind", "name", "distribution", "version", "status", "summary"]
    rows = {tuple(line.split()[:3]) for line in result.output.splitlines()[2:]}
    for kind, name in [("energy", "mlp"), ("sampler", "langevin"), ("loss", "pcd"),
                       ("buffer", "replay"), ("dataset", "8gaussians")]:
        assert (kind, name, "ebmkit-jax") in rows
    assert env.run("plugins", "list").output == result.output


def test_plugins_json(env):
    env.testkit()
    result = env.run("plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_key = {(r["kind"], r["name"], r["dist"]): r for r in rows}
    mlp = by_key["energy", "mlp", "ebmkit-jax"]
    assert mlp["version"] == ebmkit.__version__
    assert mlp["target"] == "ebmkit_builtins.energies.mlp:spec"
    toy = by_key["energy", "toy_energy", "fake-testkit"]
    assert (toy["status"], toy["summary"]) == ("available", "A toy energy for CLI tests")
    assert set(toy) == {"kind", "name", "dist", "version", "target", "status", "summary", "error"}
    assert json.loads(env.run("plugins", "list", "--json", "--kind", "sampler").output) == [
        r for r in rows if r["kind"] == "sampler"
    ]


def test_conflicting_names_show_both_providers(env):
    env.testkit()
    env.dist("fake-rival", {"ebmkit.energies": {"toy_energy": "fake_rival:spec"}},
             {"fake_rival": "raise ImportError('never imported by a listing')"})
    rows = json.loads(env.run("plugins", "--json", "--kind", "energy").output)
    toy = [(r["dist"], r["status"]) for r in rows if r["name"] == "toy_energy"]
    assert toy == [("fake-rival", "conflict"), ("fake-testkit", "conflict")]
    table = env.run("plugins").output.splitlines()
    rows = [line.split()[:5] for line in table if " toy_energy " in f" {line} "]
    assert [r[2] for r in rows[:2]] == ["fake-rival", "fake-testkit"]
    assert all(r[4] == "conflict" for r in rows[:2])
    assert any("provided by several distributions" in line for line in table)


def test_listing_imports_no_plugin_module(env):
    where = env.testkit()
    code = (
        "import sys; from ebmkit.cli import cli; cli.main(['plugins'], standalone_mode=False); "
        "print(sorted(m for m in sys.modules if m.startswith(('ebmkit_builtins', 'fake_'))))"
    )
    pythonpath = os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800,
        env={**os.environ, "PYTHONPATH": pythonpath},
    ).stdout
    assert "A toy energy for CLI tests" in out  # summaries are read without importing
    assert out.splitlines()[-1] == "[]"


def test_show_prints_fields_defaults_and_docs(env):
    env.testkit()
    result = env.run("plugins", "show", "toy_energy")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "toy_energy (energy): A toy energy for CLI tests" in out
    assert "provider: fake-testkit 1.0" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "[8, 8]" in lines["hidden_dims"]
    assert "widths of the hidden layers, input to output." in lines["hidden_dims"]
    assert "1.0" in lines["scale"] and "multiplies the energy." in lines["scale"]
    assert '"tanh"' in lines["activation"] and "`tanh` or `relu`." in lines["activation"]
    assert "(unset)" in lines["temperature"]


def test_show_ambiguous_and_unknown_names(env):
    env.testkit()
    ambiguous = env.run("plugins", "show", "thing")
    assert ambiguous.exit_code == 2
    assert "energy, dataset" in ambiguous.output and "--kind" in ambiguous.output
    assert env.run("plugins", "show", "thing", "--kind", "dataset").exit_code == 0
    unknown = env.run("plugins", "show", "toy_enrgy")
    assert unknown.exit_code == 2
    (line,) = unknown.output.strip().splitlines()
    assert line.startswith("Error: no component named 'toy_enrgy'; did you mean 'toy_energy'")


def test_show_broken_component_is_a_clean_error(env):
    env.dist("fake-broken", {"ebmkit.energies": {"broken_energy": "fake_broken_mod:spec"}},
             {"fake_broken_mod": "raise RuntimeError('kaput')"}, version="2.1")
    result = env.run("plugins", "show", "broken_energy")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "fake-broken 2.1" in result.output and "kaput" in result.output


def test_check(env, monkeypatch):
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "ebmkit-jax")  # independent of built-ins
    env.testkit()
    ok = env.run("plugins", "check")
    assert ok.exit_code == 0, ok.output
    assert "ok        energy toy_energy (fake-testkit 1.0)" in ok.output
    assert "disabled  energy mlp (ebmkit-jax" in ok.output
    env.dist("fake-broken", {"ebmkit.samplers": {"broken_sampler": "fake_broken_mod:spec"}},
             {"fake_broken_mod": "raise RuntimeError('kaput')"})
    bad = env.run("plugins", "check")
    assert bad.exit_code == 1
    (line,) = [line for line in bad.output.splitlines() if "broken_sampler" in line]
    assert line.startswith("FAILED") and "fake-broken 1.0" in line and "kaput" in line
    assert "ok        sampler toy_sampler" in bad.output


def test_check_reports_conflicts(env, monkeypatch):
    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "ebmkit-jax")
    env.testkit()
    env.dist("fake-rival", {"ebmkit.losses": {"toy_loss": f"{MODULE}:loss"}}, {})
    result = env.run("plugins", "check")
    assert result.exit_code == 1
    assert "CONFLICT  loss toy_loss (fake-rival 1.0): also provided by fake-testkit:toy_loss" in result.output


# -- ebmkit config ----------------------------------------------------------------


def test_config_validate_ok_and_errors(env):
    env.testkit()
    good = env.write("good.toml", CONFIG)
    result = env.run("config", "validate", str(good))
    assert (result.exit_code, result.output) == (0, "ok\n")
    bad = env.run("config", "validate", str(good), "--set", "energy.scael=3.0", "--set", "train.steps=-1")
    assert bad.exit_code == 1
    assert "Traceback" not in bad.output
    assert "2 problems" in bad.output
    assert "unexpected field 'scael'" in bad.output and "did you mean 'scale'" in bad.output
    assert "train.steps" in bad.output and str(good) in bad.output
    fixed = env.run("config", "validate", str(good), "--set", "energy.scale=0.5")
    assert fixed.exit_code == 0
    missing = env.run("config", "validate", str(env.root / "nope.toml"))
    assert missing.exit_code == 1 and "file not found" in missing.output


def test_config_dump_round_trip(env):
    env.testkit()
    src = env.write("run.toml", CONFIG)
    out = env.root / "resolved.toml"
    result = env.run("config", "dump", str(src), "--set", "sampler.step_size=0.25", "-o", str(out))
    assert result.exit_code == 0, result.output
    expected = ebmkit.load_config(src, overrides=["sampler.step_size=0.25"])
    assert ebmkit.load_config(out) == expected
    printed = env.run("config", "dump", str(src), "--set", "sampler.step_size=0.25")
    data = tomllib.loads(printed.output)
    assert data["energy"]["provider"] == "fake-testkit 1.0"
    assert data["energy"]["hidden_dims"] == [8, 8]
    assert data["sampler"]["step_size"] == 0.25
    assert ebmkit.load_config(data) == expected
    as_json = env.root / "resolved.json"
    assert env.run("config", "dump", str(src), "-o", str(as_json)).exit_code == 0
    assert ebmkit.load_config(as_json) == ebmkit.load_config(src)


def test_config_dump_unknown_component_is_a_clean_error(env):
    env.testkit()
    src = env.write("run.toml", CONFIG.replace('"toy_sampler"', '"toy_smapler"'))
    result = env.run("config", "dump", str(src))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "did you mean 'toy_sampler'" in result.output


def test_version_and_usage_errors(env):
    result = env.run("--version")
    assert result.exit_code == 0 and ebmkit.__version__ in result.output
    assert env.run("config", "validate").exit_code == 2
    assert env.run("plugins", "show", "mlp", "--kind", "nope").exit_code == 2


def test_parse_attributes_section():
    doc = """Summary.

    Attributes:
        a (int): first
            continued.
        b: second; has a colon: here.

    Returns:
        c: not an attribute.
    """
    assert parse_attributes_section(doc) == {"a": "first continued.", "b": "second; has a colon: here."}


def test_tables_wrap_cells_not_rows_to_fit_the_terminal():
    from ebmkit.cli import _table

    text = _table([("energy", "mlp", "word " * 30), ("sampler", "hmc", "short")], ["kind", "name", "summary"], width=60)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 60
    assert lines[2].startswith("energy   mlp   word") and lines[3].startswith(" " * 15 + "word")
    assert any(line.startswith("sampler  hmc   short") for line in lines)
