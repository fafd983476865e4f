"""Bind a sampler's pure functions to its config: the object ``spec.build`` returns.

A sampler plugin writes, in the BlackJAX shape, an ``init(position,
energy_fn)`` and a kernel ``kernel(rng_key, state, energy_fn, **tunables)``
built from its structural options; :class:`BoundSampler` ties them to the
config's numeric defaults::

    def build(config, ctx):
        return BoundSampler(
            config,
            init=init,
            kernel=build_kernel(config.num_integration_steps),
            tunables={"step_size": config.step_size},
        )

It supplies what every sampler needs and nobody should copy: ``num_steps``
from the config, per-call tunable overrides (``None`` keeps the default, an
unknown name is an error), the optional ``clamp`` projection of chain starts,
and a readable ``repr``. Subclass it for optional capabilities
(:class:`~ebmkit.types.Scheduled`, :class:`~ebmkit.types.Adaptive`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from ebmkit.sampling.chain import tunables_for
from ebmkit.types import Array, EnergyFn, PRNGKey

__all__ = ["BoundSampler"]


class BoundSampler:
    """A sampler's ``init`` and ``kernel`` bound to its config.

    Args:
        config: the sampler's config; ``config.num_steps`` is K unless
            ``num_steps`` is given.
        init: ``init(position, energy_fn) -> state``.
        kernel: ``kernel(rng_key, state, energy_fn, **tunables) -> (state, info)``.
        tunables: the numeric defaults each kernel call starts from.
        num_steps: K, overriding the config's.
        clamp: ``(low, high)``: project chain starts into this box at ``init``
            (default: the config's ``clamp`` field, if it has one).

    Attributes:
        config, num_steps, tunables: as given.
    """

    def __init__(
        self,
        config: Any,
        *,
        init: Callable[[Array, EnergyFn], Any],
        kernel: Callable[..., tuple[Any, Any]],
        tunables: Mapping[str, Any],
        num_steps: int | None = None,
        clamp: tuple[float, float] | None = None,
    ):
        self.config = config
        self.num_steps = int(config.num_steps if num_steps is None else num_steps)
        self.tunables: dict[str, Any] = dict(tunables)
        self._init = init
        self._kernel = kernel
        self.clamp = clamp if clamp is not None else getattr(config, "clamp", None)

    def init(self, position: Array, energy_fn: EnergyFn) -> Any:
        """The chain state at ``position`` (projected into ``clamp`` if set)."""
        if self.clamp is not None:
            position = jnp.clip(position, self.clamp[0], self.clamp[1])
        return self._init(position, energy_fn)

    def kernel(self, rng_key: PRNGKey, state: Any, energy_fn: EnergyFn, **tunables: Any) -> tuple[Any, Any]:
        """One transition of every chain; ``tunables`` override the defaults."""
        return self._kernel(rng_key, state, energy_fn, **tunables_for(self, tunables))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
