"""Joining a multi-process (multi-host) run before JAX starts its devices."""

from __future__ import annotations

import os

import jax

from ebmkit.config.schema import DistributedConfig
from ebmkit.errors import ShardingError

__all__ = ["initialize", "prepare_cpu_devices", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID"]

#: Environment variables read by :func:`initialize` (JAX reads the first itself).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ShardingError(f"${name} must be an integer, got {raw!r}") from None


def initialize(config: DistributedConfig | None = None) -> bool:
    """Join a multi-process run through ``jax.distributed.initialize()``.

    Call it before anything touches a JAX device. Settings come from the
    config, else from ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and
    ``$JAX_PROCESS_ID``; what is still missing is left to JAX's own cluster
    detection (SLURM, Open MPI, Kubernetes, Cloud TPU).

    Returns:
        True if this call (or an earlier one) started the distributed runtime.

    Raises:
        ShardingError: the runtime is asked for after JAX already started
            its devices, or JAX could not start it (the message says why).
    """
    if jax.distributed.is_initialized():
        return True
    config = config if config is not None else DistributedConfig()
    if config.multihost == "off":
        return False
    address = config.coordinator_address or os.environ.get(ENV_COORDINATOR)
    if config.multihost == "auto" and not address:
        return False
    num_processes = config.num_processes if config.num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = config.process_id if config.process_id is not None else _env_int(ENV_PROCESS_ID)
    try:
        jax.distributed.initialize(
            coordinator_address=address, num_processes=num_processes, process_id=process_id
        )
    except RuntimeError as exc:
        raise ShardingError(
            f"cannot start the multi-process runtime: {exc}\n"
            "Call ebmkit.distributed.initialize() (or `ebmkit train`) before any other JAX work, "
            f"and give every process the same ${ENV_COORDINATOR} (host:port of process 0), "
            f"${ENV_NUM_PROCESSES} and its own ${ENV_PROCESS_ID}."
        ) from exc
    except ValueError as exc:
        raise ShardingError(
            f"cannot start the multi-process runtime: {exc}\n"
            f"Set ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID} "
            "(or [distributed] coordinator_address / num_processes / process_id), "
            "or run under SLURM or Open MPI, which JAX detects by itself."
        ) from exc
    return True


def prepare_cpu_devices(num_devices: int | None) -> bool:
    """Ask JAX for ``num_devices`` CPU devices, so ``--devices N`` works on a
    CPU-only machine without ``XLA_FLAGS``.

    It must run before JAX starts its backends; afterwards (or when
    ``XLA_FLAGS`` already forces a host device count) it changes nothing and
    the mesh check reports what is missing. Accelerators are unaffected: the
    setting only shapes the CPU platform.

    Returns:
        Whether the setting was applied.
    """
    if num_devices is None or num_devices <= 1:
        return False
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False
    except (ImportError, AttributeError):  # another JAX: try, and let JAX say no
        pass
    try:
        jax.config.update("jax_num_cpu_devices", int(num_devices))
    except (RuntimeError, ValueError, AttributeError):
        return False
    return True
