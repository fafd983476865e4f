"""Data-parallel training over a device mesh, on one host or many.

The mesh has one axis, ``data``. A training step runs under
:func:`jax.shard_map`, so every device executes the *same* component code on
its own slice of the work:

* the batch is split along ``data``: device ``d`` gets rows
  ``[d*B/N, (d+1)*B/N)`` of the global batch;
* the replay buffer is split along ``data``: device ``d`` owns slots
  ``[d*C/N, (d+1)*C/N)`` and only ever samples, runs and writes back those
  chains (the buffer never crosses devices inside a step);
* parameters, network state, optimiser state, the parameter EMA (when kept)
  and the run key are replicated; the EMA is updated from the same averaged
  update on every device, so it needs no communication;
* gradients and metrics are averaged with ``lax.pmean`` (one all-reduce of
  the gradient bytes per step; see :func:`communication_volume`);
* device ``d`` draws its randomness from ``fold_in(step_key, d)``, where
  ``step_key`` comes from the replicated run key, so every device's chains
  are determined by ``train.seed`` and the device index alone.

Components see only their local shard: a buffer of capacity ``C`` on ``N``
devices is seen by the loss as a buffer of capacity ``C/N`` (its
``shard(num_shards)`` method if it has one, else the same object with
``capacity`` divided). What cannot be split evenly is refused up front with a
:class:`ShardingError` that says what to change.

Several processes (hosts) are joined with :func:`initialize`, a thin shell
over ``jax.distributed.initialize()``; each process then feeds only its own
devices' part of the batch, drawn from a data stream seeded with
``(seed, process_index)``. See docs/distributed.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ebmkit.config.schema import DistributedConfig
from ebmkit.distributed.jax_workarounds import ensure_mulhi_lowering
from ebmkit.errors import ShardingError
from ebmkit.types import Shardable

__all__ = [
    "AXIS",
    "DataParallel",
    "collective_bytes",
    "communication_volume",
    "data_parallel_step",
    "emulate",
]

#: The name of the mesh axis along which batch and buffer are split.
AXIS = "data"

# -- the per-device program ------------------------------------------------------------


def data_parallel_step(step: Callable, axis_name: str = AXIS) -> Callable:
    """Wrap a step made with ``make_train_step(..., axis_name=axis_name)``.

    The wrapped step keeps the run key replicated and hands the inner step a
    per-device key, ``fold_in(step_key, axis_index)``. Network state other
    than parameters (spectral-norm vectors, dropout counters) is taken from
    device 0 (and so is the loss's own state), exactly, so every device holds
    the same copy: the energy
    contract rules out state computed from the batch, and for any other state
    all devices already agree.

    It must run where ``axis_name`` is bound: under :func:`jax.shard_map`
    over a mesh with that axis, or under ``jax.vmap(axis_name=...)`` (see
    :func:`emulate`).
    """

    def local_step(state: Any, x: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        carry_key, step_key = jax.random.split(state.rng_key)
        device_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
        state, metrics = step(state._replace(rng_key=device_key), x)
        first = lambda tree: jax.tree.map(lambda v: _from_first_device(v, axis_name), tree)  # noqa: E731
        # The loss's own state, like the network's, is device 0's everywhere.
        return state._replace(
            energy_state=first(state.energy_state), loss_state=first(state.loss_state), rng_key=carry_key
        ), metrics

    return local_step


def _from_first_device(value: jax.Array, axis_name: str) -> jax.Array:
    """Device 0's ``value`` on every device: a sum with zeros, so bit-exact."""
    key_impl = jax.random.key_impl(value) if _is_key(value) else None
    data = jax.random.key_data(value) if key_impl is not None else jnp.asarray(value)
    dtype = data.dtype
    if dtype == jnp.bool_:
        data = data.astype(jnp.int32)
    mine = jnp.where(jax.lax.axis_index(axis_name) == 0, data, jnp.zeros_like(data))
    out = jax.lax.psum(mine, axis_name).astype(dtype)
    return jax.random.wrap_key_data(out, impl=key_impl) if key_impl is not None else out


def emulate(local_fn: Callable, num_shards: int, axis_name: str = AXIS) -> Callable:
    """Run ``local_fn`` for ``num_shards`` emulated devices on one device.

    ``local_fn(state, xs)`` is the per-device program that
    :meth:`DataParallel.compile` places under ``shard_map`` (``xs`` has
    shape ``[steps, local_batch, ...]``). This runs the same function under
    ``jax.vmap(axis_name=axis_name)`` with the global layout on input and
    output, so it is the one-device reference for the sharded run: same
    global batch, same per-device keys, same buffer slices. Only the order of
    floating-point reductions in the mean over devices may differ.

    Returns:
        ``(state, xs) -> (state, metrics)`` over global (unsplit) arrays.
    """

    def split(x: jax.Array, axis: int) -> jax.Array:
        shape = x.shape
        return x.reshape(*shape[:axis], num_shards, shape[axis] // num_shards, *shape[axis + 1:])

    def join(x: jax.Array, axis: int) -> jax.Array:
        shape = x.shape
        return x.reshape(*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2:])

    def run(state: Any, xs: jax.Array) -> tuple[Any, Any]:
        state = state._replace(buffer_state=jax.tree.map(lambda v: split(v, 0), state.buffer_state))
        replicated = {f: None for f in state._fields if f != "buffer_state"}
        in_axes = (state._replace(**replicated, buffer_state=jax.tree.map(lambda _: 0, state.buffer_state)),
                   jax.tree.map(lambda _: 1, xs))
        new, metrics = jax.vmap(local_fn, in_axes=in_axes, axis_name=axis_name, axis_size=num_shards)(
            state, jax.tree.map(lambda x: split(x, 1), xs)
        )
        # Replicated outputs come back once per emulated device; the copies are
        # equal by construction (pmean'd gradients, device 0's network state,
        # the shared run key), so keep the first.
        first = lambda v: v[0]  # noqa: E731
        kept = {f: jax.tree.map(first, getattr(new, f)) for f in new._fields if f != "buffer_state"}
        return new._replace(**kept, buffer_state=jax.tree.map(lambda v: join(v, 0), new.buffer_state)), jax.tree.map(
            first, metrics
        )

    return run


# -- placement ------------------------------------------------------------------------


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _index_key(index: tuple) -> tuple:
    return tuple((s.start, s.stop, s.step) if isinstance(s, slice) else s for s in index)


@attrs.frozen
class _HostLeaf:
    """One array copied to host memory, shard by shard (see ``snapshot``)."""

    shape: tuple[int, ...]
    dtype: Any
    sharding: Any
    shards: dict
    key_impl: Any = None


class DataParallel:
    """A one-axis device mesh and the rules for placing a training run on it.

    Args:
        mesh: a :class:`jax.sharding.Mesh` whose only axis is ``data``.

    Use :meth:`create` or :meth:`from_config` rather than building a mesh by hand.
    """

    def __init__(self, mesh: Mesh):
        if tuple(mesh.axis_names) != (AXIS,):
            raise ShardingError(f"the mesh must have the single axis {AXIS!r}, got {mesh.axis_names}")
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, P())
        self.split = NamedSharding(mesh, P(AXIS))

    def __repr__(self) -> str:
        return (
            f"DataParallel({AXIS}={self.num_devices}, processes={self.process_count}, "
            f"platform={self.mesh.devices.flat[0].platform})"
        )

    # -- construction -----------------------------------------------------------

    @classmethod
    def create(cls, num_devices: int | None = None) -> DataParallel:
        """A mesh over the first ``num_devices`` devices (default: all of them).

        Raises:
            ShardingError: more devices asked for than JAX sees, or a subset of
                devices in a multi-process run.
        """
        available = jax.devices()
        n = len(available) if num_devices is None else int(num_devices)
        if n < 1:
            raise ShardingError(f"devices must be >= 1, got {n}")
        if n > len(available):
            platform = available[0].platform
            hint = (
                f"on a CPU-only machine start Python with XLA_FLAGS=--xla_force_host_platform_device_count={n} "
                "(it must be set before JAX starts)"
                if platform == "cpu"
                else "check CUDA_VISIBLE_DEVICES / the accelerators given to this job, or lower --devices"
            )
            raise ShardingError(
                f"asked for {n} devices on the {AXIS!r} axis but JAX sees {len(available)} "
                f"({platform}); {hint}"
            )
        if jax.process_count() > 1 and n != len(available):
            raise ShardingError(
                f"a multi-process run uses every device of every process ({len(available)} over "
                f"{jax.process_count()} processes); got devices = {n}. Leave devices unset or set it to {len(available)}"
            )
        # Auto axes: outside the step, plain jnp code on sharded arrays works
        # as on one device; inside, shard_map makes the axis manual anyway.
        mesh = Mesh(np.array(available[:n]), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
        return cls(mesh)

    @classmethod
    def from_config(cls, config: DistributedConfig) -> DataParallel | None:
        """The mesh the config asks for, or ``None`` for plain one-device training."""
        n = config.num_devices
        if n is None and jax.process_count() == 1:
            return None
        return cls.create(n)

    # -- facts ------------------------------------------------------------------

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def process_count(self) -> int:
        return jax.process_count()

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def is_main_process(self) -> bool:
        """Only process 0 writes logs, metrics, plots and shows a progress bar."""
        return jax.process_index() == 0

    def local_batch_size(self, batch_size: int) -> int:
        """Rows of each global batch that this process reads from its data."""
        return batch_size * len(self.mesh.local_devices) // self.num_devices

    def data_seed(self, seed: int) -> int | tuple[int, int]:
        """The data stream's seed: ``seed`` alone in one process (the same data
        as a one-device run), ``(seed, process_index)`` with several, so every
        host reads different data."""
        return seed if self.process_count == 1 else (seed, self.process_index)

    # -- checks -----------------------------------------------------------------

    def check(self, *, batch_size: int, buffer: Any, buffer_state: Any, sampler_state: Any = None) -> None:
        """Refuse, with what to change, anything that does not split evenly.

        Raises:
            ShardingError: the batch or the buffer cannot be divided, or an
                adaptive sampler keeps per-chain state.
        """
        n = self.num_devices
        problems = []
        if jax.tree.leaves(sampler_state):
            problems.append(
                "the sampler keeps an adaptation state, which data-parallel training does not split "
                "yet; train on one device or use a sampler without adaptation"
            )
        if batch_size % n:
            problems.append(
                f"train.batch_size = {batch_size} cannot be split evenly over {n} devices; "
                f"set it to a multiple of {n} (e.g. {_near_multiples(batch_size, n)})"
            )
        if buffer is not None:
            capacity = getattr(buffer, "capacity", None)
            name = type(buffer).__name__
            if not isinstance(capacity, int) or isinstance(capacity, bool):
                problems.append(
                    f"the buffer {name} has no integer `capacity`, so ebmkit cannot tell how to split its "
                    f"state over {n} devices; give it a `capacity` (slots along the state's first axis) "
                    "or a `shard(num_shards)` method, or train on one device"
                )
            else:
                if capacity % n:
                    problems.append(
                        f"buffer.capacity = {capacity} cannot be split evenly over {n} devices "
                        f"(each device keeps its own slice of the replay buffer); set buffer.capacity "
                        f"to a multiple of {n} (e.g. {_near_multiples(capacity, n)})"
                    )
                for path, leaf in jax.tree_util.tree_flatten_with_path(buffer_state)[0]:
                    shape = np.shape(leaf)
                    if not shape or shape[0] != capacity:
                        where = jax.tree_util.keystr(path) or "(the state)"
                        problems.append(
                            f"the buffer {name}'s state entry {where} has shape {tuple(shape)}, not "
                            f"[capacity={capacity}, ...], so it cannot be split by slot over {n} devices; "
                            "give the buffer a `shard(num_shards)` method and keep per-slot state only, "
                            "or train on one device"
                        )
        if problems:
            raise ShardingError(
                "cannot split this run over the data axis:\n  - " + "\n  - ".join(problems)
            )

    def local_buffer(self, buffer: Any) -> Any:
        """The buffer as one device sees it: ``capacity / num_devices`` slots.

        A buffer may say how with ``shard(num_shards)``; an attrs or dataclass
        buffer with a ``capacity`` field is copied with that field divided.
        """
        n = self.num_devices
        if buffer is None or n == 1:
            return buffer
        if isinstance(buffer, Shardable):
            return buffer.shard(n)
        if attrs.has(type(buffer)) and "capacity" in attrs.fields_dict(type(buffer)):
            return attrs.evolve(buffer, capacity=buffer.capacity // n)
        import dataclasses

        if dataclasses.is_dataclass(buffer) and any(f.name == "capacity" for f in dataclasses.fields(buffer)):
            return dataclasses.replace(buffer, capacity=buffer.capacity // n)
        raise ShardingError(
            f"the buffer {type(buffer).__name__} cannot be split over {n} devices: it has no "
            "`shard(num_shards)` method and is not an attrs/dataclass object with a `capacity` "
            "field. Add `shard(num_shards)` returning the buffer for one slice, or train on one device"
        )

    # -- placement --------------------------------------------------------------

    def state_specs(self, state: Any) -> Any:
        """``PartitionSpec`` per leaf: the buffer split along ``data``, the rest replicated."""
        specs = jax.tree.map(lambda _: P(), state)
        return specs._replace(buffer_state=jax.tree.map(lambda _: P(AXIS), state.buffer_state))

    def state_shardings(self, state: Any) -> Any:
        return jax.tree.map(
            lambda spec: NamedSharding(self.mesh, spec), self.state_specs(state),
            is_leaf=lambda x: isinstance(x, P),
        )

    def put(self, tree: Any, shardings: Any) -> Any:
        """Place ``tree`` (host or device arrays holding the *global* values,
        identical in every process) on the mesh; leaves already placed so stay."""

        def one(x: Any, sharding: NamedSharding) -> Any:
            if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
                return x
            if isinstance(x, _HostLeaf):
                return self._from_host_leaf(x)
            if self.process_count == 1:
                return jax.device_put(x, sharding)
            key_impl = jax.random.key_impl(x) if _is_key(x) else None
            host = np.asarray(jax.random.key_data(x) if key_impl is not None else x)
            out = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
            return jax.random.wrap_key_data(out, impl=key_impl) if key_impl is not None else out

        return jax.tree.map(one, tree, shardings, is_leaf=lambda x: isinstance(x, _HostLeaf))

    def put_state(self, state: Any) -> Any:
        """Place a :class:`~ebmkit.model.TrainState` on the mesh."""
        return self.put(state, self.state_shardings(state))

    def put_batches(self, local: Any) -> Any:
        """``[steps, local_batch, ...]`` read by this process (each leaf of a
        pytree, e.g. samples and labels) → the global ``[steps, batch, ...]``
        arrays split along ``data`` (axis 1)."""
        sharding = NamedSharding(self.mesh, P(None, AXIS))

        def one(local: Any) -> jax.Array:
            local = np.asarray(local)
            shape = (local.shape[0], local.shape[1] * self.num_devices // len(self.mesh.local_devices), *local.shape[2:])
            if self.process_count == 1:
                return jax.device_put(local, sharding)
            return jax.make_array_from_process_local_data(sharding, local, shape)

        return jax.tree.map(one, local)

    def checkpoint_view(self, state: Any) -> Any:
        """The sharded state itself: orbax writes each shard where it is."""
        return state

    def compile(self, local_fn: Callable, state: Any) -> Callable:
        """``jit(shard_map(local_fn))`` over ``(state, xs)`` with ``state`` donated.

        ``local_fn(state, xs) -> (state, metrics)`` sees replicated parameters,
        its own buffer slice and ``xs[steps, batch/N, ...]``; its metrics must
        already be averaged over ``data`` (they leave replicated).
        """
        # A probed fix for the JAX release in use, applied before the first
        # program is compiled on this mesh (never at import or construction).
        ensure_mulhi_lowering(self.mesh)
        specs = self.state_specs(state)
        # check_vma=False: components are written for one device (a scan carry
        # that starts as zeros and becomes per-device data is fine there), and
        # must run unchanged. What leaves replicated is made so explicitly:
        # gradients and metrics by pmean, network state from device 0, the run
        # key by construction (see data_parallel_step).
        mapped = jax.shard_map(
            local_fn, mesh=self.mesh, in_specs=(specs, P(None, AXIS)), out_specs=(specs, P()),
            check_vma=False,
        )
        shardings = self.state_shardings(state)
        return jax.jit(
            mapped,
            in_shardings=(shardings, NamedSharding(self.mesh, P(None, AXIS))),
            out_shardings=(shardings, self.replicated),
            donate_argnums=(0,),
        )

    # -- leaving the mesh (never inside a step) ----------------------------------

    def to_local(self, tree: Any) -> Any:
        """Every leaf as a whole array on this process's first device.

        Replicated leaves cost nothing (a local copy is used); split leaves
        (the buffer) are gathered — with one collective per leaf across
        processes. For after training: sampling, plots, evaluation.
        """
        device = jax.local_devices()[0]

        def one(x: Any) -> Any:
            if not isinstance(x, jax.Array):
                return x
            if x.is_fully_replicated:
                return jax.device_put(x.addressable_data(0), device)
            if x.is_fully_addressable:
                return jax.device_put(x, device)
            from jax.experimental import multihost_utils

            key_impl = jax.random.key_impl(x) if _is_key(x) else None
            data = jax.random.key_data(x) if key_impl is not None else x
            full = jax.device_put(np.asarray(multihost_utils.process_allgather(data, tiled=True)), device)
            return jax.random.wrap_key_data(full, impl=key_impl) if key_impl is not None else full

        return jax.tree.map(one, tree)

    def snapshot(self, tree: Any) -> Any:
        """A host copy of this process's shards (to roll back to; see ``put``)."""

        def one(x: Any) -> Any:
            key_impl = jax.random.key_impl(x) if _is_key(x) else None
            data = jax.random.key_data(x) if key_impl is not None else x
            shards = {}
            for shard in data.addressable_shards:
                index = _index_key(shard.index)
                if index not in shards:
                    shards[index] = np.asarray(shard.data)
            return _HostLeaf(tuple(data.shape), data.dtype, data.sharding, shards, key_impl)

        return jax.tree.map(one, tree)

    def _from_host_leaf(self, leaf: _HostLeaf) -> jax.Array:
        out = jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: leaf.shards[_index_key(index)])
        return jax.random.wrap_key_data(out, impl=leaf.key_impl) if leaf.key_impl is not None else out

    def restore_snapshot(self, snapshot: Any) -> Any:
        return jax.tree.map(self._from_host_leaf, snapshot, is_leaf=lambda x: isinstance(x, _HostLeaf))

    def all_finite(self, tree: Any) -> bool:
        """Whether every float in ``tree`` (replicated leaves) is finite."""
        for x in jax.tree.leaves(tree):
            local = np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)
            if np.issubdtype(local.dtype, np.floating) and not np.all(np.isfinite(local)):
                return False
        return True

    @property
    def max_in_flight(self) -> int | None:
        """Compiled calls allowed to queue ahead of the one running, or ``None``.

        XLA's CPU collectives meet in a rendezvous with a timeout: with many
        multi-device programs queued on a busy machine, one device's thread can
        fall a whole program behind the others and the run aborts ("Expected N
        threads to join the rendezvous"). On CPU the trainer therefore waits
        for each call before queuing the one after next.
        """
        return 1 if self.mesh.devices.flat[0].platform == "cpu" else None

    @property
    def axis_name(self) -> str:
        """The mesh axis the step's collectives run over."""
        return AXIS

    def allgather_json(self, value: Any) -> list[Any]:
        """``value`` (JSON-able) from every process, in process order."""
        if self.process_count == 1:
            return [value]
        from jax.experimental import multihost_utils

        raw = json.dumps(value).encode()
        size = int(np.max(multihost_utils.process_allgather(np.array([len(raw)], np.int64))))
        padded = np.zeros(size, np.uint8)
        padded[: len(raw)] = np.frombuffer(raw, np.uint8)
        rows = np.asarray(multihost_utils.process_allgather(padded))
        return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in rows.reshape(self.process_count, size)]


def _near_multiples(value: int, n: int) -> str:
    low, high = (value // n) * n, (value // n + 1) * n
    return f"{low} or {high}" if low > 0 else str(high)


# -- cost model -------------------------------------------------------------------------


def _nbytes(tree: Any) -> int:
    total = 0
    for x in jax.tree.leaves(tree):
        if _is_key(x):
            x = jax.random.key_data(x)
        total += math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
    return total


def communication_volume(state: Any, num_devices: int, *, batch_size: int, event_shape: tuple[int, ...],
                         num_metrics: int) -> dict[str, Any]:
    """Bytes moved per training step, computed from the shapes.

    Args:
        state: a TrainState (host or device; only shapes and dtypes are read).
        num_devices: size of the ``data`` axis.
        batch_size: the global batch.
        event_shape: the shape of one sample.
        num_metrics: scalars averaged per step (the metrics dict).

    Returns:
        ``allreduce_bytes`` (gradient mean + metric mean, the payload of the
        all-reduce), ``ring_bytes_per_device`` (what a ring all-reduce sends
        from each device: ``2 (N-1)/N`` times the payload), ``buffer_bytes_moved``
        (always 0: every device writes back into its own slice),
        ``batch_bytes_per_device`` (host to device), ``buffer_bytes_per_device``
        and ``replicated_bytes_per_device`` (memory held).
    """
    n = int(num_devices)
    grad_bytes = _nbytes((state.energy_params, state.loss_params))
    metric_bytes = 4 * int(num_metrics)
    payload = grad_bytes + metric_bytes if n > 1 else 0
    event = math.prod(event_shape)
    return {
        "devices": n,
        "gradient_bytes": grad_bytes,
        "metric_bytes": metric_bytes,
        "allreduce_bytes": payload,
        "ring_bytes_per_device": int(round(2 * (n - 1) / n * payload)) if n > 1 else 0,
        "buffer_bytes_moved": 0,
        "batch_bytes_per_device": batch_size // n * event * 4,
        "buffer_bytes_per_device": _nbytes(state.buffer_state) // n,
        "replicated_bytes_per_device": _nbytes(
            (state.energy_params, state.energy_state, state.loss_params, state.loss_state, state.opt_state, state.rng_key,
             state.ema_params)
        ),
    }


_COLLECTIVE = re.compile(
    r"\s(?P<op>all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter|collective-broadcast)(?:-start)?\("
)
_ARRAY_TYPE = re.compile(r"\b(?P<dtype>pred|[sufc]\d+|bf16)\[(?P<dims>[\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "bf16": 2}


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes per collective kind in compiled HLO (``compiled.as_text()``).

    Each op's result is counted once where it appears, so for a step inside a
    ``scan`` this is the volume of one step. A data-parallel step should show
    only ``all-reduce`` (gradients, metrics, small network state) and no
    ``all-gather``: the buffer and the batch never leave their device.
    """
    out: dict[str, int] = {}
    for line in hlo_text.splitlines():
        match = _COLLECTIVE.search(line)
        if match is None or "=" not in line[: match.start()]:
            continue
        result_types = line[line.index("=") + 1 : match.start()]  # "(f32[16,1]{1,0}, f32[])" or "f32[8]{0}"
        total = 0
        for array in _ARRAY_TYPE.finditer(result_types):
            dtype = array["dtype"]
            size = _DTYPE_BYTES.get(dtype) or max(1, int(dtype[1:]) // 8)
            dims = [int(d) for d in array["dims"].split(",") if d]
            total += size * math.prod(dims)
        out[match["op"]] = out.get(match["op"], 0) + total
    return out
