"""Training: the pure step, its fusion, the loop, placement, checkpoints.

* :mod:`ebmkit.training.step`: :class:`TrainState`, :func:`make_train_step`,
  :func:`make_loss_context` — one step as one pure function.
* :mod:`ebmkit.training.fusion`: several steps per compiled call.
* :mod:`ebmkit.training.loop`: :class:`Trainer`, the run loop.
* :mod:`ebmkit.training.placement`: one device, or a mesh (:mod:`ebmkit.distributed`).
* :mod:`ebmkit.training.checkpoint`: orbax checkpoints of the whole state.
* :mod:`ebmkit.training.divergence`: when to roll back, and advice.
* :mod:`ebmkit.training.hooks`: the metrics file and progress bar (hook plugins).
* :mod:`ebmkit.training.optim`: optimisers and learning-rate schedules by name.
"""

from ebmkit.errors import CheckpointError, TrainingDiverged
from ebmkit.training.loop import ADVICE, Trainer, TrainResult
from ebmkit.training.placement import Placement, SingleDevice
from ebmkit.training.step import TrainState, make_loss_context, make_train_step

__all__ = [
    "ADVICE",
    "CheckpointError",
    "Placement",
    "SingleDevice",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "make_loss_context",
    "make_train_step",
]
