"""Reopen a finished (or interrupted) training run from its directory.

A run directory, as :class:`~ebmkit.training.Trainer` writes it, holds
``config.toml`` (the resolved config), ``checkpoints/<step>/`` and
``metrics.jsonl``. :func:`open_run` rebuilds the data set and the model from
the config and loads the latest checkpoint into the model, so the model can be
sampled, evaluated and diagnosed exactly as it was when training stopped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ebmkit.config import Config, load_config
from ebmkit.errors import CheckpointError, RunError

__all__ = ["Run", "RunError", "open_run", "diagnosis_notes", "jsonable"]

PathLike = str | os.PathLike[str]


@attrs.define(eq=False)
class Run:
    """A training run reopened from disk (see :func:`open_run`).

    Attributes:
        run_dir: the directory.
        config: the run's config (from ``config.toml``).
        dataset: the data set the config names.
        model: the :class:`~ebmkit.EBM` with the checkpoint's parameters,
            optimiser state, replay buffer and key loaded, and its parameter
            EMA when the run kept one (``train.ema_decay``): then
            :meth:`generate`, :meth:`diagnose` and :meth:`evaluate` use the
            average; ``model.evaluate_with = "live"`` (or
            ``with model.evaluating_with("live"):``) switches to the live
            parameters.
        trainer: a :class:`~ebmkit.training.Trainer` on the run (hooks off);
            ``trainer.fit(resume=True)`` would continue training.
        step: the training step of the loaded checkpoint.
    """

    run_dir: Path
    config: Config
    dataset: Any
    model: Any
    trainer: Any
    step: int

    @property
    def history(self) -> list[dict[str, float]]:
        """The rows of ``metrics.jsonl`` (empty if the run logged none)."""
        from ebmkit.viz import read_metrics

        path = self.run_dir / "metrics.jsonl"
        return read_metrics(path) if path.is_file() else []

    def generate(self, n_samples: int, *, n_steps: int | None = None, seed: int = 0,
                 label: int | None = None) -> np.ndarray:
        """``n_samples`` fresh-chain samples as a NumPy array (reproducible by
        ``seed``); with ``label``, samples of that class from a conditional energy."""
        import jax

        x = self.model.generate(n_samples, n_steps=n_steps, rng_key=jax.random.key(seed), labels=label)
        return np.asarray(x)

    def _energy_module(self) -> Any:
        """The energy network in eval mode with the evaluated parameters, for
        evaluations that use more than ``E(x)`` (an RBM's exact likelihood)."""
        from flax import nnx

        return nnx.merge(self.model._graphdefs()[1], *self.model.eval_variables())

    def diagnose(self, *, n_samples: int = 64, n_steps: int = 100, batch_size: int = 256,
                 seed: int = 0) -> dict[str, float]:
        """:func:`ebmkit.evaluate.diagnose` on ``batch_size`` held-out points;
        for 2-D data sets also the fit itself: ``kl_gap`` (where the entropy is
        known) and ``tail_mass``, which separate a good model from a poor one
        when the chain statistics look healthy either way."""
        import jax

        from ebmkit.evaluate import diagnose, evaluate_dataset

        batch = self.dataset.held_out(batch_size)
        report = diagnose(self.model, batch, n_samples=n_samples, n_steps=n_steps, rng_key=jax.random.key(seed))
        fit = evaluate_dataset(self.model.energy, self.dataset, n_test=5000, grid=128, energy_module=self._energy_module())
        for key in ("kl_gap", "tail_mass"):
            if key in fit:
                report[key] = fit[key]
        return report

    def evaluate(self, *, n_samples: int = 64, n_steps: int = 100, seed: int = 0) -> dict[str, Any]:
        """The data set's standard evaluation plus the diagnostics.

        Returns:
            ``{"run_dir", "step", "evaluated_with", "evaluation": {...},
            "diagnostics": {...}}``; ``evaluation`` is
            :func:`ebmkit.evaluate.evaluate_dataset` (grid NLL and KL gap for
            2-D data sets, empty otherwise); ``diagnostics`` is
            :meth:`diagnose` without the fit figures ``evaluation`` already
            holds; ``evaluated_with`` is ``"ema"`` or ``"live"``
            (``model.evaluate_with``).
        """
        from ebmkit.evaluate import evaluate_dataset

        evaluation = evaluate_dataset(self.model.energy, self.dataset, energy_module=self._energy_module())
        diagnostics = self.diagnose(n_samples=n_samples, n_steps=n_steps, seed=seed)
        # The diagnosis repeats the fit on a quicker grid; the evaluation's
        # figures are the finer ones, so each is reported once.
        for key in ("kl_gap", "tail_mass"):
            if key in evaluation:
                diagnostics.pop(key, None)
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "evaluated_with": self.model.evaluate_with,
            "evaluation": evaluation,
            "diagnostics": diagnostics,
        }

    def plot_samples(self, samples: Any, path: PathLike, *, n_data: int = 2000) -> bool:
        """Write a picture of ``samples``: over held-out data for 2-D points, a
        grid for images. Returns ``False`` (and writes nothing) for other shapes."""
        from ebmkit import viz

        shape = tuple(self.model.event_shape)
        samples = np.asarray(samples)
        if shape == (2,):
            viz.plot_samples(
                samples, data=self.dataset.held_out(n_data), bounds=self.dataset.bounds, path=path,
                title=f"{len(samples)} samples at step {self.step} ({getattr(self.dataset, 'name', '')})",
            )
            return True
        if len(shape) == 3 and shape[-1] in (1, 3):
            value_range = self.dataset.bounds if self.dataset.bounds is not None else (-1.0, 1.0)
            viz.save_image_grid(samples, path, value_range=value_range)
            return True
        return False


def open_run(run_dir: PathLike, *, step: int | None = None) -> Run:
    """Rebuild the data set and model of a run and load its checkpoint.

    Args:
        run_dir: a directory written by :class:`~ebmkit.training.Trainer`
            (``ebmkit train --out``).
        step: the checkpoint to load (default: the latest).

    Raises:
        RunError: the directory or its ``config.toml`` is missing, or the data
            set cannot be built.
        ConfigError: ``config.toml`` is invalid.
        CheckpointError: no checkpoint, an unreadable one, or one that does not
            fit the config.
    """
    from ebmkit.components import build_dataset, data_context, spec_for
    from ebmkit.model import EBM
    from ebmkit.training import Trainer

    path = Path(run_dir)
    if not path.exists():
        raise RunError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise RunError(f"{path} is not a directory; pass the run directory (the one holding config.toml)")
    config_path = path / "config.toml"
    if not config_path.is_file():
        raise RunError(
            f"{path} has no config.toml, so it is not a run directory "
            "(one written by `ebmkit train --out DIR` or Trainer(run_dir=DIR))"
        )
    config = load_config(config_path)
    checkpoints = path / "checkpoints"
    # Check before the Trainer exists: its checkpointer would create the folder.
    if not checkpoints.is_dir() or not any(checkpoints.iterdir()):
        raise CheckpointError(f"no checkpoint in {checkpoints}; was the run stopped before its first save?")
    try:
        dataset = build_dataset(config.dataset)
    except ImportError as exc:  # an optional dependency of the data set (e.g. scikit-learn)
        name = spec_for(config.dataset).name
        raise RunError(f"cannot build the data set {name!r} of {config_path}: {exc}") from exc
    model = EBM(config, data=data_context(dataset))
    parallel = None
    wanted = config.distributed.num_devices
    if wanted is not None and wanted > 1:
        import jax

        from ebmkit.distributed import DataParallel

        if wanted > jax.device_count():
            # The checkpoint holds the global arrays, so a run trained on more
            # devices than this process sees is read onto one device (sampling
            # and evaluation need no mesh; docs/distributed.md, "Checkpoints").
            parallel = DataParallel.create(1)
    trainer = Trainer(model, dataset, run_dir=path, hooks=False, parallel=parallel)
    loaded = trainer.restore(step)
    model.load_train_state(trainer.state)
    return Run(run_dir=path, config=config, dataset=dataset, model=model, trainer=trainer, step=loaded)


#: KL gaps (nats) up to which ``diagnose`` calls a 2-D fit good, and above which poor:
#: the shipped toy recipes score 0.02-0.06 over their box, an untrained or
#: collapsed model 0.5 and more.
KL_GOOD, KL_POOR = 0.1, 0.3


def diagnosis_notes(report: dict[str, float], bounds: tuple[float, float] | None = None) -> list[tuple[str, str, str]]:
    """``(quantity, value, verdict)`` rows that explain a :func:`~ebmkit.evaluate.diagnose` report.

    Only what the report holds is judged: a model trained without a sampler
    or a replay buffer has no chains and no buffer to speak of.
    """
    rows = []
    if "kl_gap" in report:
        gap = report["kl_gap"]
        verdict = ("ok: close to the data" if gap <= KL_GOOD
                   else "fair: visibly off the data" if gap <= KL_POOR
                   else "check: a poor fit (train longer, or see docs/guide.md's troubleshooting)")
        rows.append(("KL gap (nats, whole plane)", f"{gap:.4g}", verdict))
    if "tail_mass" in report:
        tail = report["tail_mass"]
        rows.append((
            "mass outside the data box", f"{tail:.2%}",
            "ok" if tail <= 1e-3 else "check: the energy does not confine its mass (base_measure; docs/evaluation.md)",
        ))
    rows.append(("real energy (data)", f"{report['real_energy']:.4g}", ""))
    if "fake_energy" in report:
        gap = report["energy_gap"]
        drop = report["mcmc_decrease"]
        rows += [
            ("fake energy (samples)", f"{report['fake_energy']:.4g}", ""),
            (
                "energy gap (fake - real)",
                f"{gap:+.4g}",
                "ok: samples sit higher than data" if gap > 0
                else "check: samples reach lower energy than data (sampler too strong or model collapsed)",
            ),
            (
                "MCMC energy decrease",
                f"{drop:+.4g}",
                "ok: chains move downhill" if drop > 0
                else "check: chains do not lower the energy (step size? energy too flat?)",
            ),
        ]
    if "rhat" in report:
        rhat = report["rhat"]
        rows += [
            (
                "split R-hat (worst coordinate)",
                f"{rhat:.4g}",
                "ok: the chains agree" if rhat <= 1.01
                else "check: the chains disagree (not mixed yet, or stuck in different modes: "
                "more steps, or replica_exchange)",
            ),
            ("bulk / tail ESS (worst coordinate)", f"{report['ess_bulk']:.4g} / {report['ess_tail']:.4g}",
             "effective independent draws of the second half of the chains"),
        ]
        if "ess_per_1000_grads" in report:
            rows.append(("ESS per 1,000 gradients", f"{report['ess_per_1000_grads']:.4g}",
                         f"{report.get('ess_per_second', float('nan')):.4g} per second"))
        if report.get("divergences", 0.0) > 0:
            rows.append(("divergent transitions", f"{report['divergences']:.0f}",
                         "check: the step is too large for this energy somewhere"))
    if "buffer_usage" in report:
        rows.append(
            ("buffer usage", f"{report['buffer_usage']:.0%}", "filled slots of the replay buffer; grows towards 100% under PCD")
        )
    if "sample_min" in report:
        low, high = report["sample_min"], report["sample_max"]
        if bounds is not None:
            inside = bounds[0] <= low and high <= bounds[1]
            verdict = (f"ok: inside the data bounds [{bounds[0]:g}, {bounds[1]:g}]" if inside
                       else f"check: leaves the data bounds [{bounds[0]:g}, {bounds[1]:g}]")
        else:
            verdict = ""
        rows.append(("sample range", f"[{low:.4g}, {high:.4g}]", verdict))
        bad = report.get("non_finite_fraction", 0.0)
        rows.append(("non-finite chains", f"{bad:.0%}", "ok" if bad == 0 else "check: NaN/inf in the chains"))
    else:
        rows.append(("samples", "n/a", "the model has no sampler (set one in the config to draw samples)"))
    return rows


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and NaN/inf as ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
