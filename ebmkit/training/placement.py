"""Where a training run's state and batches live: one interface, two places.

The trainer talks only to a :class:`Placement`. :class:`SingleDevice` keeps
everything on the default device; :class:`ebmkit.distributed.DataParallel`
places the same state on a mesh (batch and replay buffer split along
``data``, the rest replicated) and compiles the step under ``shard_map``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

__all__ = ["Placement", "SingleDevice", "all_finite"]


def all_finite(tree: Any) -> bool:
    """Whether every floating-point leaf of ``tree`` (host or device) is finite."""
    for x in jax.tree.leaves(tree):
        local = np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) and not x.is_fully_addressable else np.asarray(x)
        if np.issubdtype(local.dtype, np.floating) and not np.all(np.isfinite(local)):
            return False
    return True


@runtime_checkable
class Placement(Protocol):
    """What the trainer needs to know about where the run lives."""

    num_devices: int
    process_count: int
    process_index: int
    is_main_process: bool

    def check(self, *, batch_size: int, buffer: Any, buffer_state: Any, sampler_state: Any = None) -> None:
        """Refuse a run that cannot be placed (with what to change)."""

    def local_buffer(self, buffer: Any) -> Any:
        """The buffer as one device sees it."""

    def local_batch_size(self, batch_size: int) -> int:
        """Rows of each global batch this process reads."""

    def data_seed(self, seed: int) -> Any:
        """The seed of this process's data stream."""

    def put_state(self, state: Any) -> Any:
        """The state placed for the compiled step."""

    def put_batches(self, host: Any) -> Any:
        """Host batches ``[steps, local_batch, ...]`` (a pytree) placed for the step."""

    def compile(self, local_fn: Callable, state: Any) -> Callable:
        """``local_fn(state, xs) -> (state, metrics)`` compiled, state donated."""

    def snapshot(self, tree: Any) -> Any:
        """A host copy to roll back to."""

    def restore_snapshot(self, snapshot: Any) -> Any:
        """A snapshot placed back."""

    def checkpoint_view(self, state: Any) -> Any:
        """What the checkpointer writes (and restores into)."""

    def all_finite(self, tree: Any) -> bool:
        """Whether every float of ``tree`` is finite."""

    def to_local(self, tree: Any) -> Any:
        """Every leaf whole on this process's first device (after training)."""

    def allgather_json(self, value: Any) -> list[Any]:
        """``value`` from every process, in process order."""


class SingleDevice:
    """Everything on JAX's default device, one process."""

    num_devices = 1
    process_count = 1
    process_index = 0
    is_main_process = True
    axis_name = None
    #: No limit on queued calls (one device has no collectives to meet in).
    max_in_flight = None

    def __repr__(self) -> str:
        return f"SingleDevice({jax.devices()[0].platform})"

    def check(self, *, batch_size: int, buffer: Any, buffer_state: Any, sampler_state: Any = None) -> None:
        return None

    def local_buffer(self, buffer: Any) -> Any:
        return buffer

    def local_batch_size(self, batch_size: int) -> int:
        return batch_size

    def data_seed(self, seed: int) -> int:
        return seed

    def put_state(self, state: Any) -> Any:
        return jax.device_put(state)

    def put_batches(self, host: Any) -> Any:
        # Host arrays go to the compiled step as they are: jit transfers them
        # in its own dispatch, where a jnp.asarray first costs an eager op.
        return host

    def compile(self, local_fn: Callable, state: Any) -> Callable:
        return jax.jit(local_fn, donate_argnums=(0,))

    def snapshot(self, tree: Any) -> Any:
        return jax.device_get(tree)

    def restore_snapshot(self, snapshot: Any) -> Any:
        return jax.device_put(snapshot)

    def checkpoint_view(self, state: Any) -> Any:
        return jax.device_get(state)

    def all_finite(self, tree: Any) -> bool:
        return all_finite(tree)

    def to_local(self, tree: Any) -> Any:
        return tree

    def allgather_json(self, value: Any) -> list[Any]:
        return [value]
