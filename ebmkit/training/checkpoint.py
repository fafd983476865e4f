"""Checkpoints of training runs, written with orbax-checkpoint.

A checkpoint holds the whole :class:`~ebmkit.training.TrainState` (parameters,
other network state, optimiser state, replay buffer, RNG key, and the
parameter EMA when the run keeps one) flattened to
``{"path/to/leaf": array}``, plus JSON metadata: the step, the resolved config
(with the provider and version of every component), the data order's RNG state
and the learning rate in force.

Saves are synchronous and atomic (orbax writes to a temporary directory and
renames it on success), so a process killed mid-save leaves the previous
checkpoint readable. The last ``keep`` checkpoints are kept.

Sharded state (data-parallel runs, :mod:`ebmkit.distributed`) is written by
orbax shard by shard, by every process for its own devices, and the files hold
the *global* arrays: a checkpoint is independent of the mesh that wrote it and
restores into any layout the template asks for (4 devices, 2, or one).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ebmkit.errors import CheckpointError

__all__ = ["CheckpointError", "Checkpointer", "flatten_state", "unflatten_state", "checksums"]


def _path_str(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_sharded(x: Any) -> bool:
    return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


class _HeldStderr:
    """Holds what is written to file descriptor 2 until :meth:`release`, which
    replays it (a successful save) or drops it (a failed one, reported once)."""

    def __init__(self):
        import sys
        import tempfile

        self._saved = None
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (some notebooks): stay loud
            self._saved = None

    def release(self, *, replay: bool) -> None:
        if self._saved is None:
            return
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        if replay:
            self._file.seek(0)
            text = self._file.read()
            if text:
                os.write(2, text)
        self._file.close()


def checksums(flat: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 of each flattened leaf's bytes (with its dtype and shape)."""
    import hashlib

    out = {}
    for path, leaf in flat.items():
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
        out[path] = digest.hexdigest()
    return out


def _verify(state: Any, expected: Mapping[str, str] | None, where: str) -> None:
    """Raise CheckpointError if ``state`` does not match its checksums or is not finite."""
    leaves = jax.tree.leaves(state)
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
        return  # shards of other processes: each process checks what it wrote
    flat = flatten_state(jax.device_get(state))
    if expected:
        actual = checksums(flat)
        bad = sorted(k for k in expected if actual.get(k) != expected[k])
        if bad:
            raise CheckpointError(f"{where} is corrupt: {', '.join(bad[:3])} do not match their checksums")
    for path, leaf in flat.items():
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{where} holds NaN or infinity in {path}")


def flatten_state(tree: Any, *, keep_sharded: bool = False) -> dict[str, Any]:
    """``{"a/b/c": numpy array}``; typed PRNG keys become their raw key data.

    Args:
        tree: the state.
        keep_sharded: leave arrays that span several devices as ``jax.Array``
            (orbax writes them shard by shard; nothing is gathered).
    """
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        flat[_path_str(path)] = leaf if keep_sharded and _is_sharded(leaf) else np.asarray(leaf)
    return flat


def unflatten_state(flat: Mapping[str, Any], template: Any, *, where: str = "checkpoint") -> Any:
    """Rebuild ``template``'s structure from ``flat``, checking every leaf.

    ``flat`` may hold arrays or anything with ``shape`` and ``dtype`` (orbax
    metadata), which are checked without reading data.

    Raises:
        CheckpointError: listing missing or extra entries and shape or dtype
            mismatches, naming ``where``.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    problems = []
    out = []
    expected = set()
    for path, leaf in leaves_with_path:
        key = _path_str(path)
        expected.add(key)
        want_key = _is_key(leaf)
        ref = jax.random.key_data(leaf) if want_key else leaf
        if key not in flat:
            problems.append(f"missing {key} (the model has shape {tuple(np.shape(ref))})")
            continue
        value = flat[key]
        if not (isinstance(value, jax.Array) or hasattr(value, "shape") and hasattr(value, "dtype")):
            value = np.asarray(value)
        if tuple(value.shape) != tuple(np.shape(ref)):
            problems.append(f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(np.shape(ref))} in the model")
            continue
        if np.dtype(value.dtype) != np.dtype(ref.dtype):
            problems.append(f"{key}: dtype {np.dtype(value.dtype)} in the checkpoint, {np.dtype(ref.dtype)} in the model")
            continue
        if not isinstance(value, (jax.Array, np.ndarray, np.generic)):
            out.append(value)  # metadata only: the caller checks, then reads
            continue
        if want_key:
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf))
        out.append(value if isinstance(value, jax.Array) else jax.numpy.asarray(value))
    extra = sorted(set(flat) - expected)
    if extra:
        problems.append(f"entries the model does not have: {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise CheckpointError(
            f"{where} does not match the model:\n  - " + "\n  - ".join(shown)
            + "\n(was it written by a run with another config? compare its config.toml)"
        )
    return jax.tree_util.tree_unflatten(treedef, out)


def _restore_target(template: Any) -> dict[str, Any]:
    """What orbax should build for each flat entry of ``template``."""
    target = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        data = jax.random.key_data(leaf) if _is_key(leaf) else leaf
        if isinstance(data, jax.Array):
            target[_path_str(path)] = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=data.sharding)
        else:
            target[_path_str(path)] = np.asarray(data)
    return target


class Checkpointer:
    """Save and restore :class:`~ebmkit.training.TrainState` under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 3):
        import orbax.checkpoint as ocp

        # orbax logs every save at INFO; keep the console for the progress bar.
        logging.getLogger("absl").setLevel(logging.WARNING)
        self._ocp = ocp
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Naming both items' handlers lets a metadata-only read skip the
            # state without orbax warning that it "could not be restored".
            self._manager = ocp.CheckpointManager(
                self.directory, options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
            )

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, metadata: Mapping[str, Any]) -> Path:
        """Write ``state`` and ``metadata`` (JSON-able) as checkpoint ``step``.

        Arrays spread over several devices are written shard by shard (every
        process of a multi-process run must call this); others are fetched.
        """
        ocp = self._ocp
        leaves = jax.tree.leaves(state)
        metadata = dict(metadata)
        existing = self.path(step)
        if existing.exists() and jax.process_index() == 0:
            # A corrupt checkpoint that a resume skipped: kept aside, not overwritten.
            aside = self.directory / f"{step}.corrupt"
            n = 1
            while aside.exists():
                aside = self.directory / f"{step}.corrupt-{n}"
                n += 1
            existing.rename(aside)
            self._manager.reload()
        if any(_is_sharded(x) for x in leaves):
            flat = flatten_state(state, keep_sharded=True)
        else:
            flat = flatten_state(jax.device_get(state))
            # Checked on restore: a flipped byte in an array file is an error, not a silent NaN.
            metadata["checksums"] = checksums(flat)
        absl = logging.getLogger("absl")
        level = absl.level
        # orbax logs a failed write from each of its threads (and its native
        # callbacks print tracebacks to fd 2): the error below says it once.
        absl.setLevel(logging.CRITICAL)
        stderr = _HeldStderr()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(dict(metadata))
                ),
                force=True,
            )
            self._manager.wait_until_finished()
            stderr.release(replay=True)
        except Exception as exc:  # noqa: BLE001 - a full disk, a size limit, a read-only folder
            time.sleep(0.2)  # let orbax's threads finish printing into the held stream
            stderr.release(replay=False)
            previous = [s for s in self.steps() if s != step]
            kept = f"the last checkpoint ({self.path(previous[-1])}) is intact" if previous else "no earlier checkpoint"
            reason = str(exc).splitlines()[0]
            for marker in ("Failed to write", "No space", "Read-only", "Permission denied"):
                if marker in reason:
                    reason = reason[reason.index(marker):]
                    break
            raise CheckpointError(f"cannot write checkpoint {self.path(step)}: {reason[:300]}; {kept}") from None
        finally:
            stderr.release(replay=True)
            absl.setLevel(level)
        return self.path(step)

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        step = self._resolve(step)
        ocp = self._ocp
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt file
            raise CheckpointError(f"cannot read the metadata of checkpoint {self.path(step)}: {exc}") from exc
        return dict(restored["meta"])

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The state (shaped like ``template``) and metadata of ``step`` (default: latest).

        ``template`` may also be a function ``step -> template``, for a state
        whose layout depends on what the checkpoint holds (the parameter EMA
        is there only when the run kept one).

        Each leaf comes back as the template's leaf is: a NumPy array for a
        host template, a ``jax.Array`` with the template's sharding for a
        device template (so a run saved on 4 devices restores onto 1, or the
        reverse, by asking for that layout).

        Raises:
            CheckpointError: none exists, it is unreadable, or it does not fit.
        """
        step = self._resolve(step)
        if callable(template):
            template = template(step)
        ocp = self._ocp
        where = f"checkpoint {self.path(step)}"
        stored = self._stored_shapes(step)
        if stored is not None:  # say "shape (8,) vs (16,)" before orbax says it worse
            unflatten_state(stored, template, where=where)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_restore_target(template)), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(
                f"{where} is unreadable ({type(exc).__name__}: {exc}); if a save was interrupted, "
                f"remove that directory to resume from the previous checkpoint"
            ) from exc
        state = unflatten_state(restored["state"], template, where=where)
        meta = dict(restored["meta"])
        _verify(state, meta.get("checksums"), where)
        return state, meta

    def restore_intact(self, template: Any) -> tuple[Any, dict[str, Any]]:
        """The latest checkpoint that restores intact; a corrupt newer one is
        skipped with a warning naming both. ``template`` as for :meth:`restore`.

        Raises:
            CheckpointError: no checkpoint restores.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        errors = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(template, step)
            except CheckpointError as exc:
                errors.append((step, exc))
                continue
            if errors:
                bad = ", ".join(str(self.path(s)) for s, _ in errors)
                warnings.warn(
                    f"checkpoint {bad} is corrupt ({errors[0][1]}); resumed from {self.path(step)} instead",
                    RuntimeWarning, stacklevel=2,
                )
            return state, meta
        raise errors[0][1]

    def _stored_shapes(self, step: int) -> dict[str, Any] | None:
        try:
            meta = self._manager.item_metadata(step)
            tree = meta["state"]
            tree = getattr(tree, "tree", tree)
            if not isinstance(tree, Mapping) or not all(hasattr(v, "shape") and hasattr(v, "dtype") for v in tree.values()):
                return None
            return dict(tree)
        except Exception:  # noqa: BLE001 - no metadata: orbax's own errors then apply
            return None

    def _resolve(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; have {steps}")
        return step
