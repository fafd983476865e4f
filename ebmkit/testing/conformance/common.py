"""What the behaviour checks of every kind share.

The build context the components are built with (continuous data in
``_BOUNDS``), the batch sizes and tolerances of the small-input checks, and
the check that a built object satisfies its kind's protocol.
"""

from __future__ import annotations

from typing import Any

from ebmkit.kinds import get_kind
from ebmkit.testing.conformance.recorder import _Recorder, _require
from ebmkit.types import BuildContext

_BATCH = 4
_CHAINS = 8
_TOL = {"rtol": 1e-4, "atol": 1e-5}
#: The box every check's build context declares (the built-in toy data's).
_BOUNDS = (-4.0, 4.0)
#: The standard deviation of the context's reference distribution
#: ``N(0, _REFERENCE_STD^2 I)``: broad, so that a loss drawing noise from it
#: (NCE) must still learn where the data are.
_REFERENCE_STD = 2.0


def _reference(event_shape: tuple[int, ...]) -> Any:
    import numpy as np

    from ebmkit.data import GaussianReference

    return GaussianReference(np.zeros(event_shape), std=np.full(event_shape, _REFERENCE_STD))


def _context(event_shape: tuple[int, ...] | None = (2,), *, num_classes: int | None = None) -> BuildContext:
    """The build context of the checks: continuous data in ``_BOUNDS`` with a
    broad Gaussian reference distribution."""
    from flax import nnx

    shape = None if event_shape is None else tuple(event_shape)
    return BuildContext(
        event_shape=shape,
        bounds=_BOUNDS,
        reference_factory=None if shape is None else (lambda: _reference(shape)),
        num_classes=num_classes,
        rngs=nnx.Rngs(0),
    )


def _protocol_check(kind: str, obj: Any, rec: _Recorder) -> None:
    """The built object satisfies its kind's protocol (where the kind has one)."""
    protocol = get_kind(kind).protocol
    if protocol is None:
        return
    with rec.check(f"satisfies ebmkit.types.{protocol.__name__}", fatal=True):
        _require(isinstance(obj, protocol), f"{type(obj).__name__} lacks part of {protocol.__name__}: {get_kind(kind).builds}")
