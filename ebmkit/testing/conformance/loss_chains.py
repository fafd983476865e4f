"""Known-answer checks of a loss that runs chains: how its chains are run.

No gradient flows through the MCMC chains, and the chains run on
``ctx.sample_energy_fn``, not on the trainable energy. The loss sees the
reference sampler through a :class:`_ChainProbe`, which can stop the gradient
of everything the sampler returns and tells when a chain is running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ebmkit.testing.conformance.recorder import _Recorder, _require, _rounded

# Names of the known-answer checks, as reports list them.
NO_CHAIN_GRADIENT = "no gradient flows through the MCMC chains"
CHAINS_ON_SAMPLE_ENERGY = "chains run on ctx.sample_energy_fn, not the trainable energy_fn"


def _detach(tree: Any, flag: Any) -> Any:
    """Where ``flag`` (a bool, possibly traced), ``stop_gradient`` every
    floating leaf; keys, ints and bools pass unchanged.

    ``where(flag, stop_gradient(a), a)`` has the value of ``a`` either way and
    the gradient of ``a`` only where ``flag`` is false, so one compiled program
    serves both settings.
    """

    def leaf(a: Any) -> Any:
        dtype = getattr(a, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
            return jnp.where(flag, jax.lax.stop_gradient(a), a)
        return a

    return jax.tree.map(leaf, tree)


class _ChainProbe:
    """The sampler a loss sees in the loss checks.

    Delegates everything to the real sampler (``tunables``, ``num_steps``,
    ``schedule``, adaptation), and:

    * keeps ``depth > 0`` while its ``init`` or ``kernel`` runs (or is traced),
      so an instrumented energy can tell that it is evaluated inside a chain;
    * where ``detach`` is true, stops the gradient of everything ``init`` and
      ``kernel`` return. Forward values are unchanged, so the loss's gradient
      changes only if some of it flowed through the chains.
    """

    def __init__(self, sampler: Any):
        self._sampler = sampler
        self.detach: Any = False
        self.depth = 0

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this class lacks; ``_sampler`` is set
        # first in __init__, so this never recurses.
        return getattr(self.__dict__["_sampler"], name)

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def init(self, position: Any, energy_fn: Any) -> Any:
        with self._inside():
            state = self._sampler.init(position, energy_fn)
        return _detach(state, self.detach)

    def kernel(self, rng_key: Any, state: Any, energy_fn: Any, **tunables: Any) -> Any:
        with self._inside():
            out = self._sampler.kernel(rng_key, state, energy_fn, **tunables)
        return _detach(out, self.detach)


def _paired_leaves(a: Any, b: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(path, leaf of a, leaf of b)`` over two ``(energy params, loss params)`` gradients."""
    flat_a, _ = jax.tree_util.tree_flatten_with_path(a)
    flat_b = jax.tree.leaves(b)
    owners = {"[0]": "energy parameter ", "[1]": "loss parameter "}
    for (path, leaf_a), leaf_b in zip(flat_a, flat_b, strict=True):
        name = jax.tree_util.keystr(path)
        for prefix, owner in owners.items():
            if name.startswith(prefix):
                name = owner + (name[len(prefix):] or "value")
        yield name, np.asarray(leaf_a), np.asarray(leaf_b)


def _chain_checks(
    value_and_grad: Callable[..., Any],
    trainable: Any,
    args: tuple[Any, ...],
    grads: Any,
    in_chain: list[bool],
    rec: _Recorder,
) -> None:
    """The loss's chains carry no gradient and run on ``ctx.sample_energy_fn``.

    ``value_and_grad`` is the loss checks' compiled objective, whose second
    argument detaches everything the sampler returns; ``grads`` is its gradient
    with nothing detached; ``in_chain`` holds, per call of the trainable energy
    so far, whether a chain was running.
    """
    with rec.check(NO_CHAIN_GRADIENT):
        # The same call with every output of the sampler detached: values
        # are identical (same keys, same chains), so any change of the
        # gradient is gradient that reached the parameters through the
        # chains. Both runs are one compiled program: differences are
        # gradient paths, not round-off of different programs.
        _, cut = value_and_grad(trainable, True, *args)
        for path, a, b in _paired_leaves(grads, cut):
            scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
            _require(
                np.allclose(a, b, rtol=1e-4, atol=1e-6 + 1e-4 * scale),
                f"the gradient w.r.t. {path} changes from {_rounded(a, 5)} to "
                f"{_rounded(b, 5)} when gradients through the sampler are stopped: "
                "it flows through the chains. Run them on ctx.sample_energy_fn and "
                "jax.lax.stop_gradient the negatives",
            )
    with rec.check(CHAINS_ON_SAMPLE_ENERGY):
        # Recorded while the calls above ran (or traced): was the trainable
        # energy evaluated while the sampler's init or kernel was running?
        _require(
            not any(in_chain),
            "the sampler evaluated the trainable energy_fn: chains must run on "
            "ctx.sample_energy_fn (parameters detached, eval mode)",
        )
