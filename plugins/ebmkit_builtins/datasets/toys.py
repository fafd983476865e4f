"""The six 2-D toy distributions of FFJORD (Grathwohl et al., ICLR 2019).

Each toy reproduces the distribution that FFJORD's ``lib/toy_data.py``
(``inf_train_gen``) draws from, with two deliberate differences in *how* it is
drawn, neither of which changes the distribution:

* every draw takes an explicit ``numpy.random.Generator`` (FFJORD mixes its
  ``rng`` with the global ``np.random`` state);
* points are i.i.d. FFJORD's ``rings`` and scikit-learn's ``make_moons`` place a
  batch's points at evenly spaced angles and ``8gaussians``/``pinwheel``/
  ``2spirals`` split a batch evenly between their parts; here each point picks
  its part and its angle at random. Both are the same distribution in the limit
  of large batches, and only i.i.d. draws make held-out scores and entropies
  meaningful.

``log_prob`` is exact where the density has a closed form: ``8gaussians``
(a mixture of eight isotropic Gaussians), ``checkerboard`` (uniform on eight
squares) and ``rings`` (four uniform circles blurred by isotropic Gaussian noise,
whose density is a Rice-type Bessel expression, see :class:`Rings`).
``entropy`` is the true differential entropy in nats (``checkerboard``: ln 32
exactly; the others by Monte Carlo with the exact density; docs/components/datasets.md gives the standard errors).

``noise_std`` is a training augmentation: it blurs :meth:`sample` only, while
``held_out``, ``log_prob`` and ``entropy`` describe the clean distribution.

Labels: every toy is a mixture of parts, and :meth:`ToyDataset.sample_labelled`
returns each point with the part that generated it (``8gaussians``: the centre,
0-7 counter-clockwise from the positive x axis; ``2spirals``: the spiral;
``checkerboard``: the black square; ``rings``: the ring, 0 the outermost;
``moons``: 0 the upper half circle, 1 the lower; ``pinwheel``: the arm). The
parts are equally likely. Where the class-conditional densities are known,
:meth:`ToyDataset.class_log_prob` gives ``log p(x | y)`` for every ``y``
(exact for ``8gaussians``, ``checkerboard`` and ``rings``; for ``moons`` a
quadrature over the arc, see :class:`Moons`), and with them
:meth:`ToyDataset.bayes_accuracy`, the accuracy of the Bayes-optimal classifier.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.config import DatasetConfig, config_class
from ebmkit.config.validators import non_negative
from ebmkit.data import HELD_OUT_SEED, Dataset, DeviceSampler
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = [
    "ToyConfig",
    "EightGaussiansConfig",
    "TwoSpiralsConfig",
    "CheckerboardConfig",
    "RingsConfig",
    "MoonsConfig",
    "PinwheelConfig",
    "ToyDataset",
    "EightGaussians",
    "TwoSpirals",
    "Checkerboard",
    "Rings",
    "Moons",
    "Pinwheel",
    "eight_gaussians_spec",
    "two_spirals_spec",
    "checkerboard_spec",
    "rings_spec",
    "moons_spec",
    "pinwheel_spec",
]

#: Number of held-out points drawn when ``held_out()`` is called without ``n``.
DEFAULT_HELD_OUT = 20_000

_LOG_2PI = math.log(2.0 * math.pi)


# -- configs: one class per registered name (the class identifies the component) --


@config_class
class ToyConfig(DatasetConfig):
    """Settings shared by the 2-D toys. Not registered itself.

    Attributes:
        noise_std: std of extra isotropic Gaussian noise added to training
            samples (:meth:`ToyDataset.sample`); held-out points, ``log_prob``
            and ``entropy`` stay those of the clean distribution.
    """

    noise_std: float = attrs.field(default=0.0, validator=non_negative)


@config_class
class EightGaussiansConfig(ToyConfig):
    """Config of ``8gaussians``."""


@config_class
class TwoSpiralsConfig(ToyConfig):
    """Config of ``2spirals``."""


@config_class
class CheckerboardConfig(ToyConfig):
    """Config of ``checkerboard``."""


@config_class
class RingsConfig(ToyConfig):
    """Config of ``rings``."""


@config_class
class MoonsConfig(ToyConfig):
    """Config of ``moons``."""


@config_class
class PinwheelConfig(ToyConfig):
    """Config of ``pinwheel``."""


# -- random draws: one construction of each toy, for numpy and for JAX ----------


class _HostDraws:
    """A numpy generator behind the calls the toys make (the same calls, in
    the same order, as the generator methods they stand for)."""

    xp = np

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def random(self, n: int) -> np.ndarray:
        return self.rng.random(n)

    def integers(self, high: int, n: int) -> np.ndarray:
        return self.rng.integers(0, high, size=n)

    def normal(self, scale: float, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.normal(0.0, scale, size=shape)

    def standard_normal(self, n: int) -> np.ndarray:
        return self.rng.standard_normal(n)


class _DeviceDraws:
    """The same calls on a JAX key (split once per call): for draws inside a
    compiled training step."""

    xp = jnp

    def __init__(self, rng_key: jax.Array):
        self.key = rng_key

    def _next(self) -> jax.Array:
        self.key, sub = jax.random.split(self.key)
        return sub

    def random(self, n: int) -> jax.Array:
        return jax.random.uniform(self._next(), (n,))

    def integers(self, high: int, n: int) -> jax.Array:
        return jax.random.randint(self._next(), (n,), 0, high)

    def normal(self, scale: float, shape: tuple[int, ...]) -> jax.Array:
        return scale * jax.random.normal(self._next(), shape)

    def standard_normal(self, n: int) -> jax.Array:
        return jax.random.normal(self._next(), (n,))


# -- data sets -----------------------------------------------------------------


class ToyDataset(Dataset):
    """An infinite 2-D data set; subclasses define :meth:`_draw`."""

    name = "toy"
    config_cls: type[ToyConfig] = ToyConfig
    event_shape = (2,)
    modality = "points"
    bounds = (-4.0, 4.0)
    #: The number of parts (labels ``0 .. num_classes - 1``), equally likely.
    num_classes: int | None = None

    def __init__(self, config: ToyConfig | None = None, ctx: BuildContext | None = None):
        self.config = config if config is not None else self.config_cls()

    def _construct(self, draws: Any, n: int) -> tuple[Any, Any]:
        """``n`` i.i.d. clean points ``[n, 2]`` and the part each came from,
        built from ``draws`` (:class:`_HostDraws` or :class:`_DeviceDraws`;
        array functions from ``draws.xp``)."""
        raise NotImplementedError

    def _draw_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. clean points, float64 ``[n, 2]``, and the part each came from."""
        return self._construct(_HostDraws(rng), n)

    def device_sampler(self, labelled: bool = False) -> DeviceSampler:
        """The toy's own construction on a JAX key (plus ``noise_std``)."""
        noise = float(self.config.noise_std)

        def draw(arrays: Any, rng_key: jax.Array, n: int) -> Any:
            k_points, k_noise = jax.random.split(rng_key)
            x, y = self._construct(_DeviceDraws(k_points), n)
            x = x.astype(jnp.float32)
            if noise:
                x = x + noise * jax.random.normal(k_noise, x.shape)
            return (x, y.astype(jnp.int32)) if labelled else x

        return DeviceSampler(arrays=None, draw=draw)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` i.i.d. clean points, float64 ``[n, 2]``."""
        return self._draw_labelled(rng, n)[0]

    def _noisy(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        if self.config.noise_std:
            x = x + rng.normal(0.0, self.config.noise_std, size=x.shape)
        return x.astype(np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._noisy(rng, self._draw(rng, n))

    def sample_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` training points (with ``noise_std``) and the part each came from, ``int32[n]``.

        The same generator state gives the same points as :meth:`sample`.
        """
        x, y = self._draw_labelled(rng, n)
        return self._noisy(rng, x), y.astype(np.int32)

    def held_out(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> np.ndarray:
        """``n`` (default 20,000) clean draws from a generator seeded with ``seed``."""
        n = DEFAULT_HELD_OUT if n is None else n
        return self._draw(np.random.default_rng(seed), n).astype(np.float32)

    def held_out_labelled(self, n: int | None = None, *, seed: int = HELD_OUT_SEED) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`held_out`'s points and their labels ``int32[n]``."""
        n = DEFAULT_HELD_OUT if n is None else n
        x, y = self._draw_labelled(np.random.default_rng(seed), n)
        return x.astype(np.float32), y.astype(np.int32)

    @property
    def has_class_log_prob(self) -> bool:
        """Whether :meth:`class_log_prob` is available."""
        return type(self).class_log_prob is not ToyDataset.class_log_prob

    def class_log_prob(self, x: np.ndarray) -> np.ndarray:
        """``log p(x | y)`` of the clean distribution for every label, float64 ``[..., num_classes]``."""
        raise NotImplementedError(f"data set {self.name!r} has no closed-form class-conditional densities")

    def bayes_accuracy(self, n: int = 50_000, *, seed: int = HELD_OUT_SEED + 2) -> float:
        """The accuracy of the Bayes-optimal classifier ``argmax_y p(x | y)``
        (the parts are equally likely), by Monte Carlo over ``n`` clean draws
        (standard error ``sqrt(a (1 - a) / n)`` at accuracy ``a``: below 0.001
        for ``a`` above 0.95 at the default ``n``).

        Raises:
            NotImplementedError: the class-conditional densities are unknown.
        """
        x, y = self._draw_labelled(np.random.default_rng(seed), n)
        return float(np.mean(np.argmax(self.class_log_prob(x), axis=-1) == y))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1:] != (2,):
        raise ValueError(f"expected points of shape [..., 2], got {x.shape}")
    return x


class EightGaussians(ToyDataset):
    """Eight Gaussians on a circle (FFJORD ``8gaussians``).

    FFJORD puts centres at radius 4 on the axes and diagonals, adds N(0, 0.5²)
    noise and divides by 1.414 (not √2): centres at radius 2.8289, σ = 0.35361.
    About 2.4e-4 of the mass lies outside ``bounds`` (the axis components sit
    3.3σ from its edge).
    """

    name = "8gaussians"
    config_cls = EightGaussiansConfig
    entropy = 2.8327
    SCALE = 4.0
    STD = 0.5
    DIVISOR = 1.414

    def __init__(self, config: ToyConfig | None = None, ctx: BuildContext | None = None):
        super().__init__(config, ctx)
        angles = np.arange(8) * (np.pi / 4)
        unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self.centers = self.SCALE * unit / self.DIVISOR
        self.std = self.STD / self.DIVISOR

    num_classes = 8

    def _construct(self, draws, n):
        idx = draws.integers(8, n)
        return draws.xp.asarray(self.centers)[idx] + draws.normal(self.std, (n, 2)), idx

    def class_log_prob(self, x):
        x = _points(x)
        sq = np.sum((x[..., None, :] - self.centers) ** 2, axis=-1)
        var = self.std**2
        return -0.5 * sq / var - math.log(var) - _LOG_2PI

    def log_prob(self, x):
        return _logsumexp(self.class_log_prob(x) - math.log(8), axis=-1)


class TwoSpirals(ToyDataset):
    """Two interleaved spirals (FFJORD ``2spirals``).

    Arc parameter ``t = 3π·sqrt(u)``; a point ``(-t cos t + 0.5 u₁, t sin t +
    0.5 u₂)`` with ``u₁, u₂ ~ U[0, 1)``, mirrored through the origin for the
    second spiral, divided by 3, plus N(0, 0.1²) noise. No closed-form density.
    """

    name = "2spirals"
    config_cls = TwoSpiralsConfig
    entropy = 2.6435

    num_classes = 2

    def _construct(self, draws, n):
        xp = draws.xp
        t = xp.sqrt(draws.random(n)) * (540.0 * 2.0 * np.pi / 360.0)
        arm = xp.stack(
            [-xp.cos(t) * t + 0.5 * draws.random(n), xp.sin(t) * t + 0.5 * draws.random(n)], axis=1
        )
        first = draws.random(n) < 0.5
        sign = xp.where(first, 1.0, -1.0)[:, None]
        return sign * arm / 3.0 + draws.normal(0.1, (n, 2)), xp.where(first, 0, 1)


class Checkerboard(ToyDataset):
    """Uniform on the eight black squares of a 4×4 board over [-4, 4)² (FFJORD ``checkerboard``).

    Squares have side 2; the square with lower-left corner ``(2i, 2j)``,
    ``i, j ∈ {-2, …, 1}``, is black when ``i + j`` is even. Density 1/32 there,
    0 elsewhere; entropy ln 32.
    """

    name = "checkerboard"
    config_cls = CheckerboardConfig
    entropy = math.log(32.0)

    num_classes = 8

    def _construct(self, draws, n):
        # FFJORD's construction: x1 uniform on [-2, 2); x2 on [0, 1) or [-2, -1),
        # shifted up by one in odd columns; everything doubled.
        xp = draws.xp
        x1 = draws.random(n) * 4.0 - 2.0
        x2 = draws.random(n) - 2.0 * draws.integers(2, n) + xp.floor(x1) % 2
        x = 2.0 * xp.stack([x1, x2], axis=1)
        return x, self._square(x, xp)

    @staticmethod
    def _square(x: np.ndarray, xp: Any = np) -> np.ndarray:
        """The black square holding ``x`` (0-7: columns left to right, two per column, lower first)."""
        cell = xp.floor(x / 2.0).astype(xp.int32)
        return 2 * (cell[..., 0] + 2) + (cell[..., 1] + 2) // 2

    def class_log_prob(self, x):
        x = _points(x)
        cell = np.floor(x / 2.0)
        inside = np.all((cell >= -2) & (cell <= 1), axis=-1)
        black = np.sum(cell, axis=-1) % 2 == 0
        square = np.where(inside & black, self._square(np.where(inside[..., None], x, 0.0)), -1)
        return np.where(square[..., None] == np.arange(8), -math.log(4.0), -np.inf)

    def log_prob(self, x):
        x = _points(x)
        cell = np.floor(x / 2.0)
        inside = np.all((cell >= -2) & (cell <= 1), axis=-1)
        black = np.sum(cell, axis=-1) % 2 == 0
        return np.where(inside & black, -math.log(32.0), -np.inf)


def _log_i0e(z: np.ndarray) -> np.ndarray:
    """``log(I0(z) exp(-z))`` for ``z >= 0``, without overflow and without SciPy."""
    z = np.asarray(z, dtype=np.float64)
    small = z <= 500.0
    zs = np.where(small, z, 0.0)
    out_small = np.log(np.i0(zs)) - zs
    # Asymptotic series I0(z) ~ e^z / sqrt(2πz) · Σ_k ((2k-1)!!)² / (k! (8z)^k);
    # at z > 500 six terms are exact to double precision.
    zl = np.where(small, 1.0, z)
    term = np.ones_like(zl)
    series = np.ones_like(zl)
    for k in range(1, 7):
        term = term * (2 * k - 1) ** 2 / (k * 8.0 * zl)
        series = series + term
    out_large = -0.5 * np.log(2.0 * np.pi * zl) + np.log(series)
    return np.where(small, out_small, out_large)


class Rings(ToyDataset):
    """Four concentric rings (FFJORD ``rings``).

    Radii 3, 2.25, 1.5 and 0.75 with a quarter of the points each, angle
    uniform, plus isotropic N(0, 0.08²) noise. The density is exact: a uniform
    circle of radius R blurred by N(0, σ²I) has, at distance r from the centre,
    ``exp(-(r² + R²) / 2σ²) I0(rR / σ²) / (2πσ²)`` (I0 the modified Bessel
    function), and ``rings`` is the equal mixture of four of them.
    """

    name = "rings"
    config_cls = RingsConfig
    entropy = 2.6218
    RADII = (3.0, 2.25, 1.5, 0.75)
    STD = 0.08

    num_classes = 4

    def _construct(self, draws, n):
        xp = draws.xp
        idx = draws.integers(4, n)
        radius = xp.asarray(self.RADII)[idx]
        angle = draws.random(n) * (2.0 * np.pi)
        ring = radius[:, None] * xp.stack([xp.cos(angle), xp.sin(angle)], axis=1)
        return ring + draws.normal(self.STD, (n, 2)), idx

    def class_log_prob(self, x):
        x = _points(x)
        r = np.sqrt(np.sum(x**2, axis=-1))[..., None]
        radii = np.asarray(self.RADII)
        var = self.STD**2
        return -0.5 * (r - radii) ** 2 / var + _log_i0e(r * radii / var) - math.log(var) - _LOG_2PI

    def log_prob(self, x):
        return _logsumexp(self.class_log_prob(x) - math.log(len(self.RADII)), axis=-1)


class Moons(ToyDataset):
    """Two interleaving half circles (FFJORD ``moons``).

    scikit-learn's ``make_moons(noise=0.1)`` scaled by 2 and shifted by
    (-1, -0.2): noise std 0.2 in the final coordinates. No closed-form density;
    :meth:`class_log_prob` integrates the Gaussian noise over the half circle's
    angle numerically (128-point Gauss-Legendre quadrature; on held-out points
    it agrees with 1,024 points to 1e-12 in log-density).
    """

    name = "moons"
    config_cls = MoonsConfig
    entropy = 2.3911
    num_classes = 2
    NOISE = 0.2
    QUADRATURE_NODES = 128

    @staticmethod
    def _arc(t: np.ndarray, outer: np.ndarray, xp: Any = np) -> np.ndarray:
        x = xp.where(outer, xp.cos(t), 1.0 - xp.cos(t))
        y = xp.where(outer, xp.sin(t), 0.5 - xp.sin(t))
        return xp.stack([x, y], axis=-1)

    def _construct(self, draws, n):
        xp = draws.xp
        t = draws.random(n) * np.pi
        outer = draws.random(n) < 0.5
        pts = self._arc(t, outer, xp) + draws.normal(0.1, (n, 2))
        return 2.0 * pts + xp.asarray([-1.0, -0.2]), xp.where(outer, 0, 1)

    def class_log_prob(self, x, *, chunk: int = 4096):
        x = _points(x)
        flat = x.reshape(-1, 2)
        m = self.QUADRATURE_NODES
        nodes, weights = np.polynomial.legendre.leggauss(m)
        t = 0.5 * np.pi * (nodes + 1.0)
        log_w = np.log(0.5 * weights)  # the mean over t ~ U[0, pi]: weights on [-1, 1] sum to 2
        var = self.NOISE**2
        out = np.empty((len(flat), 2))
        for label, outer in enumerate((True, False)):
            centres = 2.0 * self._arc(t, np.full(m, outer)) + np.array([-1.0, -0.2])
            for start in range(0, len(flat), chunk):
                part = flat[start : start + chunk]
                sq = np.sum((part[:, None, :] - centres[None]) ** 2, axis=-1)
                comp = -0.5 * sq / var - math.log(var) - _LOG_2PI + log_w
                out[start : start + chunk, label] = _logsumexp(comp, axis=-1)
        return out.reshape(*x.shape[:-1], 2)


class Pinwheel(ToyDataset):
    """Five twisted arms (FFJORD ``pinwheel``).

    Features ``(1 + 0.3 ε₁, 0.1 ε₂)`` rotated by ``2πk/5 + 0.25 exp(f₀)`` for a
    uniform arm ``k``, then doubled. No closed-form density. About 3e-4 of the
    mass lies outside ``bounds`` (arm tips beyond radius 4).
    """

    name = "pinwheel"
    config_cls = PinwheelConfig
    entropy = 2.3187
    RADIAL_STD = 0.3
    TANGENTIAL_STD = 0.1
    NUM_ARMS = 5
    RATE = 0.25

    num_classes = NUM_ARMS

    def _construct(self, draws, n):
        xp = draws.xp
        arm = draws.integers(self.NUM_ARMS, n)
        f0 = 1.0 + self.RADIAL_STD * draws.standard_normal(n)
        f1 = self.TANGENTIAL_STD * draws.standard_normal(n)
        angle = 2.0 * np.pi * arm / self.NUM_ARMS + self.RATE * xp.exp(f0)
        c, s = xp.cos(angle), xp.sin(angle)
        return 2.0 * xp.stack([f0 * c + f1 * s, -f0 * s + f1 * c], axis=1), arm


# -- specs (entry points name these; summaries are read without importing) -----

eight_gaussians_spec = ComponentSpec(
    kind="dataset",
    name="8gaussians",
    config=EightGaussiansConfig,
    build=EightGaussians,
    summary="2-D toy: 8 Gaussians on a circle (FFJORD); exact log-density, entropy 2.8327",
)
two_spirals_spec = ComponentSpec(
    kind="dataset",
    name="2spirals",
    config=TwoSpiralsConfig,
    build=TwoSpirals,
    summary="2-D toy: two interleaved spirals (FFJORD); entropy 2.6435",
)
checkerboard_spec = ComponentSpec(
    kind="dataset",
    name="checkerboard",
    config=CheckerboardConfig,
    build=Checkerboard,
    summary="2-D toy: uniform on 8 squares (FFJORD); exact log-density, entropy ln 32",
)
rings_spec = ComponentSpec(
    kind="dataset",
    name="rings",
    config=RingsConfig,
    build=Rings,
    summary="2-D toy: four noisy concentric rings (FFJORD); exact log-density, entropy 2.6218",
)
moons_spec = ComponentSpec(
    kind="dataset",
    name="moons",
    config=MoonsConfig,
    build=Moons,
    summary="2-D toy: two interleaving half circles (FFJORD); entropy 2.3911",
)
pinwheel_spec = ComponentSpec(
    kind="dataset",
    name="pinwheel",
    config=PinwheelConfig,
    build=Pinwheel,
    summary="2-D toy: five twisted arms (FFJORD); entropy 2.3187",
)
