"""``gray``: a 2-D toy as 32 bits, Gray-coded as in the discrete-EBM papers.

Each coordinate of a point of the toy (any registered 2-D data set, e.g.
``toy = "8gaussians"``) is clipped to the toy's bounds ``[low, high]``,
quantised to one of ``2**bits_per_coordinate`` equal cells and written as the
Gray code of the cell index, most significant bit first (as in Dai et al.
2020, Grathwohl et al. 2021 "Oops I took a gradient", Zhang et al. 2022
EB-GFN; their scheme differs in detail: a sign bit and 15 magnitude bits). The
two codes are concatenated: ``float32[n, 2 · bits_per_coordinate]`` with values
0.0 and 1.0. Neighbouring cells differ in one bit, so single-bit moves of a
sampler are small moves in the plane.

:meth:`GrayToy.decode` maps bits back to the centres of their cells, so samples
of a discrete model can be drawn and scored as points (e.g. with the toy's
``log_prob``), side by side with a continuous model of the same toy.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ebmkit.components import build_dataset
from ebmkit.config import DatasetConfig, component_field, config_class
from ebmkit.config.validators import in_range
from ebmkit.data import HELD_OUT_SEED, Dataset
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["GrayConfig", "GrayToy", "gray_encode", "gray_decode", "build", "spec"]


@config_class
class GrayConfig(DatasetConfig):
    """Config of ``gray``.

    Attributes:
        toy: the 2-D data set to encode (a name or a table with its settings).
        bits_per_coordinate: bits of each coordinate (16 gives 32 bits a point).
    """

    toy: Any = component_field("dataset", "8gaussians")
    bits_per_coordinate: int = attrs.field(default=16, validator=in_range(1, 24))


def gray_encode(values: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    """``values[...]`` as Gray-coded cell indices, ``float32[..., bits]`` (MSB first)."""
    cells = 2**bits
    k = np.floor((np.clip(values, low, high) - low) / (high - low) * cells).astype(np.int64)
    k = np.clip(k, 0, cells - 1)
    g = k ^ (k >> 1)
    shifts = np.arange(bits - 1, -1, -1)
    return ((g[..., None] >> shifts) & 1).astype(np.float32)


def gray_decode(bits: np.ndarray, low: float, high: float) -> np.ndarray:
    """The centres of the cells whose Gray codes are ``bits[..., b]`` (MSB first)."""
    b = np.asarray(bits) > 0.5
    nbits = b.shape[-1]
    # Gray to binary: each binary digit is the XOR of the Gray digits above it.
    binary = np.bitwise_xor.accumulate(b.astype(np.int64), axis=-1)
    k = (binary << np.arange(nbits - 1, -1, -1)).sum(axis=-1)
    return low + (k + 0.5) * (high - low) / 2**nbits


class GrayToy(Dataset):
    """A 2-D toy's points as ``float32[n, 2 · bits]`` Gray-coded bits.

    Attributes:
        toy: the continuous data set.
        bits: bits per coordinate.
    """

    modality = "points"
    support = "binary"
    bounds = (0.0, 1.0)

    def __init__(self, toy: Any, bits: int, name: str = "gray"):
        if tuple(toy.event_shape) != (2,) or toy.bounds is None:
            raise ValueError(
                f"gray: toy {toy.name!r} must be a 2-D data set with bounds, got event shape "
                f"{tuple(toy.event_shape)} and bounds {toy.bounds}"
            )
        self.toy, self.bits, self.name = toy, int(bits), name
        self.event_shape = (2 * self.bits,)
        self.low, self.high = (float(v) for v in toy.bounds)

    def encode(self, points: np.ndarray) -> np.ndarray:
        """``points[n, 2]`` as bits ``[n, 2 · bits]``."""
        codes = gray_encode(np.asarray(points, np.float64), self.low, self.high, self.bits)
        return codes.reshape(len(points), -1)

    def decode(self, bits: Any) -> np.ndarray:
        """``bits[n, 2 · bits]`` (any values; > 0.5 is 1) as points ``float32[n, 2]``."""
        b = np.asarray(bits).reshape(-1, 2, self.bits)
        return gray_decode(b, self.low, self.high).astype(np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.encode(self.toy.sample(rng, n))

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        return self.encode(self.toy.held_out(n, seed=seed))


def build(config: GrayConfig, ctx: BuildContext | None = None) -> GrayToy:
    """The configured toy, Gray-coded."""
    return GrayToy(build_dataset(config.toy), config.bits_per_coordinate)


spec = ComponentSpec(
    kind="dataset",
    name="gray",
    config=GrayConfig,
    build=build,
    summary="A 2-D toy (toy = '8gaussians', ...) quantised and Gray-coded to 2 x 16 bits; decode() maps back",
)
