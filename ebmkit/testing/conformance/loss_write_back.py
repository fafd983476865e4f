"""Known-answer check of a loss that draws chain starts from the replay buffer.

It writes back, into the slots it drew, the chains it ran, and returns the
updated buffer state. The loss sees the reference buffer through a
:class:`_RecordingBuffer`, which records the slots drawn and written.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ebmkit.testing.conformance.recorder import _Recorder, _require

# Name of the known-answer check, as reports list it.
WRITES_BACK = "writes back into the buffer the chains it draws, in the same slots"


class _RecordingBuffer:
    """The buffer a loss sees in the loss checks.

    Delegates to the real buffer and sends to the host the slots each
    ``sample`` returned and each ``update`` wrote (``jax.debug.callback``, so
    it works eagerly and under ``jit`` alike). :meth:`reset` forgets them.
    """

    def __init__(self, buffer: Any):
        self._buffer = buffer
        self.drawn: list[np.ndarray] = []
        self.written: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_buffer"], name)

    def sample(self, rng_key: Any, state: Any, n: int) -> Any:
        x0, slots = self._buffer.sample(rng_key, state, n)
        jax.debug.callback(lambda s: self.drawn.append(np.asarray(s).copy()), slots)
        return x0, slots

    def update(self, state: Any, x: Any, slots: Any) -> Any:
        jax.debug.callback(lambda s: self.written.append(np.asarray(s).copy()), slots)
        return self._buffer.update(state, x, slots)


def _slots_changed(before: Any, after: Any, slots: np.ndarray, capacity: int) -> np.ndarray:
    """Per slot in ``slots``: does any ``[capacity, ...]`` leaf differ there?"""
    changed = np.zeros(slots.shape, bool)
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        old, new = np.asarray(old), np.asarray(new)
        if old.ndim >= 1 and old.shape[0] == capacity and new.shape == old.shape:
            diff = old[slots] != new[slots]
            changed |= diff.reshape(len(slots), -1).any(axis=1)
    return changed


def _write_back_check(recorder: _RecordingBuffer, before: Any, after: Any, rec: _Recorder) -> None:
    """A loss that draws from the buffer wrote back into the slots it drew.

    ``recorder`` saw one eager call of the loss, which took buffer state
    ``before`` and returned ``after``.
    """
    with rec.check(WRITES_BACK):
        _require(recorder.drawn, "the loss needs a buffer but never called ctx.buffer.sample")
        drawn = np.concatenate(recorder.drawn)
        written = np.concatenate(recorder.written) if recorder.written else np.zeros((0,), drawn.dtype)
        _require(
            written.size,
            f"drew {drawn.size} chain starts from ctx.buffer but never called ctx.buffer.update: "
            "write the final chains back into the slots sample() returned",
        )
        _require(
            np.array_equal(np.sort(drawn), np.sort(written)),
            f"drew slots {np.sort(drawn).tolist()} but wrote slots {np.sort(written).tolist()}",
        )
        _require(
            jax.tree.structure(after) == jax.tree.structure(before),
            f"returned ctx.buffer_state {type(after).__name__} is not a buffer state",
        )
        changed = _slots_changed(before, after, drawn, recorder.capacity)
        _require(
            changed.all(),
            f"the returned ctx.buffer_state is unchanged at drawn slots {drawn[~changed].tolist()}: "
            "return the state ctx.buffer.update gave (ctx._replace(buffer_state=...))",
        )
