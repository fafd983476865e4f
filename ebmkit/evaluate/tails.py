"""Does the energy confine its mass in any dimension? A tail check.

In two dimensions ``grid_nll`` integrates the density over the whole plane.
In more dimensions no grid reaches, and annealed importance sampling only sees
the mass its base distribution covers: an energy that stays flat far from the
data has mass there that AIS never visits (its estimate of ``log Z`` is then
far too low, and a likelihood computed from it far too good).

The check walks away from the data: along random directions ``u`` from the
data's mean ``μ`` (scaled per coordinate by the data's spread ``s``), at
radii ``r`` of 3, 10 and 30 spreads. For ``exp(−E)`` to be integrable in
``d`` dimensions, the energy must rise faster than the volume of the shell
grows, ``(d − 1) log r``; the check asks for that plus a margin at every radius
and reports the shortfall. A confined energy — one with a base measure, say —
passes by a wide margin.

For AIS, the base ``N(0, σ² I)`` should cover at least what the model covers:
take ``σ`` of a few data spreads (``ais_log_z(..., base_std=3 * s.max())``),
and run this check first: if the energy is not confined, no base makes the
estimate trustworthy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["tail_check", "RADII", "MARGIN"]

#: Radii, in data spreads, at which the energy is probed.
RADII = (3.0, 10.0, 30.0)
#: Nats the energy must rise beyond the shell-volume growth.
MARGIN = 5.0


def tail_check(energy_fn: Any, dataset: Any, *, num_directions: int = 256, seed: int = 0) -> dict[str, Any]:
    """Probe ``energy_fn`` far from ``dataset``'s data.

    Returns:
        ``{"confined": bool, "rise": {r: nats}, "needed": {r: nats},
        "shortfall": nats}``: the median energy rise over held-out data at
        each radius, what integrability needs there, and the worst shortfall
        (0 when confined).
    """
    held = np.asarray(dataset.held_out(2000), np.float64)
    flat = held.reshape(len(held), -1)
    d = flat.shape[1]
    mean, spread = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    data_energy = float(np.median(np.asarray(energy_fn(held.astype(np.float32)), np.float64)))
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_directions, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rise, needed = {}, {}
    shortfall = 0.0
    for r in RADII:
        x = (mean + r * spread * u * math.sqrt(d)).reshape((num_directions, *held.shape[1:]))
        energies = np.asarray(energy_fn(x.astype(np.float32)), np.float64)
        rise[r] = float(np.median(energies)) - data_energy
        needed[r] = (d - 1) * math.log(r) + MARGIN
        shortfall = max(shortfall, needed[r] - rise[r])
    return {"confined": shortfall <= 0, "rise": rise, "needed": needed, "shortfall": max(shortfall, 0.0)}
