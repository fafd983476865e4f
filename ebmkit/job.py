"""The main job: train on a data set and leave plots, metrics and a checkpoint.

``ebmkit train`` is a thin shell over :func:`train_job`; notebooks can call it
directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ebmkit.components import build_dataset, data_context
from ebmkit.config import Config, load_config
from ebmkit.distributed import initialize as initialize_distributed
from ebmkit.distributed import prepare_cpu_devices
from ebmkit.errors import RunDirectoryError
from ebmkit.model import EBM
from ebmkit.run import jsonable
from ebmkit.training import Trainer, TrainResult

__all__ = ["train_job", "run_lock", "RunDirectoryError", "write_artifacts", "SUMMARY_KEYS", "SAFE_ON_RESUME"]

#: Keys every summary.json has (NaN where they do not apply, e.g. NLL on
#: images); ``energy_gap`` is there when the loss has negatives.
SUMMARY_KEYS = ("nll", "kl_gap", "steps_per_s")


def _default_out(config: Config) -> Path:
    from ebmkit.config import component_name

    name, _ = component_name(config.dataset)
    return Path("runs") / name.replace(":", "_")


def train_job(
    config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    overrides: Iterable[str] = (),
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | str = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and write ``out/{config.toml, checkpoints/, metrics.jsonl,
    samples.png, energy.png, curves.png, summary.json}``.

    Args:
        config: a config, mapping or TOML/JSON path; ``None`` for the default
            assembly (mlp + langevin + pcd + replay on 8gaussians).
        overrides: ``"a.b=c"`` strings applied last.
        out: the run directory (default ``runs/<dataset>``).
        resume: continue from the latest checkpoint in ``out``.
        progress: ``True``/``"bar"``: a progress bar; ``"lines"``: a plain
            line per log interval on stderr; ``False``: nothing.
        plots: write the PNGs.

    Returns:
        The summary (also written to ``summary.json``).

    Data-parallel runs (``[distributed]``, docs/distributed.md) start the
    multi-process runtime here when asked, before JAX touches a device; every
    process trains, only process 0 writes plots and ``summary.json``.

    Raises:
        RunDirectoryError: ``out`` holds a run and ``resume`` is off.
        ShardingError: the run cannot be split over the requested devices.
    """
    overrides = list(overrides)
    run_dir = Path(out) if out is not None else None
    own_config = None
    if resume and config is None:
        # Resume means the run's own config: the default one would silently
        # retrain something else. Only what is safe to change may be set.
        guess = run_dir if run_dir is not None else _default_out(load_config(None))
        if (guess / "config.toml").is_file():
            own_config = guess / "config.toml"
            changed = _changed_settings(load_config(own_config), load_config(own_config, overrides=overrides))
            unsafe = [k for k in changed if k not in SAFE_ON_RESUME and not k.startswith("distributed.")]
            if unsafe:
                raise RunDirectoryError(
                    f"cannot change {', '.join(unsafe)} when resuming {guess}; on resume only "
                    f"{', '.join(SAFE_ON_RESUME)} and distributed.* may change "
                    "(start a new --out directory to change the rest)"
                )
            config = own_config
    cfg = config if isinstance(config, Config) and not overrides else load_config(config, overrides=overrides)
    cfg = absolute_paths(cfg, Path(config).parent if isinstance(config, (str, os.PathLike)) else Path.cwd())
    prepare_cpu_devices(cfg.distributed.num_devices)
    initialize_distributed(cfg.distributed)
    run_dir = run_dir if run_dir is not None else _default_out(cfg)
    with run_lock(run_dir):
        return _train_in(run_dir, cfg, resume=resume, progress=progress, plots=plots, own_config=own_config)


#: Settings a resumed run may change (each change is recorded in resumes.jsonl).
SAFE_ON_RESUME = (
    "train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.learning_rate", "train.ema_decay",
)


def absolute_paths(cfg: Config, base_dir: Path) -> Config:
    """``cfg`` with a relative data set ``path`` made absolute (relative to the
    config file's folder, or the working directory for configs given in
    code), so that the run's config.toml works from any directory."""
    dataset = cfg.dataset
    path = getattr(dataset, "path", None)
    if not isinstance(path, str) or not path or Path(path).expanduser().is_absolute():
        return cfg
    import attrs

    candidates = [(base_dir / Path(path).expanduser()).resolve(), (Path.cwd() / Path(path).expanduser()).resolve()]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        return cfg  # the data set says what is missing, as written
    return attrs.evolve(cfg, dataset=attrs.evolve(dataset, path=str(found)))


def _changed_settings(before: Config, after: Config) -> list[str]:
    """Dotted paths whose values differ between two configs."""
    from ebmkit.config import unstructure

    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(path)

    walk(unstructure(before), unstructure(after), "")
    return out


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir``'s writer lock: one process writes a run directory.

    The lock is an OS file lock (``filelock``), released when the process ends
    however it ends, so a killed run leaves no stale lock behind.

    Raises:
        RunDirectoryError: another process holds it (its pid is named) or the
            directory cannot be created.
    """
    import filelock

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    lock = filelock.FileLock(str(run_dir / ".lock"))
    holder = run_dir / ".writer"
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        try:
            pid = json.loads(holder.read_text(encoding="utf-8")).get("pid", "?")
        except (OSError, ValueError):
            pid = "?"
        raise RunDirectoryError(
            f"{run_dir} is being written by another ebmkit process (pid {pid}); wait for it to finish, "
            "or choose another --out"
        ) from None
    try:
        holder.write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")
        yield
    finally:
        lock.release()


def _train_in(run_dir: Path, cfg: Config, *, resume: bool, progress: bool | str, plots: bool,
              own_config: Path | None) -> dict[str, Any]:
    ckpt_dir = run_dir / "checkpoints"
    has_run = ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    if has_run and not resume:
        raise RunDirectoryError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume and not has_run:
        raise RunDirectoryError(f"nothing to resume: {ckpt_dir} has no checkpoint")
    if resume:
        _record_changes(run_dir, cfg)
    dataset = build_dataset(cfg.dataset)
    model = EBM(cfg, data=data_context(dataset))
    trainer = Trainer(model, dataset, run_dir=run_dir, progress=progress)
    started = time.perf_counter()
    result = trainer.fit(resume=resume)
    summary = {key: float("nan") for key in SUMMARY_KEYS}
    summary.update(result.summary)
    if "labels" in cfg.needs and trainer.is_main_process:
        # A labelled run (jem): the model is a classifier too.
        from ebmkit.evaluate.classify import evaluate_classifier

        summary.update(evaluate_classifier(model, dataset, seed=cfg.train.seed))
    summary["wall_time_s"] = time.perf_counter() - started
    summary["run_dir"] = str(run_dir)
    if getattr(trainer, "already_complete", False):
        summary["note"] = (
            f"the run had already reached step {trainer.step}: finished its evaluation, summary and plots"
        )
    if "tail_mass" in summary:
        from ebmkit.evaluate import tail_warning

        note = tail_warning(summary["tail_mass"], bool(summary.get("decayed", 1.0)))
        if note:
            summary["warnings"] = [note]
    elif summary.get("tails_confined") == 0.0:
        summary["warnings"] = [
            f"the energy rises {summary['tail_shortfall']:.0f} nats too slowly away from the data for its mass "
            "to stay near it (heavy tails: AIS estimates of log Z cannot be trusted); a base measure confines "
            "it (docs/evaluation.md)"
        ]
    if not trainer.is_main_process:
        return summary
    if plots:
        summary["plots"] = write_artifacts(model, dataset, result, run_dir, calibration=summary.get("calibration"),
                                           ece=summary.get("ece"))
        for name in summary["plots"]:
            trainer.call_hook("ebmkit_plot_saved", run_dir=run_dir, step=trainer.step, path=run_dir / name)
    with open(run_dir / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(jsonable(summary), fh, indent=2)
    return summary


def _record_changes(run_dir: Path, cfg: Config) -> None:
    """Append the safe settings that differ from the run's ``config.toml`` to
    ``resumes.jsonl`` (one row per resume that changes something)."""
    import tomllib

    from ebmkit.config import unstructure

    path = run_dir / "config.toml"
    if not path.is_file():
        return
    try:
        before = unstructure(load_config(tomllib.loads(path.read_text(encoding="utf-8"))))
    except Exception:  # noqa: BLE001 - an unreadable old config is reported by the resume itself
        return
    after = unstructure(cfg)
    changes = {}
    for key in SAFE_ON_RESUME:
        section, name = key.split(".")
        old, new = before.get(section, {}).get(name), after.get(section, {}).get(name)
        if old != new:
            changes[key] = [old, new]
    if changes:
        with open(run_dir / "resumes.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"changes": changes}) + "\n")


def write_artifacts(model: EBM, dataset: Any, result: TrainResult, run_dir: Path, *,
                    calibration: Mapping[str, Any] | None = None, ece: float | None = None) -> list[str]:
    """``samples.png`` (for a model with a sampler), ``energy.png`` and
    ``curves.png`` for a finished run; for a labelled run with its
    ``calibration`` bins also ``reliability.png`` and the per-class pictures
    (:func:`write_class_artifacts`)."""
    from ebmkit import viz

    written = []
    if calibration is not None:
        written += write_class_artifacts(model, dataset, run_dir, calibration=calibration, ece=ece)
    key = jax.random.key(model.config.train.seed + 1)
    if model.sampler is None:
        if tuple(dataset.event_shape) == (2,):
            viz.visualize_energy_landscape(
                model, bounds=dataset.bounds, samples=None, path=run_dir / "energy.png", log_density=True,
            )
            written.append("energy.png")
    elif tuple(dataset.event_shape) == (2,):
        samples = np.asarray(model.generate(2000, n_steps=max(model.num_steps, 100), rng_key=key))
        data = dataset.held_out(2000)
        viz.plot_samples(samples, data=data, bounds=dataset.bounds, path=run_dir / "samples.png")
        viz.visualize_energy_landscape(
            model, bounds=dataset.bounds, samples=samples[:500], path=run_dir / "energy.png",
            log_density=True,
        )
    else:
        samples = np.asarray(model.generate(64, n_steps=max(model.num_steps, 60), rng_key=key))
        shape = tuple(dataset.event_shape)
        if len(shape) == 3 and shape[-1] in (1, 3):  # images: a grid; other shapes have no picture
            # Bits are 0/1: black and white, not the grey of -1..1's middle.
            binary = str(getattr(dataset, "support", "continuous")) == "binary"
            viz.save_image_grid(samples, run_dir / "samples.png", value_range=(0, 1) if binary else (-1, 1))
            written.append("samples.png")
        data = dataset.held_out(256)
        viz.plot_energy_histogram(
            np.asarray(model.energy(data)), np.asarray(model.energy(samples)), run_dir / "energy.png"
        )
        written.append("energy.png")
    if model.sampler is not None and tuple(dataset.event_shape) == (2,):
        written += ["samples.png", "energy.png"]
    viz.plot_training_curves(result.history, run_dir / "curves.png")
    written.append("curves.png")
    return written


def write_class_artifacts(model: EBM, dataset: Any, run_dir: Path, *, calibration: Mapping[str, Any],
                          ece: float | None = None, per_class: int = 10) -> list[str]:
    """The pictures of a classifier run: ``reliability.png`` (the reliability
    diagram), and ``class_densities.png`` (2-D data: ``p(x | y)`` per class)
    or ``samples_by_class.png`` (images: one row of fresh conditional chains
    per class, for a model with a sampler)."""
    from ebmkit import viz

    viz.plot_reliability_diagram(calibration, run_dir / "reliability.png", ece=ece)
    written = ["reliability.png"]
    k = int(dataset.num_classes)
    shape = tuple(dataset.event_shape)
    if shape == (2,):
        x, y = dataset.held_out_labelled(2000) if hasattr(dataset, "held_out_labelled") else (None, None)
        viz.plot_class_densities(model, bounds=dataset.bounds, data=x, labels=y, path=run_dir / "class_densities.png")
        written.append("class_densities.png")
    elif model.sampler is not None and len(shape) == 3 and shape[-1] in (1, 3):
        labels = np.repeat(np.arange(k), per_class)
        key = jax.random.key(model.config.train.seed + 2)
        samples = np.asarray(model.generate(len(labels), n_steps=max(model.num_steps, 60), rng_key=key,
                                            labels=labels))
        viz.save_image_grid(samples, run_dir / "samples_by_class.png", nrow=per_class)
        written.append("samples_by_class.png")
    return written
