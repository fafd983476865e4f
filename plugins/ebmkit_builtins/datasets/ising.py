"""``ising``: samples of a 2-D periodic Ising model with known couplings.

The model lives on a ``size × size`` torus. With spins ``s = 2x − 1`` in
{−1, +1} (data are stored as bits ``x`` in {0, 1}, ``float32[n, size, size, 1]``,
like every binary data set in ebmkit)::

    p(s) ∝ exp(θ Σ_{<ij>} s_i s_j + h Σ_i s_i)

over the ``2 · size²`` nearest-neighbour edges, ``θ = coupling``, ``h = field``.
:meth:`IsingLattice.true_couplings` gives the symmetric ``[n, n]`` matrix ``J``
(``J_ij = θ`` on edges, 0 elsewhere) and :meth:`IsingLattice.true_field` the
fields, in those spin units, so that ``log p(s) = ½ sᵀ J s + h·s − log Z``.

**Generation.** Every sample is the end of its own chain of ``sweeps``
checkerboard heat-bath sweeps (exact block Gibbs: on an even torus the two
colours are conditionally independent), all chains vectorised in NumPy from
``seed``. Half the chains start from uniform random spins (infinite
temperature), half from all spins up (zero temperature); if the chains have
forgotten their starts, the two halves' mean energy and mean ``|magnetisation|``
agree within their standard errors. :attr:`IsingLattice.chain_check` holds the
two z-scores, and building refuses data whose check fails (``|z| > 5``: raise
``sweeps``). Near the critical coupling ``θ_c = ½ ln(1 + √2) ≈ 0.4407`` mixing
slows sharply.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ebmkit.config import DatasetConfig, config_class
from ebmkit.config.validators import finite, positive_int
from ebmkit.data import HELD_OUT_SEED, Dataset, fraction_field, seed_field
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["IsingConfig", "IsingLattice", "lattice_edges", "spin_energy", "build", "spec"]

#: ``|z|`` above which the start-comparison check refuses the data.
CHECK_LIMIT = 5.0


def _even_size(_inst, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value % 2:
        raise ValueError(f"{attribute.name} must be an even integer >= 4 (checkerboard updates need an even torus), got {value!r}")


@config_class
class IsingConfig(DatasetConfig):
    """Config of ``ising``.

    Attributes:
        size: the lattice is ``size × size`` (even, at least 4).
        coupling: ``θ``, the nearest-neighbour coupling (positive: ferromagnetic).
        field: ``h``, the external field on every spin.
        num_samples: independent samples drawn (train plus test).
        sweeps: checkerboard sweeps per chain before its sample is taken.
        test_fraction: fraction of the samples held out.
        seed: seed of the chains and the split.
    """

    size: int = attrs.field(default=10, validator=_even_size)
    coupling: float = attrs.field(default=0.25, validator=finite)
    field: float = attrs.field(default=0.0, validator=finite)
    num_samples: int = attrs.field(default=2000, validator=positive_int)
    sweeps: int = attrs.field(default=200, validator=positive_int)
    test_fraction: float = fraction_field(0.2)
    seed: int = seed_field(0)


def lattice_edges(size: int) -> np.ndarray:
    """``int64[2·size², 2]``: the torus's nearest-neighbour pairs of flat indices
    (right neighbour first, then the one below), row-major sites."""
    idx = np.arange(size * size).reshape(size, size)
    right = np.stack([idx.ravel(), np.roll(idx, -1, axis=1).ravel()], axis=1)
    down = np.stack([idx.ravel(), np.roll(idx, -1, axis=0).ravel()], axis=1)
    return np.concatenate([right, down])


def spin_energy(spins: np.ndarray, coupling: float, field: float) -> np.ndarray:
    """``−θ Σ_<ij> s_i s_j − h Σ s_i`` per sample of ``spins[n, L, L]`` in ±1."""
    bonds = spins * np.roll(spins, -1, axis=1) + spins * np.roll(spins, -1, axis=2)
    return -coupling * bonds.sum(axis=(1, 2)) - field * spins.sum(axis=(1, 2))


def _run_chains(rng: np.random.Generator, spins: np.ndarray, coupling: float, field: float, sweeps: int) -> np.ndarray:
    """``sweeps`` checkerboard heat-bath sweeps of every chain in ``spins[n, L, L]`` (±1)."""
    size = spins.shape[1]
    colour = (np.add.outer(np.arange(size), np.arange(size)) % 2).astype(bool)
    # The neighbours' sum takes the values -4, -2, 0, 2, 4: p(s_i = +1 | rest)
    # = σ(2 (θ Σ_nb s_j + h)) is a lookup, in float32 like the uniforms.
    p_up = (1.0 / (1.0 + np.exp(-2.0 * (coupling * np.arange(-4, 5, 2) + field)))).astype(np.float32)
    spins = spins.astype(np.int8)
    for _ in range(sweeps):
        for mask in (colour, ~colour):
            neighbours = np.roll(spins, 1, 1) + np.roll(spins, -1, 1) + np.roll(spins, 1, 2) + np.roll(spins, -1, 2)
            up = rng.random(spins.shape, dtype=np.float32) < p_up[(neighbours + 4) >> 1]
            spins = np.where(mask, np.where(up, 1, -1).astype(np.int8), spins)
    return spins.astype(np.float32)


def _z(a: np.ndarray, b: np.ndarray) -> float:
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return 0.0 if se == 0.0 else float((a.mean() - b.mean()) / se)


class IsingLattice(Dataset):
    """Ising samples as bits ``float32[n, size, size, 1]``.

    Attributes:
        train, test: the samples, split at random.
        chain_check: ``{"energy_z", "magnetisation_z"}``: random-start versus
            all-up-start chains, in standard errors.
    """

    name = "ising"
    modality = "image"
    support = "binary"
    bounds = (0.0, 1.0)

    def __init__(self, config: IsingConfig):
        self.config = config
        size, n = config.size, config.num_samples
        if n < 4:
            raise ValueError(f"ising: num_samples must be at least 4 (two groups of chains to compare), got {n}")
        self.event_shape = (size, size, 1)
        rng = np.random.default_rng(config.seed)
        hot = np.where(rng.random((n - n // 2, size, size)) < 0.5, 1.0, -1.0).astype(np.float32)
        cold = np.ones((n // 2, size, size), np.float32)
        spins = _run_chains(rng, np.concatenate([hot, cold]), config.coupling, config.field, config.sweeps)
        energy = spin_energy(spins, config.coupling, config.field) / size**2
        magnet = np.abs(spins.mean(axis=(1, 2)))
        k = len(hot)
        self.chain_check = {
            "energy_z": _z(energy[:k], energy[k:]),
            "magnetisation_z": _z(magnet[:k], magnet[k:]),
        }
        if max(abs(v) for v in self.chain_check.values()) > CHECK_LIMIT:
            raise ValueError(
                f"ising: chains from random and all-up starts disagree after {config.sweeps} sweeps "
                f"(z-scores {self.chain_check}); raise sweeps, or move the coupling away from "
                f"the critical 0.4407"
            )
        bits = ((spins + 1.0) / 2.0)[..., None].astype(np.float32)
        perm = rng.permutation(n)
        n_test = min(max(1, round(config.test_fraction * n)), n - 1)
        self.test, self.train = bits[perm[:n_test]], bits[perm[n_test:]]

    @property
    def num_sites(self) -> int:
        return self.config.size**2

    def true_couplings(self) -> np.ndarray:
        """``float32[n, n]`` symmetric, ``θ`` on lattice edges, zero diagonal (spin units)."""
        n = self.num_sites
        j = np.zeros((n, n), np.float32)
        edges = lattice_edges(self.config.size)
        j[edges[:, 0], edges[:, 1]] = self.config.coupling
        j[edges[:, 1], edges[:, 0]] = self.config.coupling
        return j

    def true_field(self) -> np.ndarray:
        """``float32[n]``: ``h`` on every site (spin units)."""
        return np.full((self.num_sites,), self.config.field, np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.train[rng.integers(0, len(self.train), size=n)]

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        return self.test if n is None or n >= len(self.test) else self.test[:n]


def build(config: IsingConfig, ctx: BuildContext | None = None) -> IsingLattice:
    """Draw the samples (seconds at the default size)."""
    return IsingLattice(config)


spec = ComponentSpec(
    kind="dataset",
    name="ising",
    config=IsingConfig,
    build=build,
    summary="Samples of a periodic 2-D Ising lattice with known couplings, as {0, 1} bits (true_couplings())",
)
