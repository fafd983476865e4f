"""The one eval-mode contract of energies, and compiled energy evaluation.

An energy network is an ``nnx.Module``. Sampling, evaluation and plots use it
in **eval mode**: dropout off, statistics (e.g. spectral-norm power-iteration
vectors) frozen, so the sampled density is deterministic. Eval mode is
``nnx.view(module, deterministic=True, use_running_average=True)`` — a view
sharing the module's variables — and a network opts in by having a module whose
``set_view`` accepts those keys (:class:`ebmkit.nn.ModeViewMixin` does this for
any network; ``nnx.Dropout`` and ``nnx.BatchNorm`` accept them natively).
A network that has no mode is its own eval view.

Training calls the module as it is (train mode).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from ebmkit.sampling.chain import per_row_energy_and_grad

__all__ = ["eval_view", "graphdefs", "split_energy", "energy_programs", "GraphSnapshot"]

#: The keys of eval mode, as ``nnx.view`` takes them.
EVAL_MODE = (("deterministic", True), ("update_stats", False), ("use_running_average", True))

_EVAL_GRAPHDEFS: dict[Any, Any] = {}


def eval_view(module: nnx.Module) -> nnx.Module:
    """``module`` in eval mode, sharing its variables (see the module docstring)."""
    view = module
    for attr, value in EVAL_MODE:
        try:
            view = nnx.view(view, **{attr: value})
        except (ValueError, AttributeError, TypeError):
            pass  # no module of this network takes that key
    return view


def graphdefs(module: nnx.Module) -> tuple[Any, Any]:
    """``(train graphdef, eval graphdef)`` of an energy network.

    ``nnx.view`` walks and copies the module, so the eval graphdef is
    remembered per training graphdef (equal structure, equal eval structure).
    """
    graphdef = nnx.graphdef(module)
    eval_graphdef = _EVAL_GRAPHDEFS.get(graphdef)
    if eval_graphdef is None:
        eval_graphdef = nnx.graphdef(eval_view(module))
        if len(_EVAL_GRAPHDEFS) > 64:
            _EVAL_GRAPHDEFS.clear()
        _EVAL_GRAPHDEFS[graphdef] = eval_graphdef
    return graphdef, eval_graphdef


def split_energy(module: nnx.Module) -> tuple[Any, Any]:
    """``(params, rest)`` as pure nested dicts of arrays (plain pytrees for
    jit, optax and storage): the ``nnx.Param`` variables and everything else."""
    _, params, rest = nnx.split(module, nnx.Param, ...)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


@functools.lru_cache(maxsize=16)
def energy_programs(eval_graphdef: Any) -> tuple[Any, Any]:
    """Compiled ``energy(params, rest, x)`` and ``energy_and_score(params, rest, x)``."""

    def energy(params, rest, x):
        return nnx.merge(eval_graphdef, params, rest)(x)

    def energy_and_score(params, rest, x):
        e, g = per_row_energy_and_grad(lambda y: nnx.merge(eval_graphdef, params, rest)(y), x)
        return e, -g

    return jax.jit(energy), jax.jit(energy_and_score)


_MISSING = object()
_CONTAINERS = (nnx.Variable, nnx.Pytree, list, tuple, dict)


class GraphSnapshot:
    """Everything reachable from a module, by identity, to tell cheaply whether
    it is exactly as it was.

    It records every nnx object's attributes (the objects they hold, not
    copies), every list, tuple and dict among them, and the array inside every
    ``nnx.Variable``. :meth:`matches` is then a walk of identity comparisons:
    assigning any attribute anywhere in the graph (a new submodule, a new
    Variable, a changed setting), ``nnx.update``, an optimiser step or a
    restore (each puts new arrays into the Variables) all make it false.
    What it cannot see is a mutable non-nnx object changed in place inside a
    module (a numpy array attribute edited in place); nnx's own graph
    definitions do not track that either.

    ``nnx.iter_graph`` answers the same question but costs 0.25 ms for a
    small MLP and 2 ms for a CNN per call; :meth:`matches` costs 5 and 45 µs.
    """

    __slots__ = ("root", "records")

    def __init__(self, root: Any):
        self.root = root
        self.records: list[tuple[Any, int, Any]] = []
        self._walk(root, set())

    def _walk(self, obj: Any, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nnx.Variable):
            self.records.append((obj, 0, obj.get_raw_value()))
            return
        if isinstance(obj, (nnx.Pytree, dict)):
            items = tuple((vars(obj) if isinstance(obj, nnx.Pytree) else obj).items())
            self.records.append((obj, 1 if isinstance(obj, nnx.Pytree) else 2, items))
            children = (v for _, v in items)
        elif isinstance(obj, (list, tuple)):
            items = tuple(obj)
            self.records.append((obj, 3, items))
            children = iter(items)
        else:
            return
        for child in children:
            if isinstance(child, _CONTAINERS):
                self._walk(child, seen)

    def matches(self, root: Any) -> bool:
        """Whether ``root`` is the module snapshotted, holding exactly what it held."""
        if root is not self.root:
            return False
        for obj, kind, snap in self.records:
            if kind == 0:
                if obj.get_raw_value() is not snap:
                    return False
            elif kind == 3:
                if len(obj) != len(snap) or any(a is not b for a, b in zip(obj, snap, strict=True)):
                    return False
            else:
                current = vars(obj) if kind == 1 else obj
                if len(current) != len(snap):
                    return False
                for key, value in snap:
                    if current.get(key, _MISSING) is not value:
                        return False
        return True

    def refresh_arrays(self) -> None:
        """Take in the arrays now in the Variables (after writing them oneself)."""
        self.records = [
            (obj, 0, obj.get_raw_value()) if kind == 0 else (obj, kind, snap) for obj, kind, snap in self.records
        ]
