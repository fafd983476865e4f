"""Plugin discovery and loading, exercised through fake installed distributions.

Every plugin here is a real ``*.dist-info`` directory with ``entry_points.txt``
on ``sys.path`` (see tests/fakedist.py), found by ``importlib.metadata`` exactly
as a ``pip install``-ed package would be. Nothing in the registry is mocked.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakedist import make_dist

import ebmkit
from ebmkit import errors, registry
from ebmkit.config import EnergyConfig, SamplerConfig, config_class, structure
from ebmkit.errors import (
    ComponentConflictError,
    ConfigError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from ebmkit.registry import ComponentSpec, parse_source

ROOT = Path(__file__).resolve().parents[1]
_counter = itertools.count()


def energy_module(name: str | None, *, summary: str = "A test energy", extra: str = "") -> str:
    """Source of a plugin module; exports ``spec`` for an energy ``name`` unless None."""
    source = textwrap.dedent(
        """
        import attrs
        from ebmkit.config import EnergyConfig, SamplerConfig, ConfigBase, config_class
        from ebmkit.registry import ComponentSpec

        @config_class
        class QuadConfig(EnergyConfig):
            \"\"\"Attributes: scale.\"\"\"

            scale: float = 1.0

        def build(config, *, event_shape, rngs):
            raise NotImplementedError
        """
    )
    source += "\n" + textwrap.dedent(extra).strip() + "\n"
    if name is not None:
        source += (
            f"\nspec = ComponentSpec(kind='energy', name={name!r}, config=QuadConfig, "
            f"build=build, summary={summary!r})\n"
        )
    return source


@pytest.fixture
def install(tmp_path, monkeypatch, fresh_registry):
    """``install(dist, version, {group: {name: target}}, {module: source})``.

    Each call writes one fake distribution into its own directory, prepends it
    to ``sys.path`` and forgets discovered entry points. Modules the test
    imported are dropped from ``sys.modules`` afterwards.
    """
    before = set(sys.modules)

    def _install(dist: str, version: str, entry_points: dict, modules: dict) -> Path:
        where = tmp_path / f"site{next(_counter)}"
        make_dist(where, dist, version, entry_points, modules)
        monkeypatch.syspath_prepend(str(where))
        registry.invalidate_caches()
        return where

    yield _install
    for name in set(sys.modules) - before:
        if name.startswith("fake_"):
            del sys.modules[name]


def unique(prefix: str) -> str:
    """A module name no other test uses (sys.modules outlives a test)."""
    return f"fake_{prefix}_{next(_counter)}"


def rows(kind: str, name: str) -> list[registry.ListingRow]:
    return [r for r in registry.listing() if r.kind == kind and r.name == name]


# -- a good plugin ------------------------------------------------------------------------


def test_good_plugin_is_listed_without_import_then_selectable_and_cached(install):
    mod = unique("good")
    install("acme-energies", "1.2.3", {"ebmkit.energies": {"quad": f"{mod}:spec"}},
            {mod: energy_module("quad", summary="Quadratic bowl")})

    (row,) = rows("energy", "quad")
    assert (row.dist, row.version, row.target, row.status) == ("acme-energies", "1.2.3", f"{mod}:spec", "available")
    assert row.summary == "Quadratic bowl"  # read from source, not by importing
    assert mod not in sys.modules
    assert "quad" in registry.get_registry("energy").names()
    assert mod not in sys.modules

    spec = ebmkit.get_spec("energy", "quad")
    assert isinstance(spec, ComponentSpec) and spec.name == "quad"
    assert mod in sys.modules
    assert rows("energy", "quad")[0].status == "loaded"
    assert ebmkit.get_spec("energy", "acme-energies:quad") is spec
    assert ebmkit.get_spec("energy", "Acme_Energies:quad") is spec  # PEP 503 names

    # Cached: the registry does not import again, even if the module went away.
    del sys.modules[mod]
    assert ebmkit.get_spec("energy", "quad") is spec
    assert mod not in sys.modules

    cfg = structure({"name": "quad", "scale": 2.0}, EnergyConfig)
    assert type(cfg) is spec.config and cfg.scale == 2.0


# -- a broken plugin ----------------------------------------------------------------------


def test_import_error_fails_only_the_selection_that_needs_it(install):
    bad, good = unique("bad"), unique("ok")
    install(
        "acme-broken",
        "0.9",
        {"ebmkit.energies": {"broken": f"{bad}:spec", "fine": f"{good}:spec"}},
        {bad: "raise RuntimeError('boom: missing CUDA')\n", good: energy_module("fine")},
    )

    # Listing and other names are unaffected: nothing was imported.
    assert [r.status for r in rows("energy", "broken")] == ["available"]
    assert ebmkit.get_spec("energy", "fine").name == "fine"

    with pytest.raises(PluginLoadError) as info:
        ebmkit.get_spec("energy", "broken")
    err = info.value
    message = str(err)
    for part in ("acme-broken", "0.9", f"{bad}:spec", "RuntimeError", "boom: missing CUDA"):
        assert part in message
    assert (err.dist, err.version, err.target) == ("acme-broken", "0.9", f"{bad}:spec")
    assert isinstance(err.__cause__, RuntimeError) and str(err.__cause__) == "boom: missing CUDA"

    # Recorded: the listing shows it failed, and a second selection fails the same way.
    (row,) = rows("energy", "broken")
    assert row.status == "failed" and "boom" in row.error
    with pytest.raises(PluginLoadError):
        ebmkit.get_spec("energy", "broken")
    assert ebmkit.get_spec("energy", "fine").name == "fine"
    assert rows("energy", "fine")[0].status == "loaded"

    # Through the config layer it is one located ConfigError problem.
    with pytest.raises(ConfigError) as cfg_info:
        structure({"name": "broken"}, EnergyConfig)
    assert "acme-broken" in str(cfg_info.value) and "boom" in str(cfg_info.value)


# -- conflicts ----------------------------------------------------------------------------


def test_two_distributions_one_name_is_a_conflict_for_that_name_only(install, monkeypatch):
    mod_a, mod_b = unique("a"), unique("b")
    install("dist-a", "1.0", {"ebmkit.energies": {"twin": f"{mod_a}:spec", "solo": f"{mod_a}:solo"}},
            {mod_a: energy_module("twin", extra="solo = None")})
    install("dist-b", "2.0", {"ebmkit.energies": {"twin": f"{mod_b}:spec"}},
            {mod_b: energy_module("twin")})

    with pytest.raises(ComponentConflictError) as info:
        ebmkit.get_spec("energy", "twin")
    message = str(info.value)
    for part in ("dist-a 1.0", "dist-b 2.0", f"{mod_a}:spec", f"{mod_b}:spec",
                 "'dist-a:twin'", "'dist-b:twin'", "EBMKIT_DISABLE_PLUGINS"):
        assert part in message
    assert mod_a not in sys.modules and mod_b not in sys.modules  # conflict found from metadata
    assert [r.status for r in rows("energy", "twin")] == ["conflict", "conflict"]

    spec_a = ebmkit.get_spec("energy", "dist-a:twin")
    spec_b = ebmkit.get_spec("energy", "dist-b:twin")
    assert spec_a.config.__module__ == mod_a and spec_b.config.__module__ == mod_b

    # Other names are unaffected (solo is broken on purpose: still only on selection).
    assert registry.get_registry("energy").resolve("solo").dist == "dist-a"
    assert registry.get_registry("energy").resolve("mlp").dist == "ebmkit-jax"

    monkeypatch.setenv("EBMKIT_DISABLE_PLUGINS", "Dist_B")  # normalised like pip names
    assert ebmkit.get_spec("energy", "twin") is spec_a
    assert {r.dist: r.status for r in rows("energy", "twin")} == {"dist-a": "loaded", "dist-b": "disabled"}
    with pytest.raises(UnknownComponentError):
        ebmkit.get_spec("energy", "dist-b:twin")


def test_third_party_mlp_conflicts_with_the_builtin_but_nothing_else(install):
    """Acceptance: a third-party ``energy:mlp`` makes plain "mlp" ambiguous,
    "ebmkit-jax:mlp" still selects the built-in, every other name is untouched."""
    names = {kind: registry.get_registry(kind).names() for kind in registry.KIND_GROUPS}
    before = {(k, n): registry.get_registry(k).resolve(n) for k, ns in names.items() for n in ns}
    assert before[("energy", "mlp")].target == "ebmkit_builtins.energies.mlp:spec"

    mod = unique("thirdparty_mlp")
    install("fancy-nets", "4.2.0", {"ebmkit.energies": {"mlp": f"{mod}:spec"}},
            {mod: energy_module("mlp")})

    with pytest.raises(ComponentConflictError) as info:
        ebmkit.get_spec("energy", "mlp")
    message = str(info.value)
    for part in (f"ebmkit-jax {ebmkit.__version__}", "ebmkit_builtins.energies.mlp:spec", "fancy-nets 4.2.0",
                 "'ebmkit-jax:mlp'", "'fancy-nets:mlp'", "EBMKIT_DISABLE_PLUGINS"):
        assert part in message
    with pytest.raises(ConfigError) as cfg_info:
        structure("mlp", EnergyConfig)
    assert "fancy-nets 4.2.0" in str(cfg_info.value) and "ebmkit-jax" in str(cfg_info.value)

    builtin = ebmkit.get_spec("energy", "ebmkit-jax:mlp")
    assert builtin.name == "mlp" and builtin.config.__module__ == "ebmkit_builtins.energies.mlp"
    assert type(structure("ebmkit-jax:mlp", EnergyConfig)) is builtin.config
    assert ebmkit.get_spec("energy", "fancy-nets:mlp").config.__module__ == mod

    after = {(k, n): registry.get_registry(k).resolve(n) for k, ns in names.items() for n in ns if (k, n) != ("energy", "mlp")}
    assert after == {key: p for key, p in before.items() if key != ("energy", "mlp")}
    assert {r.name for r in registry.listing() if r.status == "conflict"} == {"mlp"}


# -- invalid specs ------------------------------------------------------------------------


INVALID = {
    "wrong_kind": (
        'spec = ComponentSpec(kind="sampler", name="wrong_kind", config=QuadConfig, build=build)',
        "declares kind 'sampler' but is registered as a 'energy' component",
    ),
    "mismatch": (
        'spec = ComponentSpec(kind="energy", name="other_name", config=QuadConfig, build=build)',
        "declares name 'other_name' but its entry point is named 'mismatch'",
    ),
    "wrong_base": (
        textwrap.dedent(
            '''
            @config_class
            class StepConfig(SamplerConfig):
                step_size: float = 0.1

            spec = ComponentSpec(kind="energy", name="wrong_base", config=StepConfig, build=build)
            '''
        ),
        "must derive from ebmkit.config.EnergyConfig (it derives from the sampler base)",
    ),
    "plain_base": (
        textwrap.dedent(
            '''
            @config_class
            class PlainConfig(ConfigBase):
                width: int = 3

            spec = ComponentSpec(kind="energy", name="plain_base", config=PlainConfig, build=build)
            '''
        ),
        "must derive from ebmkit.config.EnergyConfig",
    ),
    "future_api": (
        'spec = ComponentSpec(kind="energy", name="future_api", config=QuadConfig, build=build, api=99)',
        "plugin API version 99",
    ),
    "not_a_spec": ("def spec(config):\n    return None", "expected an ebmkit.ComponentSpec, got function"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_spec_is_an_invalid_component_error_naming_the_plugin(install, name):
    body, expected = INVALID[name]
    mod, ok = unique(name), unique("ok")
    install("acme-invalid", "3.1", {"ebmkit.energies": {name: f"{mod}:spec", "fine": f"{ok}:spec"}},
            {mod: energy_module(None, extra=body), ok: energy_module("fine")})

    with pytest.raises(InvalidComponentError) as info:
        ebmkit.get_spec("energy", name)
    err = info.value
    assert isinstance(err, PluginLoadError)
    assert expected in str(err)
    for part in ("acme-invalid", "3.1", f"{mod}:spec"):
        assert part in str(err)
    assert (err.dist, err.version, err.target) == ("acme-invalid", "3.1", f"{mod}:spec")
    assert rows("energy", name)[0].status == "failed"
    assert ebmkit.get_spec("energy", "fine").name == "fine"


def test_config_with_positional_or_reserved_fields_is_rejected():
    import attrs

    @attrs.frozen
    class Positional(EnergyConfig):
        width: int = 3

    @config_class
    class Reserved(EnergyConfig):
        provider: str = "x"

    for cls, expected in ((Positional, "must be keyword-only"), (Reserved, "reserved field names ['provider']")):
        with pytest.raises(InvalidComponentError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            ebmkit.register(ComponentSpec(kind="energy", name="bad_cfg", config=cls, build=lambda c: c))
    assert "bad_cfg" not in registry.get_registry("energy").names()


# -- in-process registration --------------------------------------------------------------


@config_class
class LocalSamplerConfig(SamplerConfig):
    """Attributes: step_size."""

    step_size: float = 0.1


def local_spec(name: str, kind: str = "sampler") -> ComponentSpec:
    return ComponentSpec(kind=kind, name=name, config=LocalSamplerConfig, build=lambda c: c, summary="local")


def test_register_conflicts_with_an_installed_name_unless_replace():
    reg = registry.get_registry("sampler")
    spec = local_spec("langevin")
    with pytest.raises(ComponentConflictError) as info:
        ebmkit.register(spec)
    assert "ebmkit-jax" in str(info.value) and "local" in str(info.value)
    assert reg.resolve("langevin").dist == "ebmkit-jax"

    try:
        assert ebmkit.register(spec, replace=True) is spec
        assert ebmkit.get_spec("sampler", "langevin") is spec
        assert [r.dist for r in rows("sampler", "langevin")] == ["local"]
        assert ebmkit.get_spec("sampler", "local:langevin") is spec
    finally:
        reg.unregister("langevin")
    assert reg.resolve("langevin").dist == "ebmkit-jax"


def test_register_a_new_name_and_twice_is_a_conflict():
    reg = registry.get_registry("sampler")
    spec = local_spec("my_local_sampler")
    try:
        ebmkit.register(spec)
        assert ebmkit.get_spec("sampler", "my_local_sampler") is spec
        (row,) = rows("sampler", "my_local_sampler")
        assert (row.dist, row.status, row.summary) == ("local", "loaded", "local")
        with pytest.raises(ComponentConflictError):
            ebmkit.register(local_spec("my_local_sampler"))
    finally:
        reg.unregister("my_local_sampler")
    with pytest.raises(errors.InvalidComponentError):
        ebmkit.register("not a spec")  # type: ignore[arg-type]


def test_overlay_is_scoped_and_follows_the_same_rules():
    reg = registry.get_registry("sampler")
    spec, shadow = local_spec("scoped"), local_spec("hmc")
    with ebmkit.overlay(spec):
        assert ebmkit.get_spec("sampler", "scoped") is spec
        with ebmkit.overlay(local_spec("scoped"), replace=True):
            assert ebmkit.get_spec("sampler", "scoped") is not spec
        assert ebmkit.get_spec("sampler", "scoped") is spec
    assert "scoped" not in reg.names()
    with pytest.raises(UnknownComponentError):
        ebmkit.get_spec("sampler", "scoped")

    with pytest.raises(ComponentConflictError):
        with ebmkit.overlay(shadow):
            pass
    with ebmkit.overlay(shadow, replace=True):
        assert ebmkit.get_spec("sampler", "hmc") is shadow
    assert reg.resolve("hmc").dist == "ebmkit-jax"

    # A failing block still removes its layer.
    with pytest.raises(RuntimeError):
        with ebmkit.overlay(spec):
            raise RuntimeError
    assert "scoped" not in reg.names()

    with pytest.raises(InvalidComponentError, match="declares kind 'energy'"):
        with registry.get_registry("sampler").overlay(local_spec("x", kind="energy")):
            pass


# -- unknown names and the error hierarchy ------------------------------------------------


def test_unknown_name_suggests_and_lists_known_names():
    with pytest.raises(UnknownComponentError) as info:
        ebmkit.get_spec("sampler", "langevine")
    err = info.value
    message = str(err)
    assert "unknown sampler 'langevine'" in message
    assert "did you mean 'langevin'" in message
    for name in registry.get_registry("sampler").names():
        assert name in message
    assert err.suggestions[0] == "langevin"

    with pytest.raises(UnknownComponentError, match="did you mean 'energy'"):
        registry.get_registry("energies")
    with pytest.raises(UnknownComponentError, match="'ebmkit-jax:mlp'"):
        ebmkit.get_spec("energy", "nobody:mlp")
    with pytest.raises(UnknownComponentError):
        ebmkit.get_spec("energy", "")


def test_errors_never_subclass_key_error():
    classes = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    exceptions = [c for c in classes if issubclass(c, BaseException) and not issubclass(c, Warning)]
    assert {c.__name__ for c in exceptions} >= {
        "EbmkitError", "ConfigError", "UnknownComponentError", "ComponentConflictError",
        "PluginLoadError", "InvalidComponentError",
    }
    for cls in exceptions:
        assert not issubclass(cls, KeyError), cls
        assert issubclass(cls, errors.EbmkitError)
    with pytest.raises(UnknownComponentError) as info:
        ebmkit.get_spec("energy", "nope")
    assert not isinstance(info.value, KeyError)
    assert str(info.value).startswith("unknown energy 'nope'")  # not a quoted repr


# -- the core never imports the built-ins -------------------------------------------------


def _imports_of(path: Path) -> list[tuple[int, str]]:
    tree = parse_source(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            # importlib.import_module("ebmkit_builtins...") and __import__(...)
            found += [
                (node.lineno, arg.value)
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                and arg.value.startswith("ebmkit_builtins")
            ]
    return found


def test_core_source_never_imports_builtins():
    files = sorted((ROOT / "ebmkit").rglob("*.py"))
    assert len(files) > 5
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in _imports_of(path)
        if name == "ebmkit_builtins" or name.startswith("ebmkit_builtins.")
    ]
    assert offenders == []


def test_importing_ebmkit_and_listing_imports_no_builtin_module(tmp_path):
    code = (
        "import sys, ebmkit\n"
        "rows = ebmkit.registry.listing()\n"
        "assert any(r.dist == 'ebmkit-jax' for r in rows), rows\n"
        "print(sorted(m for m in sys.modules if m.startswith('ebmkit_builtins')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stderr
    imported = ast.literal_eval(out.stdout.strip())
    assert [m for m in imported if m.startswith("ebmkit_builtins.")] == []


def test_a_malformed_entry_points_file_breaks_only_its_distribution(tmp_path, monkeypatch, fresh_registry):
    import warnings

    from click.testing import CliRunner

    from ebmkit.cli import cli

    info = tmp_path / "bad_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-dist\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[ebmkit.samplers]\nbroken line without equals\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.BROKEN_DISTRIBUTIONS.clear()
    registry.invalidate_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "langevin" in registry.get_registry("sampler").names()
    assert any("bad-dist" in str(w.message) and "malformed entry_points.txt" in str(w.message) for w in caught)
    assert "bad-dist" in registry.BROKEN_DISTRIBUTIONS
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0 and "langevin" in result.output
    registry.BROKEN_DISTRIBUTIONS.clear()


def test_parse_source_retries_the_interpreter_s_spurious_ast_error(monkeypatch):
    real = ast.parse
    calls = []

    def flaky(source, filename="<unknown>"):
        calls.append(filename)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=1, after=2)")
        return real(source, filename=filename)

    monkeypatch.setattr(ast, "parse", flaky)
    tree = parse_source("import ebmkit_builtins\n", "x.py")
    assert isinstance(tree.body[0], ast.Import) and len(calls) == 2

    def always(source, filename="<unknown>"):
        raise SystemError("still broken")

    monkeypatch.setattr(ast, "parse", always)
    with pytest.raises(SystemError, match="still broken"):
        parse_source("x = 1\n")
