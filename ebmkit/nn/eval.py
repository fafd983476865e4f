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

__all__ = ["eval_view", "graphdefs", "split_energy", "energy_programs"]

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
