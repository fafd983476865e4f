"""The generic trainer: one compiled program per step, checkpoints, resume,
divergence handling and host-side hooks.

The training state (:class:`~ebmkit.training.TrainState`) stays on the device
for the whole run. Each dispatch runs ``steps_per_call`` complete steps
(:mod:`ebmkit.training.fusion` over :func:`~ebmkit.training.make_train_step`); metrics are fetched
from the device only every ``log_every`` steps, where divergence is checked and
hooks fire.

Determinism: parameters, MCMC keys and the data order all derive from
``train.seed``; a run stopped after step k and resumed from its checkpoint
reproduces the uninterrupted run bit for bit.

Data parallel: with ``[distributed] devices = N`` (or a
:class:`~ebmkit.distributed.DataParallel` passed in) the same step runs under
``shard_map`` on a mesh of N devices; the batch and the replay buffer are
split across them and only process 0 reports (see :mod:`ebmkit.distributed`).
The trainer itself only talks to a :class:`~ebmkit.training.placement.Placement`.

Parameter EMA (``train.ema_decay``): the compiled step keeps a moving average
of the energy's parameters in the state (replicated like the parameters,
checkpointed with them). Evaluation — :meth:`Trainer.energy_fn`, the
``eval_every`` figures, the summary — uses it, as the model does after
:meth:`Trainer.fit`; with the default evaluation the summary adds the live
parameters' figures as ``live_<key>``. Training's chains always run on the
live parameters.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.config import Config, dump_config
from ebmkit.distributed import DataParallel, data_parallel_step
from ebmkit.errors import (
    CheckpointError,
    ConfigError,
    ConfigProblem,
    TrainingDiverged,
    TrainingInterrupted,
)
from ebmkit.nn import energy_programs
from ebmkit.sampling import warmup
from ebmkit.training.checkpoint import Checkpointer
from ebmkit.training.divergence import ADVICE, divergence_reason
from ebmkit.training.fusion import fuse_steps
from ebmkit.training.hooks import MetricsWriter, ProgressBar, ProgressLines, read_rows
from ebmkit.training.optim import get_learning_rate, lr_schedule, set_learning_rate
from ebmkit.training.placement import Placement, SingleDevice
from ebmkit.training.step import TrainState, make_train_step
from ebmkit.types import Adaptive, Batch

if TYPE_CHECKING:
    from ebmkit.model import EBM

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "ADVICE"]


@attrs.define
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: the last completed step.
        history: one dict of host floats per log interval.
        summary: final figures (``loss``, ``energy_gap`` where the loss has
            negatives, ``steps_per_s``, evaluation). With ``train.ema_decay``
            the evaluation is of the moving average (``evaluated_with =
            "ema"``) and, with the default evaluation, the live parameters'
            figures follow as ``live_<key>``.
        retries: rollbacks that divergence forced.
    """

    step: int
    history: list[dict[str, float]]
    summary: dict[str, Any]
    retries: int = 0


def _as_host(metrics: list[dict[str, jax.Array]]) -> list[dict[str, np.ndarray]]:
    # On CPU an array's host view is free (np.asarray); jax.device_get would
    # schedule an asynchronous copy per array first, 7x slower for the ~1,300
    # scalars of 100 logged steps (15 vs 2 ms, 2 % of the training time). On
    # an accelerator those overlapping copies are what make it fast.
    if jax.default_backend() == "cpu":
        return [{k: np.asarray(v) for k, v in m.items()} for m in metrics]
    return [{k: np.asarray(v) for k, v in m.items()} for m in jax.device_get(metrics)]


#: Folded into ``jax.random.key(train.seed)``: the key of the batches drawn on the device.
_DATA_STREAM = 0x44415441  # "DATA"


def _drawing_batches(program: Callable, draw: Callable, batch_size: int, data_key: jax.Array) -> Callable:
    """``program(state, batches)`` fed by batches drawn on the device:
    ``(state, (arrays, steps)) -> program(state, batches)``, the batch of step
    ``s`` drawn from ``fold_in(data_key, s)`` (so it depends on the seed and
    the step alone, whatever ``steps_per_call`` and however often resumed)."""

    def drawn(state: Any, xs: tuple[Any, jax.Array]) -> Any:
        arrays, steps = xs

        def one(step: jax.Array) -> Batch:
            out = draw(arrays, jax.random.fold_in(data_key, step), batch_size)
            return Batch(*out) if isinstance(out, tuple) else Batch(out)

        return program(state, jax.vmap(one)(steps))

    return drawn


@jax.jit
def _all_finite_program(state: Any) -> jax.Array:
    """Whether every floating-point value of ``state`` is finite (on the device)."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


class Trainer:
    """Trains an :class:`~ebmkit.EBM` on a data set.

    Args:
        model: the assembled model; its ``config.train`` gives the settings.
        dataset: an :class:`ebmkit.data.Dataset` (``sample(rng, n)``, and
            ``sample_labelled`` when the loss needs labels).
        run_dir: where checkpoints, ``metrics.jsonl`` and ``config.toml`` go;
            ``None`` keeps everything in memory.
        progress: ``True`` (or ``"bar"``) shows a progress bar (rich);
            ``"lines"`` prints a plain line per log interval to stderr (for
            logs, CI, nohup); ``False`` prints nothing.
        evaluate: ``evaluate(trainer) -> dict`` run every ``eval_every`` steps
            and at the end; default: exact grid NLL for 2-D data sets. It
            should read the parameters through :meth:`energy_fn` or
            :meth:`eval_variables` (which honour :attr:`evaluating`).
        hooks: fire the ``ebmkit.plugins`` host hooks.
        parallel: where to train: a :class:`~ebmkit.distributed.DataParallel`
            mesh or any :class:`~ebmkit.training.placement.Placement`;
            default: what ``config.distributed`` asks for (one device).

    Raises:
        ShardingError: the batch or the buffer cannot be split over the mesh.
    """

    def __init__(
        self,
        model: EBM,
        dataset: Any,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        progress: bool = False,
        evaluate: Callable[[Trainer], dict[str, float]] | None = None,
        hooks: bool = True,
        parallel: Placement | None = None,
    ):
        self.model = model
        self.dataset = dataset
        self.config: Config = model.config
        self.train = model.config.train
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.evaluate_fn = evaluate
        self.use_hooks = hooks
        if tuple(dataset.event_shape) != model.event_shape:
            raise ValueError(
                f"data set {getattr(dataset, 'name', '?')!r} has samples of shape {tuple(dataset.event_shape)} "
                f"but the model expects {model.event_shape}"
            )
        self.labelled = "labels" in self.config.needs
        capacity = getattr(model.buffer, "capacity", None)
        if isinstance(capacity, int) and "buffer" in self.config.needs and capacity < self.train.batch_size:
            raise ConfigError([ConfigProblem(
                path="buffer.capacity",
                message=f"{capacity} slots cannot give {self.train.batch_size} distinct chains per step",
                suggestion=f"set buffer.capacity >= train.batch_size ({self.train.batch_size})",
            )])
        self.checkpointer = (
            Checkpointer(self.run_dir / "checkpoints", keep=self.train.keep_checkpoints)
            if self.run_dir is not None
            else None
        )
        if parallel is None:
            parallel = DataParallel.from_config(self.config.distributed)
        self.placement: Placement = parallel if parallel is not None else SingleDevice()
        #: The mesh, or ``None`` for one device (kept for callers of the first API).
        self.parallel = parallel
        # A copy: the compiled step donates its input buffers, and the model's
        # own arrays must survive a run that fails before it writes back.
        state: TrainState = jax.tree.map(jnp.copy, model.train_state())
        self.placement.check(
            batch_size=self.train.batch_size, buffer=model.buffer, buffer_state=state.buffer_state,
            sampler_state=state.sampler_state,
        )
        graphdef, eval_graphdef = model._graphdefs()
        self._eval_graphdef = eval_graphdef
        axis_name = getattr(self.placement, "axis_name", None)
        step = make_train_step(
            graphdef, eval_graphdef, sampler=model.sampler, loss=model.loss_fn,
            buffer=self.placement.local_buffer(model.buffer), tx=model._tx, data=model.data,
            axis_name=axis_name, ema_decay=self.train.ema,
        )
        if axis_name is not None:
            step = data_parallel_step(step, axis_name)
        #: The per-device program (what runs under shard_map); for references.
        self.local_program = fuse_steps(step, self.train.energy_bound)
        self.state: TrainState = self.placement.put_state(state)
        #: The data set's device sampler when batches are drawn inside the
        #: compiled step (``train.data_on_device``), else ``None``.
        self.device_data = self._device_sampler()
        program = self.local_program
        if self.device_data is not None:
            program = _drawing_batches(
                self.local_program, self.device_data.draw, self.train.batch_size,
                jax.random.fold_in(jax.random.key(self.train.seed), _DATA_STREAM),
            )
            self._data_arrays = jax.device_put(self.device_data.arrays)
        self._step = self.placement.compile(program, self.state)
        self.step = 0
        self.data_rng = np.random.default_rng(self.placement.data_seed(self.train.seed))
        self.retries = 0
        self.history: list[dict[str, float]] = []
        self._pm = None
        self._notes: list[str] = []
        self._stop_signal: int | None = None
        self._disabled_plugins: set[int] = set()
        #: Which parameters :meth:`energy_fn` and the evaluation use right now
        #: (``"ema"`` or ``"live"``); the model's choice by default.
        self.evaluating: str = model.evaluate_with
        t = self.train
        self._schedule = lr_schedule(t.lr_schedule, t.steps, warmup_steps=t.warmup_steps, final_fraction=t.final_lr_fraction)

    # -- state -------------------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        """Whether this process reports (metrics, hooks, progress, files)."""
        return self.placement.is_main_process

    def _metadata(self) -> dict[str, Any]:
        meta = {
            "step": self.step,
            "config_toml": dump_config(self.config),
            "data_rng": self.data_rng.bit_generator.state,
            "retries": self.retries,
            "learning_rate": get_learning_rate(self.state.opt_state),
            "ebmkit_version": _version(),
            # Whether the state holds ema_params (a resume needs to know).
            "ema_decay": self.train.ema,
        }
        if self.parallel is not None:
            meta["devices"] = self.placement.num_devices
            meta["processes"] = self.placement.process_count
            if self.placement.process_count > 1:
                # Each process reads its own data stream; all of them must resume.
                meta["data_rng_per_process"] = self.placement.allgather_json(self.data_rng.bit_generator.state)
        return meta

    def _snapshot(self) -> Any:
        return self.placement.snapshot(self.state)

    def state_problem(self, pending: list[dict[str, jax.Array]] = ()) -> str | None:
        """Why the current state must not be saved, or ``None``.

        Checks the divergence flags of steps not yet logged (computed inside
        the compiled step, so fetching them costs a few bytes) and the whole
        state on the device — parameters, optimiser, buffer, loss and sampler
        state — for NaN and infinity (one reduction program).
        """
        for m in _as_host([{"diverged": p["diverged"]} for p in pending]) if pending else []:
            if np.any(m["diverged"]):
                return "diverged since the last logged step"
        if not bool(_all_finite_program(self.state)):
            return "non-finite values in the training state"
        return None

    def save_checkpoint(self) -> Path | None:
        """Save the current state, verified finite on the device first: a
        diverged state never reaches disk.

        Raises:
            TrainingDiverged: the state holds NaN or infinity.
        """
        problem = self.state_problem()
        if problem is not None:
            raise TrainingDiverged(f"refusing to checkpoint step {self.step}: {problem}")
        self._good = (self.step, self._snapshot(), self.data_rng.bit_generator.state, self.retries)
        if self.checkpointer is None:
            return None
        meta = {**self._metadata(), "verified_finite": True}
        path = self.checkpointer.save(self.step, self.placement.checkpoint_view(self.state), meta)
        self._hook("ebmkit_checkpoint_saved", step=self.step, path=path)
        return path

    def restore(self, step: int | None = None) -> int:
        """Load a checkpoint of this run (default: the latest); returns its step.

        Raises:
            CheckpointError: none exists, or it was written with another config.
        """
        if self.checkpointer is None:
            raise CheckpointError("this trainer has no run_dir to restore from")
        # Compare configs first: "you changed hidden_dims" beats a list of shapes.
        meta = self.checkpointer.metadata(step)
        saved = _comparable(meta.get("config_toml", ""))
        current = _comparable(dump_config(self.config))
        if saved != current:
            diff = _first_difference(saved, current)
            raise CheckpointError(
                f"checkpoint {self.checkpointer.path(meta['step'])} was written with a different config "
                f"({diff}); resume with the run's own config.toml or start a new --out directory"
            )
        # Restored straight into this placement's layout, whatever layout saved it.
        template = self.placement.checkpoint_view(self.state)
        template_for = functools.partial(self._template_for, template)
        if step is None:
            state, meta = self.checkpointer.restore_intact(template_for)
        else:
            state, meta = self.checkpointer.restore(template_for, meta["step"])
        state = self._ema_after_restore(state, meta)
        saved_lr = _saved_learning_rate(meta.get("config_toml", ""))
        if saved_lr is not None and saved_lr != self.train.learning_rate:
            # A resume that asks for another learning rate gets it from here on.
            state = state._replace(opt_state=set_learning_rate(state.opt_state, self.train.learning_rate))
        self.state = self.placement.put_state(state)
        self.step = int(meta["step"])
        self.retries = int(meta.get("retries", 0))
        self._restore_data_rng(meta)
        self._good = (self.step, self._snapshot(), self.data_rng.bit_generator.state, self.retries)
        return self.step

    def _template_for(self, template: TrainState, step: int) -> TrainState:
        """``template`` shaped as checkpoint ``step`` was written: with
        ``ema_params`` exactly when that run kept an average (its metadata
        says; checkpoints from before parameter EMA hold none)."""
        saved = self.checkpointer.metadata(step).get("ema_decay") is not None
        if saved and template.ema_params is None:
            return template._replace(ema_params=template.energy_params)
        if not saved and template.ema_params is not None:
            return template._replace(ema_params=None)
        return template

    def _ema_after_restore(self, state: TrainState, meta: Mapping[str, Any]) -> TrainState:
        """The restored state with the average this run keeps: a checkpoint
        without one starts it at its parameters (said in a warning); one
        kept by a run that had it on is dropped when this run has it off."""
        wanted = self.train.ema is not None
        if wanted and state.ema_params is None:
            warnings.warn(
                f"checkpoint {self.checkpointer.path(int(meta['step']))} holds no parameter EMA (written before "
                f"train.ema_decay was set, or by an older ebmkit); the average starts at its parameters "
                f"(step {meta['step']}), so it covers only the steps from here on",
                RuntimeWarning, stacklevel=3,
            )
            return state._replace(ema_params=jax.tree.map(jnp.copy, state.energy_params))
        if not wanted and state.ema_params is not None:
            return state._replace(ema_params=None)
        return state

    def _restore_data_rng(self, meta: Mapping[str, Any]) -> None:
        processes = self.placement.process_count
        if processes == 1:
            self.data_rng.bit_generator.state = meta["data_rng"]
            return
        per_process = meta.get("data_rng_per_process") or []
        if len(per_process) == processes:
            self.data_rng.bit_generator.state = per_process[self.placement.process_index]
        else:
            # Another process layout saved it: the data order cannot continue as
            # it was; start a fresh, still deterministic, stream per process.
            self.data_rng = np.random.default_rng((self.train.seed, self.placement.process_index, self.step))

    def _rollback(self, reason: str) -> None:
        step, host, rng_state, _ = self._good
        diverged_at = self.step
        # Compound the decay: the rate in force when it diverged, not the saved one.
        lr = get_learning_rate(self.state.opt_state)
        self.retries += 1
        state = self.placement.restore_snapshot(host)
        self.step = step
        self.data_rng.bit_generator.state = rng_state
        new_lr = None
        if lr is not None:
            new_lr = lr * self.train.lr_decay_on_retry
            state = state._replace(opt_state=set_learning_rate(state.opt_state, new_lr))
        state = state._replace(rng_key=jax.random.fold_in(state.rng_key, 1000 + self.retries))
        self.state = self.placement.put_state(state)
        self._notes.append(
            f"near step {diverged_at}: {reason}; rolled back to step {step} with a new key"
            + (f" and learning rate {new_lr:.3g}" if new_lr is not None else "")
        )

    # -- hooks -------------------------------------------------------------------

    def _hook(self, name: str, **kwargs: Any) -> None:
        """Call every implementation of hook ``name``, each on its own: a
        third-party plugin that raises is disabled for the rest of the run with
        a warning (fatal with ``EBMKIT_STRICT_PLUGINS=1``), and the run, its
        checkpoints and the other plugins go on. The trainer's own plugins
        (metrics file, progress) raise as usual."""
        if self._pm is None:
            return
        from ebmkit.plugins import EbmkitPluginWarning, plugin_origin, strict_plugins

        own = {id(p) for p in getattr(self, "_own_plugins", [])}
        for impl in reversed(getattr(self._pm.hook, name).get_hookimpls()):
            if id(impl.plugin) in self._disabled_plugins:
                continue
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames if arg in kwargs})
            except Exception as exc:
                if id(impl.plugin) in own or strict_plugins():
                    raise
                dist, version, target = plugin_origin(impl.plugin)
                warnings.warn(
                    f"ebmkit plugin {dist} {version or ''} ({target}) raised in {name} "
                    f"({type(exc).__name__}: {exc}); it is disabled for the rest of this run",
                    EbmkitPluginWarning, stacklevel=2,
                )
                self._disabled_plugins.add(id(impl.plugin))

    def call_hook(self, name: str, **kwargs: Any) -> None:
        """Call host hook ``name`` for this run the way the trainer does: on
        the main process only, on the plugins the run uses (none but its own
        with ``hooks=False``), a raising third-party plugin disabled rather
        than fatal. For code that writes a run's files after :meth:`fit`, such
        as :func:`ebmkit.train_job`'s plots (``ebmkit_plot_saved``); before the
        first :meth:`fit` it does nothing."""
        self._hook(name, **kwargs)

    @contextlib.contextmanager
    def _catch_stop_signals(self) -> Iterator[None]:
        """On SIGINT/SIGTERM, finish the step in flight, save, and stop; a
        second signal acts at once (the handlers in force before return)."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous[signum])

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop(self, pending: list[dict[str, jax.Array]]) -> None:
        """Save a checkpoint (if the state is sound) and raise TrainingInterrupted."""
        signum = self._stop_signal
        name = signal.Signals(signum).name
        problem = self.state_problem(pending)
        where = f" in {self.checkpointer.directory}" if self.checkpointer else ""
        if problem is None:
            self.save_checkpoint()
            message = f"stopped by {name} at step {self.step}; checkpoint saved{where}"
        else:
            message = f"stopped by {name} at step {self.step} ({problem}); the last good checkpoint is step {self._good[0]}{where}"
        raise TrainingInterrupted(message, step=self.step if problem is None else self._good[0], signum=signum,
                                  run_dir=self.run_dir)

    def _logged_history(self) -> list[dict[str, float]]:
        """The rows ``metrics.jsonl`` holds up to the restored step (rows after
        it belong to steps that are being redone)."""
        if self.run_dir is None:
            return []
        return [row for row in read_rows(self.run_dir / "metrics.jsonl") if row.get("step", 0) <= self.step]

    def _open_hooks(self, append: bool, bar: Any) -> None:
        import pluggy

        from ebmkit import hookspecs
        from ebmkit.plugins import get_plugin_manager

        self._own_plugins = []
        if not self.is_main_process:  # one report per run: process 0's
            self._pm = None
            return
        if self.use_hooks:
            self._pm = get_plugin_manager()
        else:  # still fire our own built-in hooks, but no third-party ones
            self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            self._pm.add_hookspecs(hookspecs)
        if self.run_dir is not None:
            self._own_plugins.append(
                MetricsWriter(self.run_dir / "metrics.jsonl", append=append, keep_until=self.step if append else None)
            )
        if bar is not None:
            self._own_plugins.append(bar)
        for i, plugin in enumerate(self._own_plugins):
            self._pm.register(plugin, name=f"ebmkit.{type(plugin).__name__}:{id(self)}:{i}")

    def _close_hooks(self) -> None:
        if self._pm is not None:
            for plugin in self._own_plugins:
                self._pm.unregister(plugin)

    # -- the loop ----------------------------------------------------------------

    def _batches(self, n_steps: int) -> Any:
        """``[n_steps, batch, ...]`` from the data stream (with labels
        ``[n_steps, batch]`` when the loss needs them); with several
        processes, this process's share of each batch."""
        b = self.placement.local_batch_size(self.train.batch_size)
        if not self.labelled:
            return Batch(np.stack([self.dataset.sample(self.data_rng, b) for _ in range(n_steps)]))
        pairs = [self.dataset.sample_labelled(self.data_rng, b) for _ in range(n_steps)]
        return Batch(np.stack([x for x, _ in pairs]), np.stack([np.asarray(y, np.int32) for _, y in pairs]))

    def _device_batches(self, n_steps: int) -> Any:
        """What the compiled program takes for its next ``n_steps`` steps: host
        batches, or (drawing on the device) the data arrays and the steps' indices."""
        if self.device_data is not None:
            steps = (np.arange(self.step, self.step + n_steps, dtype=np.int64) % 2**32).astype(np.uint32)
            return self._data_arrays, steps
        return self.placement.put_batches(self._batches(n_steps))

    def _device_sampler(self) -> Any:
        """The data set's :class:`~ebmkit.data.DeviceSampler` if batches are to
        be drawn inside the compiled step (``train.data_on_device``)."""
        mode = self.train.data_on_device
        if mode == "never":
            return None
        sampler, reason = None, None
        if not isinstance(self.placement, SingleDevice):
            reason = "training runs on a device mesh (data-parallel batches are drawn on the host)"
        else:
            make = getattr(self.dataset, "device_sampler", None)
            sampler = make(labelled=self.labelled) if callable(make) else None
            if sampler is None:
                reason = f"data set {getattr(self.dataset, 'name', '?')!r} draws its batches on the host only"
        if reason is not None and mode == "always":
            raise ConfigError([ConfigProblem(
                path="train.data_on_device", message=f"'always' cannot be met: {reason}",
                suggestion='set train.data_on_device = "auto"',
            )])
        return sampler if reason is None else None

    def _warmup_sampler(self) -> None:
        """The adaptation phase of an adaptive sampler, before the first step."""
        sampler = self.model.sampler
        if sampler is None or not isinstance(sampler, Adaptive) or sampler.warmup_steps <= 0:
            return
        state = self.placement.to_local(self.state)
        energy = energy_programs(self._eval_graphdef)[0]
        params, rest = state.energy_params, state.energy_state

        @jax.jit
        def run(rng_key: jax.Array, adaptation: Any) -> Any:
            init_key, chain_key = jax.random.split(rng_key)
            x0 = self.model._starts.fresh(init_key, self.train.batch_size)
            _, adaptation = warmup(
                chain_key, sampler, x0, lambda x: energy(params, rest, x), adaptation=adaptation
            )
            return adaptation

        key = jax.random.fold_in(state.rng_key, 0x5741524D)  # "WARM"
        self.state = self.placement.put_state(state._replace(sampler_state=run(key, state.sampler_state)))

    def _diverged(self, reason: str) -> None:
        """Roll back to the last good state, or give up after ``max_retries``."""
        if self.retries >= self.train.max_retries:
            raise TrainingDiverged(
                f"training diverged ({reason}) near step {self.step} after {self.retries} rollback(s).\n"
                + "\n".join(self._notes)
                + ("\n" if self._notes else "")
                + "The last good checkpoint"
                + (f" (step {self._good[0]}) is intact in {self.checkpointer.directory}" if self.checkpointer else " is in memory")
                + ".\n"
                + ADVICE
            )
        self._rollback(reason)

    def _log(self, pending: list[dict[str, jax.Array]], steps_per_s: float) -> dict[str, float] | None:
        """Fetch pending metrics; returns the row, or None after a rollback."""
        host = _as_host(pending)
        diverged = np.concatenate([np.atleast_1d(m["diverged"]) for m in host])
        if diverged.any():
            first = [m for m in host if np.any(m["diverged"])][0]
            reason = divergence_reason(first, self.train.energy_bound)
            self._diverged(reason)
            return None
        row = {}
        for key in host[0]:
            if key == "diverged":
                continue
            row[key] = float(np.mean(np.concatenate([np.atleast_1d(m[key]) for m in host])))
        row["steps_per_s"] = steps_per_s
        lr = get_learning_rate(self.state.opt_state)
        if lr is not None:
            # The rate in force at this step: the base rate (lowered by any
            # rollback) times the schedule's factor.
            row["learning_rate"] = lr * float(self._schedule(self.step))
        return row

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train until ``train.steps``; resumes from the latest checkpoint if asked.

        Raises:
            TrainingDiverged: after ``train.max_retries`` rollbacks, with advice.
            CheckpointError: ``resume`` with an unusable checkpoint.
        """
        t = self.train
        self._notes = []
        resumed = False
        if resume and self.checkpointer is not None and self.checkpointer.latest_step() is not None:
            self.restore()
            resumed = True
            if self.step > t.steps:
                raise CheckpointError(
                    f"the run in {self.run_dir} is at step {self.step}, past the {t.steps} steps asked for; "
                    f"ask for {self.step} or more (--steps {self.step})"
                )
            self.history = self._logged_history()
        if self.run_dir is not None and self.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.run_dir / "config.toml")
        error: BaseException | None = None
        summary: dict[str, Any] = {}
        bar = None
        if self.progress and self.is_main_process:
            bar = ProgressLines(t.steps, self.step) if self.progress == "lines" else ProgressBar(t.steps, self.step)
        self._open_hooks(append=resumed, bar=bar)
        self._hook("ebmkit_run_start", config=self.config, run_dir=self.run_dir)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self._catch_stop_signals())
            if not resumed:
                self._warmup_sampler()
                self.save_checkpoint()
            #: Whether training had already reached its target (a resume that
            #: only finishes evaluation, summary and plots).
            self.already_complete = resumed and self.step >= t.steps
            spc = t.steps_per_call
            pending: list[dict[str, jax.Array]] = []
            bound = getattr(self.placement, "max_in_flight", None)
            in_flight: list[dict[str, jax.Array]] = []
            timing_start, timed_steps, paused = None, 0, 0.0
            while self.step < t.steps:
                n = min(spc, t.steps - self.step)
                xs = self._device_batches(n)
                self.state, metrics = self._step(self.state, xs)
                self.step += n
                pending.append(metrics)
                if bound is not None:
                    in_flight.append(metrics)
                    if len(in_flight) > bound:
                        jax.block_until_ready(in_flight.pop(0))
                if self._stop_signal is not None:
                    self._stop(pending)
                if timing_start is None:
                    if bar is not None:
                        bar.compiling()
                    jax.block_until_ready(metrics)  # exclude compilation from the speed
                    timing_start, timed_steps = time.perf_counter(), 0
                else:
                    timed_steps += n
                at_end = self.step >= t.steps
                if self.step % t.log_every < n or at_end:
                    # Wait for the work, not just its dispatch, before reading the clock.
                    jax.block_until_ready(pending[-1])
                    elapsed = time.perf_counter() - timing_start - paused
                    rate = timed_steps / elapsed if timed_steps and elapsed > 0 else float("nan")
                    row = self._log(pending, rate)
                    pending = []
                    if row is None:  # rolled back
                        continue
                    row["step"] = self.step
                    if t.eval_every and self.step % t.eval_every < n and not at_end:
                        eval_start = time.perf_counter()
                        row.update(self.evaluate())
                        paused += time.perf_counter() - eval_start
                    self.history.append(row)
                    self._hook("ebmkit_step_end", step=self.step, metrics={k: v for k, v in row.items() if k != "step"})
                if t.checkpoint_every and self.step % t.checkpoint_every < n and not at_end:
                    problem = self.state_problem(pending)
                    if problem is not None:
                        pending = []
                        self._diverged(problem)
                        continue
                    self.save_checkpoint()
            if not self.already_complete:
                problem = self.state_problem(pending)
                if problem is not None:
                    self._diverged(problem)  # raises: the end was reached by a diverged run
                self.save_checkpoint()
            self.model.load_train_state(self.placement.to_local(self.state))
            summary = self._summary()
        except BaseException as exc:
            error = exc
            raise
        finally:
            stack.close()
            if bar:
                bar.close()
            self._hook(
                "ebmkit_run_end", config=self.config, run_dir=self.run_dir,
                summary=summary, error=error,
            )
            self._close_hooks()
        return TrainResult(step=self.step, history=self.history, summary=summary, retries=self.retries)

    # -- evaluation ----------------------------------------------------------------

    def eval_variables(self, which: str | None = None) -> tuple[Any, Any]:
        """``(params, rest)`` of the current state as evaluation sees them,
        on this process's device: the moving average (``"ema"``) or the live
        parameters (``"live"``); default :attr:`evaluating`."""
        which = self.evaluating if which is None else which
        if which not in ("ema", "live"):
            raise ValueError(f"expected 'ema' or 'live', got {which!r}")
        params = self.state.energy_params
        if which == "ema":
            if self.state.ema_params is None:
                raise ValueError("this run keeps no moving average of its parameters; set train.ema_decay")
            params = self.state.ema_params
        # Replicated on a mesh: a local copy, no communication.
        return self.placement.to_local((params, self.state.energy_state))

    def energy_fn(self, which: str | None = None) -> Callable[[Any], jax.Array]:
        """``x -> E(x)`` with the trainer's current parameters (eval mode):
        the moving average with ``train.ema_decay``, else the live ones
        (``which`` and :attr:`evaluating` choose; see :meth:`eval_variables`)."""
        energy = energy_programs(self._eval_graphdef)[0]
        # Copies: the compiled step donates the state's buffers.
        params, rest = jax.tree.map(jnp.copy, self.eval_variables(which))
        return lambda x: energy(params, rest, jnp.asarray(x, jnp.float32))

    def energy_module(self, which: str | None = None) -> Any:
        """The energy network itself (eval mode) with the parameters
        :meth:`energy_fn` uses, for evaluations that need more than ``E(x)``
        (e.g. an RBM's exact likelihood)."""
        from flax import nnx

        params, rest = jax.tree.map(jnp.copy, self.eval_variables(which))
        return nnx.merge(self._eval_graphdef, params, rest)

    def evaluate(self, which: str | None = None) -> dict[str, float]:
        """The evaluation (``evaluate`` given to the trainer, else the data
        set's default) of the parameters ``which`` names (default:
        :attr:`evaluating`)."""
        before = self.evaluating
        self.evaluating = before if which is None else which
        try:
            if self.evaluate_fn is not None:
                return dict(self.evaluate_fn(self))
            from ebmkit.evaluate import evaluate_dataset

            return evaluate_dataset(self.energy_fn(), self.dataset, energy_module=self.energy_module())
        finally:
            self.evaluating = before

    def _summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        tail = self.history[-max(1, len(self.history) // 5):]
        summary: dict[str, Any] = {
            "steps": self.step,
            "steps_per_s": float(np.nanmedian([r["steps_per_s"] for r in self.history])) if self.history else float("nan"),
            "retries": self.retries,
            "loss": last.get("loss", float("nan")),
            "devices": self.placement.num_devices,
        }
        if tail and all("energy_gap" in r for r in tail):
            summary["energy_gap"] = float(np.mean([r["energy_gap"] for r in tail]))
        summary.update(self.evaluate())
        if self.state.ema_params is not None and self.evaluating == "ema":
            summary["evaluated_with"] = "ema"
            summary["ema_decay"] = self.train.ema
            if self.evaluate_fn is None:  # a caller's own evaluation decides for itself
                for key, value in self.evaluate("live").items():
                    summary[f"live_{key}"] = value
        return summary


def _version() -> str:
    from ebmkit.version import __version__

    return __version__


def _comparable(toml_text: str) -> dict[str, Any]:
    """A config as a dict, minus what may change between a run and its resume."""
    import tomllib

    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError:
        return {"unreadable": toml_text}
    # Through the current converter, so that a setting added since the run was
    # written (with its default) is not a difference; as written if it no
    # longer structures (the comparison then names what changed).
    from ebmkit.config import load_config, unstructure
    from ebmkit.errors import EbmkitError

    try:
        data = unstructure(load_config(data))
    except (EbmkitError, ValueError, TypeError):
        pass
    train = dict(data.get("train", {}))
    # ema_decay too: the average never feeds back into training, so it may be
    # switched on, off or changed on resume (see Trainer._ema_after_restore).
    for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "learning_rate",
                "ema_decay"):
        train.pop(key, None)
    data["train"] = train
    # A run may resume on another number of devices or processes.
    data.pop("distributed", None)
    for section in data.values():
        if isinstance(section, dict):
            section.pop("provider", None)
    return data


def _saved_learning_rate(toml_text: str) -> float | None:
    import tomllib

    try:
        value = tomllib.loads(toml_text).get("train", {}).get("learning_rate")
    except tomllib.TOMLDecodeError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}.{key}" if prefix else key
        if key not in a:
            return f"{path} is new"
        if key not in b:
            return f"{path} is missing"
        if isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
            found = _first_difference(a[key], b[key], path)
            if found:
                return found
        elif a[key] != b[key]:
            return f"{path}: {a[key]!r} in the checkpoint, {b[key]!r} now"
    return ""
