"""Malformed configs and data files through the command line: one line, never a traceback.

Property tests (hypothesis) feed `ebmkit config validate` and `ebmkit train
--steps 2` in-process with configs whose values are of every kind (wrong
types, huge, NaN, nested, strings where lists belong), and data files that lie.
The result must be exit 0, or exit 1/2 with an `Error:` line — never a
traceback and never the catch-all's "unexpected" line, which would mean a bug.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmkit.cli import cli

FIELDS = {
    "train": ["steps", "batch_size", "learning_rate", "seed", "log_every", "max_grad_norm", "lr_decay_on_retry",
              "warmup_steps", "optimizer", "energy_bound"],
    "sampler": ["num_steps", "step_size", "noise_scale", "clamp", "prng"],
    "energy": ["hidden_dims", "activation", "dropout_rate"],
    "buffer": ["capacity", "reinit_prob", "init_margin", "init_low"],
    "base_measure": ["kind", "scale", "mean", "std"],
}

values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, 1e39, -1e39, 0.0, -1.0, 3, 1, 2**63, "128", "", "adam", "gaussian", "none"]),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.one_of(st.integers(-5, 10**9), st.floats(allow_nan=True), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def configs(draw) -> dict:
    data: dict = {"dataset": draw(st.sampled_from(["8gaussians", "moons", "nope", 3]))}
    for section, names in FIELDS.items():
        if draw(st.booleans()):
            table = {k: draw(values) for k in draw(st.lists(st.sampled_from(names), max_size=3, unique=True))}
            if section in ("sampler", "energy", "buffer") and draw(st.booleans()):
                table["name"] = {"sampler": "langevin", "energy": "mlp", "buffer": "replay"}[section]
            data[section] = table
    return data


def _clean(obj):
    """What TOML can hold: NaN/inf as strings, no None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return obj  # TOML has nan/inf
    return obj


def _check(result) -> None:
    text = result.output
    assert "Traceback" not in text, text[-2000:]
    assert "unexpected" not in text, text[-2000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in (0, 1, 2), text[-2000:]
    if result.exit_code:
        assert "Error" in text or "error" in text or "invalid" in text, text[-2000:]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_config_validate_never_raises(tmp_path_factory, data):
    config = _clean(data.draw(configs()))
    folder = tmp_path_factory.mktemp("fuzz")
    if data.draw(st.booleans()):
        path = folder / "c.json"
        path.write_text(json.dumps(config, allow_nan=True), encoding="utf-8")
    else:
        path = folder / "c.toml"
        try:
            path.write_text(tomli_w.dumps(config), encoding="utf-8")
        except (TypeError, ValueError):
            path.write_text(json.dumps(config, allow_nan=True), encoding="utf-8")
            path = path.rename(folder / "c.json")
    _check(CliRunner().invoke(cli, ["config", "validate", str(path)]))


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_train_two_steps_never_raises(tmp_path_factory, data):
    """Valid-looking settings, trained for 2 steps on a tiny model."""
    sets = [
        "energy.hidden_dims=[8]", "sampler.num_steps=2", "train.batch_size=16", "buffer.capacity=64",
        f"train.learning_rate={data.draw(st.sampled_from(['1e-3', '10', '1e30', '0.0']))}",
        f"sampler.step_size={data.draw(st.sampled_from(['0.01', '100', '1e-30', '-1']))}",
        f"base_measure.kind={data.draw(st.sampled_from(['none', 'gaussian']))}",
        f"buffer.init_margin={data.draw(st.sampled_from(['0', '0.5', '-1']))}",
    ]
    out = tmp_path_factory.mktemp("run") / "r"
    args = ["train", "--steps", "2", "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    _check(CliRunner().invoke(cli, args))


@pytest.mark.parametrize(
    "content, suffix",
    [
        ("1,2\n3,nan\n", ".csv"),
        ("", ".csv"),
        ("a;b\n1;2;3\n", ".csv"),
        ("x,y\n1\n2,3,4\n", ".csv"),
        (b"\x93NUMPY garbage", ".npy"),
        ("1 2 3\n", ".csv"),
    ],
)
def test_bad_data_files_are_one_line(tmp_path, content, suffix):
    path = tmp_path / f"data{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["train", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress",
              "--set", f'dataset={{name="file", path="{path}"}}']
    )
    _check(result)
    assert result.exit_code == 1


def test_other_event_shapes_train_without_a_picture(tmp_path):
    np.save(tmp_path / "cube.npy", np.random.default_rng(0).normal(size=(64, 2, 2)).astype(np.float32))
    result = CliRunner().invoke(
        cli, ["train", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress",
              "--set", f'dataset={{name="file", path="{tmp_path / "cube.npy"}"}}']
    )
    _check(result)
    assert result.exit_code == 0 and not (tmp_path / "r" / "samples.png").exists()


def test_missing_data_file_and_wrong_rank(tmp_path):
    np.save(tmp_path / "scalar.npy", np.float32(3.0))  # rank 0: no samples at all
    for path in (tmp_path / "missing.csv", tmp_path / "scalar.npy"):
        result = CliRunner().invoke(
            cli, ["train", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress",
                  "--set", f'dataset={{name="file", path="{path}"}}']
        )
        _check(result)
        assert result.exit_code == 1


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'dataset = "moons"\n# \xff\xfe\n', "not UTF-8"),
        (("x = " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
        (b"[train]\nsteps = 1e300\n", "train.steps"),
        (b"[train]\nlearning_rate = 1e39\n", "finite in float32"),
        (b"[train]\nseed = 9223372036854775808\n", "train.seed"),
        (b'[energy]\nname = "mlp"\nhidden_dims = "128"\n', "expected a list, got '128'"),
        (b"[train]\nlr_decay_on_retry = 2.0\n", "lr_decay_on_retry"),
        (b'[sampler]\nname = "ebmkit-jax:langevin"\nprovider = "other-dist 1.0"\n', "contradicts"),
    ],
)
def test_named_malformed_configs_are_one_problem_each(tmp_path, content, expected):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    _check(result)
    assert result.exit_code == 1 and expected in result.output
    assert result.output.count("\n  - ") <= 1  # one problem, not one per character


def test_sizes_that_cannot_fit_and_a_buffer_smaller_than_the_batch(tmp_path):
    for sets, expected in (
        (["energy.hidden_dims=[100000000, 100000000]"], "GiB"),
        (["buffer.capacity=10"], "buffer.capacity"),
    ):
        args = ["train", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress"]
        for s in sets:
            args += ["--set", s]
        result = CliRunner().invoke(cli, args)
        _check(result)
        assert result.exit_code == 1 and expected in result.output
