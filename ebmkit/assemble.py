"""``assemble``: chosen components in, a ready :class:`~ebmkit.model.EBM` out."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flax import nnx

from ebmkit.components import build_dataset, data_context
from ebmkit.config import Config, load_config
from ebmkit.model import EBM

__all__ = ["assemble"]


def assemble(
    config_or_mapping: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    /,
    *,
    rngs: nnx.Rngs | None = None,
    event_shape: tuple[int, ...] | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    **components: Any,
) -> EBM:
    """Wire components into an :class:`EBM`.

    Everything goes through the one config converter, so a typo anywhere gives
    the same :class:`~ebmkit.ConfigError` as a bad config file.

    Args:
        config_or_mapping: a :class:`Config`, a mapping, a TOML/JSON path, or
            ``None`` for the default assembly.
        rngs: parameter RNGs (default: ``nnx.Rngs(config.train.seed)``).
        event_shape: the shape of one sample; default: the data set's.
        overrides: ``"a.b=c"`` strings applied last.
        **components: ``energy=``, ``sampler=``, ``loss=``, ``buffer=``,
            ``dataset=``, ``train=`` as names, tables or config objects.

    Example:
        >>> model = assemble(energy={"name": "mlp", "hidden_dims": [64, 64]}, sampler="hmc")
    """
    config = load_config(config_or_mapping, overrides=overrides, **components)
    if event_shape is None:
        return EBM(config, rngs=rngs, data=data_context(build_dataset(config.dataset)))
    return EBM(config, rngs=rngs, event_shape=event_shape)
