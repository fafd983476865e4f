"""The configuration grammar: component slots, overrides, files, errors, round trips.

Most tests run against small in-process components registered under the default
names (``registry.overlay(..., replace=True)``), so they test the config system
and not the built-ins' fields; the tests marked "real" use the installed
built-ins, and the provider tests use fake installed distributions.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
import tomllib
import warnings

import attrs
import pytest
from fakedist import make_dist
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ebmkit
from ebmkit import registry
from ebmkit.config import (
    DEFAULT_COMPONENTS,
    BufferConfig,
    Config,
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
    TrainConfig,
    apply_overrides,
    config_class,
    dump_config,
    load_config,
    non_negative,
    one_of,
    optional,
    parse_override,
    positive,
    positive_ints,
    probability,
    structure,
    unstructure,
)
from ebmkit.errors import ComponentConflictError, ConfigError
from ebmkit.registry import ComponentSpec

# -- in-process test components under the default names -----------------------------------


def _positive_int(_inst, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")


@config_class
class TMLPConfig(EnergyConfig):
    """Test energy.

    Attributes:
        hidden_dims: layer widths.
        use_bias: whether layers have a bias.
        activation: non-linearity.
    """

    hidden_dims: tuple[int, ...] = attrs.field(default=(32, 32), validator=positive_ints)
    use_bias: bool = True
    activation: str = attrs.field(default="silu", validator=one_of(["silu", "relu", "tanh"]))


@config_class
class TLangevinConfig(SamplerConfig):
    """Test sampler. Attributes: num_steps, step_size, noise_scale."""

    num_steps: int = attrs.field(default=20, validator=_positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float | None = attrs.field(default=None, validator=optional(non_negative))


@config_class
class THMCConfig(SamplerConfig):
    """Test sampler. Attributes: num_steps, step_size, num_integration_steps."""

    num_steps: int = attrs.field(default=10, validator=_positive_int)
    step_size: float = attrs.field(default=0.1, validator=positive)
    num_integration_steps: int = attrs.field(default=5, validator=_positive_int)


@config_class
class TPCDConfig(LossConfig):
    """Test loss. Attributes: alpha."""

    alpha: float = attrs.field(default=0.1, validator=non_negative)


@config_class
class TCDConfig(LossConfig):
    """Test loss. Attributes: alpha."""

    alpha: float = attrs.field(default=0.1, validator=non_negative)


@config_class
class TReplayConfig(BufferConfig):
    """Test buffer. Attributes: capacity, reinit_prob."""

    capacity: int = attrs.field(default=1000, validator=_positive_int)
    reinit_prob: float = attrs.field(default=0.05, validator=probability)


@config_class
class TGaussiansConfig(DatasetConfig):
    """Test data set. Attributes: scale."""

    scale: float = attrs.field(default=2.0, validator=positive)


def _spec(kind: str, name: str, config: type) -> ComponentSpec:
    return ComponentSpec(kind=kind, name=name, config=config, build=lambda c, **kw: c, summary="test")


TEST_SPECS = (
    _spec("energy", "mlp", TMLPConfig),
    _spec("sampler", "langevin", TLangevinConfig),
    _spec("sampler", "hmc", THMCConfig),
    _spec("loss", "pcd", TPCDConfig),
    _spec("loss", "cd", TCDConfig),
    _spec("buffer", "replay", TReplayConfig),
    _spec("dataset", "8gaussians", TGaussiansConfig),
)


@pytest.fixture
def components():
    with registry.overlay(*TEST_SPECS, replace=True):
        yield


_counter = itertools.count()

SAMPLER_MODULE = '''
import attrs
from ebmkit.config import SamplerConfig, config_class, positive
from ebmkit.registry import ComponentSpec

@config_class
class AcmeConfig(SamplerConfig):
    """Attributes: step_size, num_steps."""

    step_size: float = attrs.field(default=0.1, validator=positive)
    num_steps: int = 5

spec = ComponentSpec(kind="sampler", name=NAME, config=AcmeConfig, build=lambda c: c)
'''


@pytest.fixture
def install(tmp_path, monkeypatch, fresh_registry, components):
    """Install a fake distribution providing one sampler; returns its module name."""
    before = set(sys.modules)

    def _install(dist: str, version: str, name: str) -> str:
        module = f"fake_cfg_{next(_counter)}"
        where = tmp_path / f"site{next(_counter)}"
        make_dist(where, dist, version, {"ebmkit.samplers": {name: f"{module}:spec"}},
                  {module: SAMPLER_MODULE.replace("NAME", repr(name))})
        monkeypatch.syspath_prepend(str(where))
        registry.invalidate_caches()
        return module

    yield _install
    for name in set(sys.modules) - before:
        if name.startswith("fake_cfg_"):
            del sys.modules[name]


def problems(err: ConfigError) -> dict[str, str]:
    return {p.path: p.render() for p in err.problems}


# -- component slots ----------------------------------------------------------------------


def test_slot_accepts_string_table_or_instance(components):
    assert load_config(sampler="hmc").sampler == THMCConfig()
    assert load_config(sampler={"name": "hmc", "step_size": 0.2}).sampler == THMCConfig(step_size=0.2)
    assert load_config(sampler=THMCConfig(step_size=0.3)).sampler == THMCConfig(step_size=0.3)
    assert load_config(sampler="local:hmc").sampler == THMCConfig()
    # A table without a name keeps the slot's default component.
    assert load_config(sampler={"step_size": 0.05}).sampler == TLangevinConfig(step_size=0.05)
    # Python keyword construction goes through the same converter.
    assert Config(sampler="hmc").sampler == THMCConfig()
    assert Config(sampler={"name": "hmc", "num_integration_steps": 2}).sampler == THMCConfig(num_integration_steps=2)


def test_slot_rejects_wrong_kinds_of_values(components):
    with pytest.raises(ConfigError, match="is an? energy config, expected a sampler config"):
        load_config(sampler=TMLPConfig())
    with pytest.raises(ConfigError, match="expected a sampler name or a table"):
        load_config(sampler=3)
    with pytest.raises(ConfigError, match=r"sampler\.name: expected a component name string"):
        load_config(sampler={"name": 7})
    with pytest.raises(ConfigError, match="unknown sampler 'hcm'.*did you mean 'hmc'"):
        Config(sampler="hcm")


def test_defaults_are_resolved_through_the_registry(components):
    cfg = Config()
    assert cfg == load_config() == structure({}, Config)
    expected = {"energy": TMLPConfig, "sampler": TLangevinConfig, "loss": TPCDConfig,
                "buffer": TReplayConfig, "dataset": TGaussiansConfig}
    assert {k: type(getattr(cfg, k)) for k in DEFAULT_COMPONENTS} == expected
    assert cfg.train == TrainConfig()


def test_real_builtin_defaults_load_and_dump_their_provider():
    """With nothing shadowed, the default names are ebmkit-jax's built-ins."""
    cfg = load_config()
    for kind, name in DEFAULT_COMPONENTS.items():
        assert type(getattr(cfg, kind)).__module__.startswith("ebmkit_builtins."), kind
        assert registry.get_registry(kind).resolve(name).dist == "ebmkit-jax"
    data = tomllib.loads(dump_config(cfg))
    for kind, name in DEFAULT_COMPONENTS.items():
        assert data[kind]["name"] == name
        assert data[kind]["provider"] == f"ebmkit-jax {ebmkit.__version__}"
    assert structure(data, Config) == cfg


# -- overrides ----------------------------------------------------------------------------


def test_overrides(components):
    cfg = load_config(overrides=["sampler.step_size=0.05", "energy.hidden_dims=[64,64]", "train.steps=10"])
    assert cfg.sampler == TLangevinConfig(step_size=0.05)
    assert cfg.energy.hidden_dims == (64, 64)
    assert cfg.train.steps == 10
    assert type(load_config(overrides=["sampler=hmc"]).sampler) is THMCConfig
    assert load_config(overrides=['sampler={name = "hmc", step_size = 0.3}']).sampler == THMCConfig(step_size=0.3)
    assert load_config(overrides=["train.max_grad_norm=1.5"]).train.max_grad_norm == 1.5
    assert load_config(overrides=["energy.use_bias=false"]).energy.use_bias is False


def test_override_replaces_a_string_slot_then_sets_a_field(components):
    cfg = load_config({"sampler": "langevin"}, overrides=["sampler=hmc", "sampler.step_size=0.2"])
    assert cfg.sampler == THMCConfig(step_size=0.2)
    # Layers: source < keywords < overrides.
    cfg = load_config({"sampler": {"name": "langevin", "step_size": 0.5}}, sampler="hmc",
                      overrides=["sampler.num_integration_steps=2"])
    assert cfg.sampler == THMCConfig(num_integration_steps=2)
    with pytest.raises(ConfigError, match=r"sampler: unexpected field 'noise_scale'"):
        load_config(overrides=["sampler=hmc", "sampler.noise_scale=0.1"])


@pytest.mark.parametrize("text", ["sampler.step_size", "=0.1", "sampler..step_size=1", ".x=1", "x.=1", ""])
def test_malformed_override_is_a_config_error(components, text):
    with pytest.raises(ConfigError, match="malformed override") as info:
        load_config(overrides=[text])
    assert "KEY=VALUE" in str(info.value)


def test_bad_override_values_are_located(components):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["train.steps=abc"])
    assert problems(info.value) == {"train.steps": "train.steps: expected an integer, got 'abc'"}
    with pytest.raises(ConfigError, match=r"cannot set train\.steps: 'train' holds 3"):
        load_config(overrides=["train=3", "train.steps=1"])
    with pytest.raises(ConfigError, match=r"unexpected field 'samplr' \(did you mean 'sampler'\?\)"):
        load_config(overrides=["samplr.step_size=0.1"])


def test_parse_override_reads_toml_values():
    assert parse_override("a.b = [1, 2]") == (["a", "b"], [1, 2])
    assert parse_override('x="3"') == (["x"], "3")
    assert parse_override("x=3") == (["x"], 3)
    assert parse_override("x=hello") == (["x"], "hello")
    assert parse_override("x=true") == (["x"], True)
    assert parse_override("x={name = 'hmc'}") == (["x"], {"name": "hmc"})


# -- strict scalars -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        ({"train": {"steps": "3"}}, "train.steps", "expected an integer, got '3'"),
        ({"train": {"steps": True}}, "train.steps", "expected an integer, got True"),
        ({"train": {"steps": 2.5}}, "train.steps", "expected an integer, got 2.5"),
        ({"train": {"learning_rate": "0.1"}}, "train.learning_rate", "expected a number, got '0.1'"),
        ({"train": {"learning_rate": False}}, "train.learning_rate", "expected a number, got False"),
        ({"energy": {"use_bias": "false"}}, "energy.use_bias", "expected true or false, got 'false'"),
        ({"energy": {"use_bias": 0}}, "energy.use_bias", "expected true or false, got 0"),
        ({"train": {"optimizer": 3}}, "train.optimizer", "expected a string, got 3"),
    ],
)
def test_scalars_are_strict(components, overrides, path, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert problems(info.value) == {path: f"{path}: {message}"}


def test_ints_are_accepted_for_floats(components):
    cfg = load_config(train={"learning_rate": 1}, sampler={"step_size": 1})
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert isinstance(cfg.sampler.step_size, float)


# -- files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        ("bad.toml", "[train]\nsteps = = 3\n", "TOML syntax error"),
        ("bad.toml", 'sampler = "langevin\n', "TOML syntax error"),
        ("bad.json", '{"train": {"steps": 3,}}', "JSON syntax error at line 1"),
        ("list.json", "[1, 2]", "must be an object at the top level"),
        ("cfg.yaml", "train: {}", "unknown config file type '.yaml'"),
    ],
)
def test_unreadable_files_name_the_file(components, tmp_path, filename, text, expected):
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert all(p.source == str(path) for p in info.value.problems)


def test_missing_file(components, tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


ACCEPTANCE_TOML = """\
loss = "pcdd"

[sampler]
name = "langevin"
stepsize = 0.1

[train]
learning_rate = -0.001
"""


def test_three_mistakes_in_one_error_with_paths_and_suggestions(components, tmp_path):
    """Acceptance: every problem of a file is reported at once, located and explained."""
    path = tmp_path / "run.toml"
    path.write_text(ACCEPTANCE_TOML, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert len(err.problems) == 3
    found = problems(err)
    assert set(found) == {"sampler", "loss", "train.learning_rate"}
    assert all(p.source == str(path) for p in err.problems)
    message = str(err)
    assert message.startswith("invalid configuration: 3 problems")
    assert f"{path}: sampler: unexpected field 'stepsize' (did you mean 'step_size'?)" in message
    assert f"{path}: loss: unknown loss 'pcdd'" in message
    assert "did you mean 'pcd'" in found["loss"]
    assert "known: cd, dsm, ed, jem, nce, pcd, ssm" in found["loss"]
    assert f"{path}: train.learning_rate: must be a finite number > 0, got -0.001" in message

    # The same mistakes from a dict or keywords give the same problems, without a file.
    data = tomllib.loads(ACCEPTANCE_TOML)
    for call in (lambda: load_config(data), lambda: structure(data, Config), lambda: load_config(**data)):
        with pytest.raises(ConfigError) as again:
            call()
        assert {p.path: p.message for p in again.value.problems} == {p.path: p.message for p in err.problems}
        assert all(p.source is None for p in again.value.problems)


def test_inputs_are_never_mutated(components):
    data = {"sampler": {"name": "langevin", "step_size": 0.2}, "energy": "mlp",
            "train": {"steps": 5}, "dataset": {"scale": 1.0}}
    snapshot = copy.deepcopy(data)
    load_config(data, overrides=["sampler.step_size=0.3", "energy.hidden_dims=[4]", "sampler=hmc"])
    structure(data, Config)
    apply_overrides(data, ["train.steps=7", "energy.use_bias=false"])
    Config(**data)
    bad = {"sampler": {"name": "langevin", "stepsize": 1}, "train": {"steps": "x"}}
    bad_snapshot = copy.deepcopy(bad)
    with pytest.raises(ConfigError):
        load_config(bad, overrides=["sampler.num_steps=0"])
    assert data == snapshot and bad == bad_snapshot


# -- round trips and providers ------------------------------------------------------------


ROUND_TRIP_CASES = [
    {},
    {"sampler": "hmc", "energy": {"hidden_dims": [8], "use_bias": False}, "train": {"max_grad_norm": 1.0}},
    {"sampler": {"noise_scale": 0.005}, "loss": "cd", "buffer": {"reinit_prob": 0.0}, "train": {"seed": 3}},
]


@pytest.mark.parametrize("case", ROUND_TRIP_CASES)
def test_round_trips(components, tmp_path, case):
    cfg = load_config(case)
    assert structure(unstructure(cfg), Config) == cfg
    assert structure(unstructure(cfg, with_provider=True), Config) == cfg
    assert load_config(tomllib.loads(dump_config(cfg))) == cfg
    for suffix in (".toml", ".json"):
        path = tmp_path / f"cfg{suffix}"
        text = dump_config(cfg, path)
        assert path.read_text(encoding="utf-8") == text
        assert load_config(path) == cfg
    assert json.loads((tmp_path / "cfg.json").read_text())["sampler"]["provider"] == "local"


def test_dump_records_provider_distribution_and_version(install, tmp_path):
    install("acme-samplers", "2.5.0", "acme_langevin")
    cfg = load_config(sampler={"name": "acme_langevin", "step_size": 0.3})
    path = tmp_path / "run.toml"
    dump_config(cfg, path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["sampler"] == {"name": "acme_langevin", "provider": "acme-samplers 2.5.0",
                               "step_size": 0.3, "num_steps": 5}
    assert load_config(path) == cfg

    # A config written by another version of the plugin loads, with a warning.
    data["sampler"]["provider"] = "acme-samplers 9.9"
    with pytest.warns(UserWarning, match="written with acme-samplers 9.9, installed is 2.5.0"):
        assert load_config(data) == cfg
    data["sampler"]["provider"] = "other-dist 1.0"
    with pytest.raises(ConfigError, match="unknown sampler 'other-dist:acme_langevin'"):
        load_config(data)


def test_dumped_config_in_conflict_still_loads_via_its_provider(install, tmp_path):
    install("acme-a", "1.0", "twin")
    cfg = load_config(sampler={"name": "twin", "step_size": 0.2})
    path = tmp_path / "run.json"
    dump_config(cfg, path)
    assert json.loads(path.read_text())["sampler"]["name"] == "twin"

    install("acme-b", "2.0", "twin")  # installed later: "twin" is now ambiguous
    with pytest.raises(ConfigError) as info:
        load_config(sampler="twin")
    assert isinstance(info.value, ConfigError)
    assert "acme-a 1.0" in str(info.value) and "acme-b 2.0" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(path) == cfg  # the provider key picks acme-a

    # Dumped while in conflict, the name itself is provider-qualified.
    data = unstructure(cfg, with_provider=True)
    assert data["sampler"]["name"] == "acme-a:twin"
    assert structure(data, Config) == cfg
    assert load_config(sampler="acme-b:twin").sampler != cfg.sampler
    with pytest.raises(ComponentConflictError):
        registry.get_registry("sampler").resolve("twin")


# -- properties: malformed input is always a ConfigError ----------------------------------

KINDS = ("energy", "sampler", "loss", "buffer", "dataset")
#: dotted path -> what the field takes, for the test components' default names.
FIELDS = {
    "train.steps": "int", "train.batch_size": "int", "train.seed": "int",
    "train.learning_rate": "float", "train.weight_decay": "float",
    "train.max_grad_norm": "optional float", "train.optimizer": "str",
    "sampler.num_steps": "int", "sampler.step_size": "float", "sampler.noise_scale": "optional float",
    "energy.hidden_dims": "ints", "energy.use_bias": "bool", "energy.activation": "choice",
    "loss.alpha": "float", "buffer.capacity": "int", "buffer.reinit_prob": "float",
    "dataset.scale": "float",
}

keys = st.one_of(st.text(max_size=6), st.sampled_from(["name", "provider", "steps", "step_size", "train"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(), st.text(max_size=8)
)
junk = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.one_of(keys, st.integers(0, 3)), children, max_size=3),
    max_leaves=8,
)
not_numbers = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
WRONG = {
    "int": st.one_of(st.none(), not_numbers, st.floats().filter(lambda f: not (math.isfinite(f) and f.is_integer()))),
    "float": st.one_of(st.none(), not_numbers),
    "optional float": not_numbers,
    "str": st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(scalars, max_size=2)),
    "bool": st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=6), st.lists(scalars, max_size=2)),
    "ints": st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4),
        st.lists(st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.integers(max_value=0)), min_size=1, max_size=3),
    ),
    "choice": st.one_of(st.none(), st.integers(), st.text(max_size=6).filter(lambda s: s not in ("silu", "relu", "tanh"))),
}


component_names = st.one_of(
    st.text(max_size=10),
    st.builds(lambda n, s: n + s, st.sampled_from(["mlp", "hmc", "pcd", "replay", "langevin"]), st.text(min_size=1, max_size=3)),
    st.builds(lambda d, n: f"{d}:{n}", st.sampled_from(["ebmkit-jax", "local", "nobody", ""]), st.text(max_size=6)),
)


@st.composite
def mistakes(draw):
    """One (path, value) that is wrong whatever else the config holds."""
    choice = draw(st.sampled_from(["unknown key", "wrong type", "bad name", "bad slot", "bad table"]))
    if choice == "unknown key":
        where = draw(st.sampled_from([(), ("train",), *((k,) for k in KINDS)]))
        return (*where, "x_" + draw(st.text(max_size=5))), draw(junk)
    if choice == "wrong type":
        path = draw(st.sampled_from(sorted(FIELDS)))
        return tuple(path.split(".")), draw(WRONG[FIELDS[path]])
    if choice == "bad name":
        kind = draw(st.sampled_from(KINDS))
        path = draw(st.sampled_from([(kind,), (kind, "name")]))
        return path, ("name", kind, draw(component_names))
    if choice == "bad slot":
        kind = draw(st.sampled_from(KINDS))
        return (kind,), draw(junk.filter(lambda v: not isinstance(v, (str, dict))))
    return ("train",), draw(junk.filter(lambda v: not isinstance(v, dict)))


def _set(data: dict, path: tuple, value) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


@given(base=st.sampled_from([{}, {"sampler": "hmc"}, {"loss": "cd", "train": {"steps": 3}}]),
       errors=st.lists(mistakes(), min_size=1, max_size=3))
@settings(max_examples=100, deadline=None)
def test_malformed_configs_always_raise_config_error(base, errors):
    data = copy.deepcopy(base)
    with registry.overlay(*TEST_SPECS, replace=True):
        for path, value in errors:
            if isinstance(value, tuple) and value[:1] == ("name",):
                _, kind, name = value
                try:
                    registry.get_registry(kind).resolve(name)
                except ebmkit.EbmkitError:
                    pass
                else:
                    assume(False)  # drew a real name
                value = name
            _set(data, path, value)
        for call in (lambda: load_config(data), lambda: structure(data, Config)):
            with pytest.raises(ConfigError) as info:
                call()
            assert str(info.value).startswith("invalid configuration")
            assert all(isinstance(p.message, str) and p.message for p in info.value.problems)


@given(data=st.dictionaries(st.one_of(keys, st.sampled_from(["energy", "sampler", "loss", "buffer", "dataset"])), junk, max_size=4))
@settings(max_examples=100, deadline=None)
def test_arbitrary_input_gives_a_config_or_a_config_error(data):
    with registry.overlay(*TEST_SPECS, replace=True):
        for call in (lambda: load_config(data), lambda: structure(data, Config)):
            try:
                result = call()
            except ConfigError:
                continue
            assert isinstance(result, Config)


@given(value=junk)
@settings(max_examples=50, deadline=None)
def test_non_mapping_top_level_is_a_config_error(value):
    assume(not isinstance(value, dict))
    with pytest.raises(ConfigError):
        structure(value, Config)
