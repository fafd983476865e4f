"""``ising``: a learnable Ising model (pairwise couplings and fields) over bits.

Bits ``x`` in {0, 1} map to spins ``s = 2x - 1``; the energy is::

    E(x) = -Σ_{i<j} J_ij s_i s_j - Σ_i h_i s_i = -½ sᵀ J s - h·s

``structure = "lattice"`` (the default) learns one coupling per
nearest-neighbour edge of a periodic 2-D lattice, for events of shape
``(L, L)`` or ``(L, L, 1)`` (``L >= 3``); the ``ising`` data set's lattice.
``structure = "full"`` learns every pair (a fully visible Boltzmann machine,
any event shape). :meth:`IsingEnergy.couplings` returns ``J`` as a symmetric
``[n, n]`` matrix with zero diagonal, in the same spin units as the data
set's ``true_couplings()``, for ``ebmkit.evaluate.discrete.coupling_rmse``.
"""

from __future__ import annotations

import math

import attrs
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ebmkit.config import EnergyConfig, config_class
from ebmkit.config.validators import non_negative, one_of
from ebmkit.nn import (
    ModeViewMixin,
    check_event_shape,
    check_fits_in_memory,
    check_input,
    check_rngs,
)
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["IsingEnergyConfig", "IsingEnergy", "build", "spec"]


@config_class
class IsingEnergyConfig(EnergyConfig):
    """Config of the ``ising`` energy.

    Attributes:
        structure: ``"lattice"`` (nearest neighbours on a periodic 2-D lattice)
            or ``"full"`` (every pair).
        init_scale: standard deviation of the initial couplings (fields start at 0).
    """

    structure: str = attrs.field(default="lattice", validator=one_of(("lattice", "full")))
    init_scale: float = attrs.field(default=0.01, validator=non_negative)


def _lattice_side(event_shape: tuple[int, ...]) -> int:
    if len(event_shape) in (2, 3) and event_shape[0] == event_shape[1] and event_shape[0] >= 3 and (
        len(event_shape) == 2 or event_shape[2] == 1
    ):
        return event_shape[0]
    raise ValueError(
        f"ising energy: structure 'lattice' needs events of shape (L, L) or (L, L, 1) with L >= 3, "
        f"got {event_shape}; use structure = 'full' for other data"
    )


class IsingEnergy(ModeViewMixin, nnx.Module):
    """``x[B, *event] -> E[B]`` of an Ising model with learnable couplings and fields.

    Attributes:
        field: ``h[n]``.
        right, down: ``[L, L]`` couplings to each site's right and lower
            neighbour (lattice structure).
        pairs: ``[n, n]``, whose strict upper triangle holds the couplings (full structure).
    """

    def __init__(self, config: IsingEnergyConfig, *, event_shape: tuple[int, ...], rngs: nnx.Rngs):
        check_rngs(rngs, "ising")
        self.event_shape = check_event_shape(event_shape, "ising")
        self.structure = config.structure
        n = math.prod(self.event_shape)
        key = rngs.params()
        self.field = nnx.Param(jnp.zeros((n,), jnp.float32))
        if self.structure == "lattice":
            side = _lattice_side(self.event_shape)
            k1, k2 = jax.random.split(key)
            self.side = side
            self.right = nnx.Param(config.init_scale * jax.random.normal(k1, (side, side), jnp.float32))
            self.down = nnx.Param(config.init_scale * jax.random.normal(k2, (side, side), jnp.float32))
        else:
            check_fits_in_memory(n * n, "energy (ising, structure 'full')", copies=4)
            self.pairs = nnx.Param(config.init_scale * jax.random.normal(key, (n, n), jnp.float32))

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        if y is not None:
            raise ValueError("ising energy: got a condition y, but an Ising model takes none")
        x = check_input(x, self.event_shape, "ising")
        s = 2.0 * x.reshape(x.shape[0], -1) - 1.0
        out = -(s @ self.field[...])
        if self.structure == "lattice":
            grid = s.reshape(-1, self.side, self.side)
            bonds = (self.right[...] * grid * jnp.roll(grid, -1, axis=2)
                     + self.down[...] * grid * jnp.roll(grid, -1, axis=1))
            return out - jnp.sum(bonds, axis=(1, 2))
        upper = jnp.triu(self.pairs[...], k=1)
        return out - jnp.sum((s @ upper) * s, axis=-1)

    def couplings(self) -> np.ndarray:
        """``J``: ``float32[n, n]`` symmetric with zero diagonal (spin units)."""
        if self.structure == "full":
            upper = np.triu(np.asarray(self.pairs[...]), k=1)
            return (upper + upper.T).astype(np.float32)
        side = self.side
        idx = np.arange(side * side).reshape(side, side)
        j = np.zeros((side * side, side * side), np.float32)
        for weights, neighbour in ((self.right, np.roll(idx, -1, axis=1)), (self.down, np.roll(idx, -1, axis=0))):
            j[idx.ravel(), neighbour.ravel()] = np.asarray(weights[...]).ravel()
        return (j + j.T).astype(np.float32)


def build(config: IsingEnergyConfig, ctx: BuildContext) -> IsingEnergy:
    """An Ising model over events of ``ctx.event_shape``."""
    return IsingEnergy(config, event_shape=ctx.event_shape, rngs=ctx.rngs)


spec = ComponentSpec(
    kind="energy",
    name="ising",
    config=IsingEnergyConfig,
    build=build,
    summary="Ising model over bits: learnable lattice (or all-pairs) couplings and fields; couplings() for RMSE",
    supports=("binary",),
)
