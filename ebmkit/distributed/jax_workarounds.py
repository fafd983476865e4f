"""Work-arounds for known bugs of the JAX release ebmkit runs on, applied on demand.

Each is probed first and applied only where the bug shows, and each keeps
results bit-identical; none runs at import.
"""

from __future__ import annotations

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

__all__ = ["ensure_mulhi_lowering"]

AXIS = "data"


_MULHI_CHECKED = False


@contextlib.contextmanager
def _quiet_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some notebooks): stay loud
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def ensure_mulhi_lowering(mesh: Mesh) -> None:
    """Make ``lax.mulhi`` compile in programs split over several devices.

    jaxlib 0.10 lowers ``lax.mulhi`` to ``chlo.mulhi``, which fails to
    legalize once the program is partitioned over several devices
    ("Unable to convert MHLO to StableHLO: failed to legalize operation
    'mhlo.unknown'"), under ``shard_map`` and plain sharded ``jit`` alike, on
    CPU at least. The Philox key implementations (``philox4x32``) use it, so
    a sampler drawing its noise from Philox could not be trained on a mesh.
    Once per process, compile a probe; if it fails that way, lower ``mulhi``
    with JAX's own portable rule (``lax._mulhi_impl``: widen, multiply,
    shift). Integer arithmetic, so the random streams are bit-identical.
    """
    global _MULHI_CHECKED
    if _MULHI_CHECKED or mesh.devices.size < 2 or not hasattr(jax.lax, "mulhi"):
        return
    _MULHI_CHECKED = True
    probe = jax.jit(jax.shard_map(
        lambda x: jax.lax.mulhi(x, x), mesh=mesh, in_specs=P(AXIS), out_specs=P(AXIS), check_vma=False
    ))
    try:
        with _quiet_stderr():  # MLIR prints the expected failure straight to fd 2
            probe.lower(jax.ShapeDtypeStruct((int(mesh.devices.size),), jnp.uint32)).compile()
        return
    except Exception as exc:  # noqa: BLE001 - only the known failure is handled
        if "StableHLO" not in str(exc):
            return
    try:
        from jax._src.interpreters import mlir
        from jax._src.lax import lax as lax_internal

        mlir.register_lowering(
            lax_internal.mulhi_p, mlir.lower_fun(lax_internal._mulhi_impl, multiple_results=False)
        )
    except (ImportError, AttributeError):  # another JAX: the step reports its own error
        return


