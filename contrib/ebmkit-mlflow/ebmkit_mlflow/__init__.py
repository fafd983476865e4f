"""MLflow for ebmkit runs: the config as params, the metrics, the plots and the summary.

Installing the distribution is all it takes: its entry point in the
``ebmkit.plugins`` group registers :data:`plugin`, which logs every run that has a
directory (``ebmkit train``, :func:`ebmkit.train_job`, a
:class:`~ebmkit.training.Trainer` given a ``run_dir``) as an MLflow run.
``EBMKIT_DISABLE_PLUGINS=ebmkit-mlflow`` turns it off; ``Trainer(..., hooks=False)``
leaves it out.

Where it logs:

* ``MLFLOW_TRACKING_URI`` when it is set (a server, a database, ...);
* otherwise a SQLite store in the run directory's parent,
  ``sqlite:///<parent>/mlflow.db``, with the artefacts in ``<parent>/mlartifacts``:
  every run under ``runs/`` lands in ``runs/mlflow.db``;
* in the experiment ``EBMKIT_MLFLOW_EXPERIMENT`` names, else
  ``MLFLOW_EXPERIMENT_NAME``, else ``ebmkit`` (created when missing).

What an MLflow run holds:

* params: the resolved config, flattened to dotted keys (``train.batch_size``,
  ``energy.hidden_dims``), with each component's distribution and version
  (``energy.provider = "ebmkit-jax 0.2.0"``);
* metrics: every metric of ``metrics.jsonl`` at its step (metric names MLflow
  does not accept have their odd characters replaced by ``_``), and the final
  summary's numbers as ``summary/<name>`` at the last step;
* artefacts: ``config.toml`` when the run starts, ``summary.json`` when it
  ends, each plot (``samples.png``, ...) as ``ebmkit train`` writes it;
* tags: ``ebmkit.run_dir``, ``ebmkit.version``, and ``ebmkit.error`` for a run
  that failed;
* status: ``FINISHED``, ``FAILED``, or ``KILLED`` for a run stopped by a signal
  (SIGINT/SIGTERM, checkpoint saved).

The MLflow run's id is kept in ``<run_dir>/mlflow_run.json``: resuming the ebmkit
run continues the same MLflow run.

Only this module's names are imported when ebmkit loads its plugins (every
``ebmkit`` command does): MLflow is imported by the first run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ebmkit.hookspecs import hookimpl

__all__ = [
    "ARTIFACT_DIR", "DEFAULT_EXPERIMENT", "ERROR_TAG", "EXPERIMENT_ENV", "FLUSH_SECS", "RESUMED_PREFIX",
    "RUN_FILE", "STORE_FILE", "SUMMARY_PREFIX", "MlflowLogger", "config_params", "experiment_name",
    "flatten", "metric_name", "plugin", "tracking_uri",
]

#: The environment variable naming the experiment (before ``MLFLOW_EXPERIMENT_NAME``).
EXPERIMENT_ENV = "EBMKIT_MLFLOW_EXPERIMENT"
#: The experiment runs go to when no variable names one.
DEFAULT_EXPERIMENT = "ebmkit"
#: The default store: a SQLite file in the run directory's parent ...
STORE_FILE = "mlflow.db"
#: ... with the artefacts of its experiments beside it.
ARTIFACT_DIR = "mlartifacts"
#: In the run directory: which MLflow run the ebmkit run is, for a resume.
RUN_FILE = "mlflow_run.json"
#: The final summary's numbers are metrics named ``summary/nll``, ...
SUMMARY_PREFIX = "summary/"
#: A config value changed on resume is a tag ``ebmkit.resumed.<key>`` (MLflow params never change).
RESUMED_PREFIX = "ebmkit.resumed."
#: The tag holding the error that ended a failed run.
ERROR_TAG = "ebmkit.error"
#: Metrics are sent to MLflow at least this often (seconds), in one batch, and when the run ends.
FLUSH_SECS = 10.0

# MLflow's limits per log_batch call and on a value's length (mlflow.utils.validation).
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
_PARAM_LENGTH = 6000
_TAG_LENGTH = 5000


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def metric_name(name: str) -> str:
    """``name`` with each character MLflow refuses in a metric name (anything
    but letters, digits, ``_ - . /`` and spaces) replaced by ``_``."""
    return re.sub(r"[^\w\-. /]", "_", str(name)) or "_"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested tables as dotted keys; strings as they are, other values as JSON
    (``true``, ``[128, 128]``), each cut to MLflow's longest param value."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text if len(text) <= _PARAM_LENGTH else text[: _PARAM_LENGTH - 3] + "..."
    return out


def config_params(config: Any) -> dict[str, str]:
    """The MLflow params of a resolved config: what ``config.toml`` holds, flattened."""
    from ebmkit.config import unstructure

    return flatten(unstructure(config, with_provider=True))


def _default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir).resolve().parent / STORE_FILE).as_posix()}"


def tracking_uri(run_dir: Path) -> str:
    """Where a run in ``run_dir`` is logged: ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///<run_dir's parent>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or _default_uri(run_dir)


def experiment_name() -> str:
    """``EBMKIT_MLFLOW_EXPERIMENT``, else ``MLFLOW_EXPERIMENT_NAME``, else ``"ebmkit"``."""
    for variable in (EXPERIMENT_ENV, "MLFLOW_EXPERIMENT_NAME"):
        name = os.environ.get(variable, "").strip()
        if name:
            return name
    return DEFAULT_EXPERIMENT


def _shown_uri(uri: str) -> str:
    """``uri`` without a password or query (what the run file records)."""
    password = urlsplit(uri).password
    if password is not None:
        uri = uri.replace(":" + password + "@", "@", 1)
    return uri.partition("?")[0]


def _open_experiment(uri: str, run_dir: Path) -> tuple[Any, str]:
    """An MLflow client on ``uri`` and the id of the run's experiment (created when missing)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name = experiment_name()
    default = uri == _default_uri(run_dir)
    parent = Path(run_dir).resolve().parent
    # Parallel runs (ebmkit sweep --jobs) share the default store: one at a
    # time creates its tables and the experiment.
    guard: Any = contextlib.nullcontext()
    if default:
        import filelock

        parent.mkdir(parents=True, exist_ok=True)
        guard = filelock.FileLock(str(parent / (STORE_FILE + ".lock")))
    with guard:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            # MLflow's own default would be ./mlruns under the working directory.
            location = (parent / ARTIFACT_DIR).as_uri() if default else None
            try:
                return client, client.create_experiment(name, artifact_location=location)
            except MlflowException:
                experiment = client.get_experiment_by_name(name)  # another process made it first
                if experiment is None:
                    raise
    if experiment.lifecycle_stage != "active":
        raise MlflowException(
            f"the MLflow experiment {name!r} in {_shown_uri(uri)} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or log to "
            f"another one ({EXPERIMENT_ENV}=...)"
        )
    return client, experiment.experiment_id


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


class _Run:
    """An open MLflow run: its client, its id and the metrics not yet sent."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.pending: list[Any] = []
        self.sent_at = time.monotonic()

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                self.pending.append(Metric(metric_name(prefix + name), number, now, int(step)))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.sent_at = time.monotonic()
        for chunk in _chunks(pending, _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_params_and_tags(self, params: Mapping[str, str], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        for chunk in _chunks([Param(k, v) for k, v in params.items()], _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)
        for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)


def _earlier_run(client: Any, run_dir: Path) -> Any | None:
    """The MLflow run ``run_dir``'s run file names, if this store still has it."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))["run_id"]
        run = client.get_run(run_id)
    except (OSError, ValueError, KeyError, TypeError, MlflowException):
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _status(error: BaseException | None) -> str:
    from ebmkit.errors import TrainingInterrupted

    if error is None:
        return "FINISHED"
    if isinstance(error, (KeyboardInterrupt, TrainingInterrupted)):
        return "KILLED"
    return "FAILED"


class MlflowLogger:
    """Log each run's config, metrics, plots and summary to MLflow."""

    def __init__(self) -> None:
        # Hooks of one run are called in the thread that runs it; the step
        # hook does not name its run, so each thread keeps its own stack of
        # open runs (None for a run without a directory).
        self._local = threading.local()
        # Plots are saved after the run has ended: the last run of each directory.
        self._ended: dict[Path, _Run] = {}

    def _runs(self) -> list[_Run | None]:
        if not hasattr(self._local, "runs"):
            self._local.runs = []
        return self._local.runs

    def _start(self, config: Any, run_dir: Path) -> _Run:
        from ebmkit.training.hooks import read_rows
        from ebmkit.version import __version__

        uri = tracking_uri(run_dir)
        client, experiment_id = _open_experiment(uri, run_dir)
        params = config_params(config)
        tags: dict[str, str] = {}
        # A resumed run starts with the metrics rows it keeps; a new one has none.
        earlier = _earlier_run(client, run_dir) if read_rows(run_dir / "metrics.jsonl") else None
        if earlier is not None:
            run = _Run(client, earlier.info.run_id)
            client.update_run(run.run_id, status="RUNNING")
            logged = earlier.data.params
            # Params cannot change: a setting changed on resume becomes a tag.
            tags = {RESUMED_PREFIX + k: v for k, v in params.items() if k in logged and logged[k] != v}
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            created = client.create_run(
                experiment_id, run_name=run_dir.name,
                tags={"ebmkit.run_dir": str(run_dir.resolve()), "ebmkit.version": __version__},
            )
            run = _Run(client, created.info.run_id)
            record = {"tracking_uri": _shown_uri(uri), "experiment_id": experiment_id, "run_id": run.run_id}
            tmp = run_dir / (RUN_FILE + ".tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            tmp.replace(run_dir / RUN_FILE)
        try:
            run.log_params_and_tags(params, tags)
            if (run_dir / "config.toml").is_file():  # what the trainer wrote as the run started
                client.log_artifact(run.run_id, str(run_dir / "config.toml"))
            else:
                from ebmkit.config import dump_config

                client.log_text(run.run_id, dump_config(config), "config.toml")
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run.run_id, "FAILED")
            raise
        return run

    @hookimpl
    def ebmkit_run_start(self, config: Any, run_dir: Path | None) -> None:
        if run_dir is not None:
            self._ended.pop(Path(run_dir).resolve(), None)
        # Pushed only once started: a plugin that raises here is disabled for the run.
        self._runs().append(None if run_dir is None else self._start(config, Path(run_dir)))

    @hookimpl
    def ebmkit_step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        runs = self._runs()
        run = runs[-1] if runs else None
        if run is None:
            return
        run.log(step, metrics)
        if time.monotonic() - run.sent_at >= FLUSH_SECS:
            try:
                run.flush()
            except BaseException:
                # ebmkit disables the plugin for the rest of the run, so no
                # run_end may come: close the run here, and log nothing more to it.
                runs[-1] = None
                with contextlib.suppress(Exception):
                    run.client.set_terminated(run.run_id, "FAILED")
                raise

    @hookimpl
    def ebmkit_run_end(
        self, run_dir: Path | None, summary: Mapping[str, Any], error: BaseException | None
    ) -> None:
        runs = self._runs()
        run = runs.pop() if runs else None
        if run is None:
            return
        from ebmkit.run import jsonable

        try:
            if error is None and "steps" in summary:
                step = int(summary["steps"])
                numbers = {k: _number(v) for k, v in summary.items() if k != "steps"}
                run.log(step, {k: v for k, v in numbers.items() if v is not None and math.isfinite(v)},
                        prefix=SUMMARY_PREFIX)
            run.flush()
            if summary:
                run.client.log_dict(run.run_id, jsonable(dict(summary)), "summary.json")
            if error is not None:
                run.client.set_tag(run.run_id, ERROR_TAG, f"{type(error).__name__}: {error}"[:_TAG_LENGTH])
        finally:
            run.client.set_terminated(run.run_id, _status(error))
            if run_dir is not None:
                self._ended[Path(run_dir).resolve()] = run

    @hookimpl
    def ebmkit_plot_saved(self, run_dir: Path, path: Path) -> None:
        run = self._ended.get(Path(run_dir).resolve())
        if run is not None:
            run.client.log_artifact(run.run_id, str(path))


#: What the entry point names: pluggy registers this object's hook methods.
plugin = MlflowLogger()
