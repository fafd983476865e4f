"""Data-parallel training over a device mesh, on one host or many.

* :mod:`ebmkit.distributed.runtime`: :func:`initialize`, joining a multi-process run.
* :mod:`ebmkit.distributed.data_parallel`: :class:`DataParallel`, the mesh
  placement the trainer uses, the per-device step and its one-device emulation.
* :mod:`ebmkit.distributed.jax_workarounds`: probed fixes for the JAX release.
"""

from ebmkit.config.schema import parse_mesh
from ebmkit.distributed.data_parallel import (
    AXIS,
    DataParallel,
    collective_bytes,
    communication_volume,
    data_parallel_step,
    emulate,
)
from ebmkit.distributed.runtime import initialize, prepare_cpu_devices
from ebmkit.errors import ShardingError

__all__ = [
    "AXIS",
    "DataParallel",
    "ShardingError",
    "collective_bytes",
    "communication_volume",
    "data_parallel_step",
    "emulate",
    "initialize",
    "parse_mesh",
    "prepare_cpu_devices",
]
