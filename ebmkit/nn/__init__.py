"""Building blocks for energy networks: shared layers and the eval-mode contract."""

from ebmkit.nn.base_measure import BoxBaseMeasure, GaussianBaseMeasure, data_statistics
from ebmkit.nn.eval import energy_programs, eval_view, graphdefs, split_energy
from ebmkit.nn.layers import (
    ACTIVATIONS,
    ModeViewMixin,
    SpectralNorm,
    TraceSafeDropout,
    check_event_shape,
    check_input,
    check_rngs,
    dense,
    dropout_stream,
)
from ebmkit.nn.memory import check_fits_in_memory

__all__ = [
    "ACTIVATIONS",
    "BoxBaseMeasure",
    "GaussianBaseMeasure",
    "data_statistics",
    "ModeViewMixin",
    "SpectralNorm",
    "TraceSafeDropout",
    "check_event_shape",
    "check_fits_in_memory",
    "check_input",
    "check_rngs",
    "dense",
    "dropout_stream",
    "energy_programs",
    "eval_view",
    "graphdefs",
    "split_energy",
]
