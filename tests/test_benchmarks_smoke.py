"""Smoke test of the benchmark scripts: each ``main`` runs at tiny sizes and its
last stdout line is the JSON report. Timings are never asserted (speed targets
live in the scripts' output, not in tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _report(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert out, "the script printed nothing"
    assert any(line.startswith("| ") for line in out), "no markdown table"
    report = json.loads(out[-1])
    assert report["environment"]["jax"]
    return report


def test_bench_sample_runs(capsys):
    from benchmarks import bench_sample

    bench_sample.main([
        "--models", "mlp2d", "--samplers", "langevin", "--chains", "8", "--steps", "3",
        "--repeats", "1", "--prngs", "default", "--no-ablation",
    ])
    report = _report(capsys)
    (langevin,) = report["results"]
    assert set(langevin["cases"]) >= {"reference", "ebmkit[default]"}
    assert langevin["cases"]["ebmkit[default]"]["speed_vs_reference"]["wall"]["median"] > 0
    assert langevin["compile"]["default"]["compiles_second_call"] == 0
    # The HMC reference (the ebmkit side is the same generate call as above).
    import jax

    params = bench_sample.init_mlp(jax.random.key(0), (2, 4, 1))
    x = bench_sample.reference_hmc(8, 2, 2, 0.05, 2)(params, jax.random.key(1))
    assert x.shape == (8, 2) and bool(jax.numpy.all(jax.numpy.isfinite(x)))


def test_bench_train_runs(capsys):
    from benchmarks import bench_train

    bench_train.main([
        "--steps", "2", "--repeats", "1", "--spc", "1", "--ref-scan", "0", "--batch", "16",
        "--num-steps", "2", "--hidden", "8,8",
    ])
    report = _report(capsys)
    assert report["targets"]["spc1_vs_reference"]["wall"]["median"] > 0
    assert report["targets"]["guide_vs_reference"]["wall"]["median"] > 0
    assert "ebmkit Trainer (steps_per_call=1)" in report["cases"]
    assert "ebmkit Trainer (steps_per_call=1, host data)" in report["cases"]


def test_bench_samplers_runs(capsys):
    from benchmarks import samplers

    samplers.main(["--targets", "mixture", "--chains", "4", "--grads", "40", "--warmup", "20"])
    report = _report(capsys)
    rows = report["results"]["mixture"]
    assert {"ebmkit mala", "ebmkit replica_exchange (mala)", "blackjax nuts (window adaptation)"} <= set(rows)
    # Four chains of a few draws: an ESS may be undefined (None), never negative.
    assert all(0 <= r["answer"] <= 1 for r in rows.values())
    assert all(r["ess_per_1000_grads"] is None or r["ess_per_1000_grads"] >= 0 for r in rows.values())
    assert rows["ebmkit mala"]["ess_per_1000_grads"] > 0


def test_bench_roofline_runs(capsys):
    from benchmarks import bench_roofline

    bench_roofline.main([
        "--repeats", "1", "--steps", "2", "--batch", "4", "--peak-sizes", "64", "--dim", "16", "--hidden", "8,8",
        "--small-steps", "3", "--no-ablation",
    ])
    report = _report(capsys)
    # 4 * batch * sum(in * out) for 16-8-8-1 at batch 4.
    assert report["settings"]["flops_per_step"] == 4 * 4 * (16 * 8 + 8 * 8 + 8 * 1)
    assert report["large_mlp"]["ebmkit generate (prng=auto)"]["fraction_of_peak_best"] > 0


def test_bench_conv_runs(capsys):
    from benchmarks import bench_conv

    bench_conv.main(["--recipes", "digits_deep", "--quick", "--repeats", "1", "--grad-calls", "1"])
    report = _report(capsys)["recipes"]["digits_deep"]
    # The shipped convolution computes what the plain one does.
    assert report["equivalence_vs_plain"]["custom VJP (cnn now)"]["grad_max_rel"] < 1e-4
    step = report["sections"]["train step"]["cases"]["custom VJP (cnn now)"]
    assert step["speed_vs_plain"]["median"] > 0 and 0 < step["fraction_of_peak_median_of_rounds"] < 1


def test_bench_scaling_runs(capsys):
    from benchmarks import bench_scaling

    bench_scaling.main(["--axes", "batch", "--points", "8,16", "--repeats", "1", "--target-s", "0.001"])
    report = _report(capsys)
    batch = report["axes"]["batch"]
    assert batch["values"] == [8, 16] and len(batch["step_ms_best"]) == 2


def test_quick_entry_point_summary_and_missing_quality(capsys, monkeypatch):
    from benchmarks import __main__ as quick

    monkeypatch.setitem(sys.modules, "benchmarks.quality", None)  # as if the file did not exist
    note = quick._run_quality("8gaussians", 1.0)
    assert "skipped" in note
    quick.main(["--skip", "train,sample,quality"])
    report = _report(capsys)
    assert report["errors"] == {}


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"), [([2.0, 4.0], [1.0, 2.0], 2.0), ([1.0], [2.0], 0.5)]
)
def test_ratio_is_per_round(numerator, denominator, expected):
    from benchmarks import _common

    assert _common.ratio(numerator, denominator)["median"] == pytest.approx(expected)
    assert _common.fit_exponent([1, 2, 4], [3.0, 6.0, 12.0]) == pytest.approx(1.0)


def test_images_benchmark_runs(capsys, tmp_path):
    from benchmarks import images

    images.main([
        "--datasets", "digits", "--samples", "64", "--eval-every", "2", "--out", str(tmp_path),
        "--set", "train.steps=4", "--set", "train.batch_size=16", "--set", "sampler.num_steps=2",
        "--set", "energy.hidden_dims=[4, 8]",
    ])
    report = _report(capsys)
    (digits,) = report["results"]
    assert [c["step"] for c in digits["curve"]] == [2, 4]
    assert digits["n_samples"] == 64 and digits["chain_steps"] == 2
    refs = {r["what"]: r for r in digits["references"]}
    # The reference rows order as they must: real < blurred 0.5 px < blurred 1 px.
    real, half, one = (refs[k]["fd"] for k in (
        "training digits (floor)", "training digits blurred σ = 0.5 px", "training digits blurred σ = 1 px"))
    assert real < half < one
    assert digits["fd"] > real  # 4 steps of a tiny net do not make digits
    assert (tmp_path / "digits_fresh_chains.png").stat().st_size > 0


def test_own_data_benchmark_runs(capsys):
    from benchmarks import own_data

    # The banana's entropy is exact; the mixture's Monte Carlo estimate is near its closed-form bounds.
    mixture = own_data.ShiftedMixture()
    x = mixture.sample(np.random.default_rng(0), 1000)
    assert x.shape == (1000, 2) and 20 < x[:, 0].mean() < 60
    own_data.main([
        "--sets", "banana", "--long-run", "2", "--set", "train.steps=6", "--set", "train.log_every=3",
        "--set", "energy.hidden_dims=[8]", "--set", "sampler.num_steps=2",
    ])
    out = capsys.readouterr().out
    row = json.loads(out.splitlines()[0])
    assert row["data"] == "banana" and row["steps"] == 6
    assert np.isfinite(row["kl_gap"]) and row["kl_gap"] > 0  # six steps of an 8-unit net are far from the truth
    # The recipe has no buffer and samples with replica exchange: one long run, from noise.
    assert {"rx_tv", "rx_tv_floor", "rx_escape_fraction"} <= set(row) and "buffer_tv" not in row
    assert "| banana | 0 |" in out
    # A PCD run with Langevin gets its own sampler from the buffer and from noise, and replica exchange.
    own_data.main([
        "--sets", "banana", "--long-run", "2", "--set", "train.steps=6", "--set", "train.log_every=3",
        "--set", "energy.hidden_dims=[8]", "--set", "loss=pcd", "--set", "buffer=replay",
        "--set", 'sampler={name="langevin", num_steps=2, step_size=0.005}',
    ])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {"buffer_tv", "noise_tv", "rx_tv", "rx_tv_floor"} <= set(row)


def test_discrete_samplers_benchmark_runs(capsys):
    from benchmarks import discrete_samplers

    discrete_samplers.main([
        "--targets", "rbm", "--samplers", "gwg,dmala", "--chains", "4", "--evals", "64", "--burn", "8",
        "--draws", "16", "--repeats", "1",
    ])
    report = _report(capsys)
    rows = report["results"]["rbm"]
    assert set(rows) == {"gwg", "dmala α=0.2"}
    for r in rows.values():
        assert r["ess_magnetisation_per_1000_evals"] is None or r["ess_magnetisation_per_1000_evals"] >= 0
        assert 0 < r["acceptance"] <= 1 and r["max_marginal_error"] < 1
        assert r["evals_per_chain"] == 64
    # The RBM's exact visible marginals: P(v_i = 1) by enumerating the hidden layer.
    target = discrete_samplers.rbm_target(visible=3, hidden=2)
    import itertools

    v = np.array(list(itertools.product((0.0, 1.0), repeat=3)), np.float32)
    p = np.exp(-np.asarray(target["energy"](v), np.float64))
    np.testing.assert_allclose(p @ v / p.sum(), target["exact_means"], rtol=1e-5)


def test_discrete_models_benchmark_runs(capsys):
    from benchmarks import discrete_models

    betas = discrete_models.sm_schedule(150)
    assert len(betas) == 150 and betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    discrete_models.main([
        "--cases", "rbm16", "ising", "--steps", "5", "--ais-temperatures", "300", "--ais-chains", "32",
        "--reverse-steps", "5", "--couplings", "0.25", "--samplers", "gwg", "--seeds", "0",
        "--ising-steps", "3", "--ising-size", "4", "--ising-sweeps", "20",
    ])
    report = _report(capsys)
    rbm = report["rbm"]["rbm16"]
    # AIS both ways agrees with the exact log-likelihood of the (enumerable) 16-hidden RBM.
    assert -64 * np.log(2) - 1 < rbm["ll_exact"] < 0
    assert abs(rbm["ll_forward"] - rbm["ll_exact"]) < 0.5 and abs(rbm["ll_reverse"] - rbm["ll_exact"]) < 0.5
    (ising,) = report["ising"]
    assert ising["num_steps"] == ising["evals_per_chain_step"] == 16  # equal compute: d transitions
    assert 0 < ising["coupling_rmse"] < ising["untrained_rmse"]
