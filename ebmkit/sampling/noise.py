"""Fast, exact Gaussian and uniform draws for samplers and buffers.

The Gaussian noise of a Langevin step (or an HMC momentum) is a large share of
a step on CPU: about 40 % of a 784-d MLP step with JAX's default Threefry-2x32
bits, which XLA emits as a loop over rounds. :func:`noise_key` re-types a key
as a Philox-4x32-10 key (the same two words, no extra work); drawing with
``jax.random.normal`` on it uses the same exact inverse-CDF transform, fed by
Random123's Philox bits, which XLA fuses into one loop and generates about
twice as fast on CPU. Draws of fewer than :data:`AUTO_MIN_SIZE` numbers (a 2-d
toy batch) keep the key's own generator, whose fixed cost is lower there; the
choice depends only on the static shape. docs/benchmarks.md has the figures.

Every sampler plugin may use these; a config field ``prng`` validated with
``one_of(PRNGS)`` exposes the choice to users.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from ebmkit.types import PRNGKey

__all__ = ["PRNGS", "DEFAULT_PRNG", "AUTO_MIN_SIZE", "noise_key", "resolve_prng"]

#: ``prng`` settings: ``"auto"``, ``"key"`` (the key's own implementation) or
#: a JAX implementation name. ``philox2x32`` is left out on purpose: its key is
#: 32 bits, so a long run would draw the same noise twice (birthday bound).
PRNGS = ("auto", "key", "philox4x32", "threefry2x32", "threefry4x32", "rbg", "unsafe_rbg")
#: ``"auto"``: Philox-4x32-10 (Crush-resistant, Salmon et al., SC 2011; a 64-bit
#: key like JAX's default) for draws of at least :data:`AUTO_MIN_SIZE` numbers,
#: where its bits are the cheapest exact choice on CPU; the key's own
#: implementation below that, where Threefry's smaller fixed cost wins.
DEFAULT_PRNG = "auto"
#: The draw size (numbers per call) from which ``"auto"`` uses Philox-4x32.
AUTO_MIN_SIZE = 1024


def _impl_name(rng_key: PRNGKey) -> str:
    impl = jax.random.key_impl(rng_key)
    return impl if isinstance(impl, str) else str(getattr(impl, "name", impl))


@functools.cache
def _key_shape(impl: str) -> tuple[int, ...] | None:
    """Shape of the key data of ``impl``, or ``None`` if this JAX lacks it."""
    try:
        return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)
    except (ValueError, TypeError, KeyError):
        return None


def resolve_prng(prng: str, *, who: str = "sampler") -> str:
    """``prng``, or ``"key"`` (with a warning) when this JAX does not provide it.

    ``"auto"`` needs ``philox4x32`` and quietly means ``"key"`` without it.
    """
    if prng == "auto":
        return prng if _key_shape("philox4x32") is not None else "key"
    if prng != "key" and _key_shape(prng) is None:
        warnings.warn(
            f"{who}: this JAX ({jax.__version__}) has no PRNG implementation {prng!r}; "
            "the noise uses the key's own implementation (prng = \"key\")",
            RuntimeWarning,
            stacklevel=3,
        )
        return "key"
    return prng


def noise_key(rng_key: PRNGKey, prng: str = DEFAULT_PRNG, size: int | None = None) -> PRNGKey:
    """``rng_key`` as a key of the implementation ``prng`` (``"key"``: unchanged).

    ``"auto"`` stands for ``"philox4x32"`` when ``size`` (the numbers to draw)
    is at least :data:`AUTO_MIN_SIZE`, else for ``"key"``.

    When the key data has the shape the new implementation wants (Threefry-2x32
    and Philox-4x32 both use two words), the same words are re-typed: free, and
    sound, since Philox (like Threefry) is a keyed bijection meant to take any
    key, sequential ones included (Salmon et al., SC 2011). Otherwise the new
    key's data is drawn from ``rng_key``. Legacy ``uint32`` keys count as JAX's
    default implementation.
    """
    if prng == "auto":
        prng = "philox4x32" if size is not None and size >= AUTO_MIN_SIZE else "key"
    if prng == "key":
        return rng_key
    if not jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.wrap_key_data(rng_key)
    if _impl_name(rng_key) == prng:
        return rng_key
    shape = _key_shape(prng)
    data = jax.random.key_data(rng_key)
    if data.shape != shape or data.dtype != jnp.uint32:
        data = jax.random.bits(rng_key, shape, jnp.uint32)
    return jax.random.wrap_key_data(data, impl=prng)
