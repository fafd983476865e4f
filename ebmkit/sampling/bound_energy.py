"""An energy network called as ``energy_fn``, with the network still reachable.

Samplers receive ``energy_fn(x, y=None) -> E[B]``. Where the caller has the
network itself (the trainer's chains, :meth:`~ebmkit.EBM.generate`), it passes
a :class:`BoundEnergy`, so that a sampler can use what the network offers
beyond ``E(x)`` through an optional protocol (e.g. the block-Gibbs
conditionals of :class:`~ebmkit.types.BlockGibbs`)::

    module = energy_module(energy_fn)
    if isinstance(module, BlockGibbs):
        ...

Any other callable is an energy without a module (``energy_module`` returns
``None``); samplers must work with those too.
"""

from __future__ import annotations

from typing import Any

from ebmkit.types import Array

__all__ = ["BoundEnergy", "energy_module"]


class BoundEnergy:
    """``module`` as ``energy_fn(x, y=None)``; the condition is passed only when given.

    Attributes:
        module: the energy network (an ``nnx.Module`` mapping ``x`` to ``E[B]``).
    """

    __slots__ = ("module",)

    def __init__(self, module: Any):
        self.module = module

    def __call__(self, x: Array, y: Any = None) -> Array:
        return self.module(x) if y is None else self.module(x, y)

    def __repr__(self) -> str:
        return f"BoundEnergy({type(self.module).__name__})"


def energy_module(energy_fn: Any) -> Any | None:
    """The network behind ``energy_fn`` when it is a :class:`BoundEnergy`, else ``None``."""
    return energy_fn.module if isinstance(energy_fn, BoundEnergy) else None
