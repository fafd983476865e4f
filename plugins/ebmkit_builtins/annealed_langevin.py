"""Annealed Langevin dynamics: Langevin on ``E(x) / T`` with ``T`` lowered over the chain.

Step ``k`` of a ``K``-step chain runs the Langevin update of
:mod:`ebmkit_builtins.langevin` at temperature ``T_k``::

    x' = clamp(x - step_size * clip(grad E(x)) / T_k + noise_scale * xi)

High temperatures flatten the landscape so chains cross between modes early;
the chain ends at ``final_temperature`` (1 samples ``exp(-E)`` itself). The
schedule goes from ``T_0 = initial_temperature`` to
``T_{K-1} = final_temperature``:

* ``geometric``: ``T_k = T_0 * (T_{K-1} / T_0) ** (k / (K - 1))``
* ``linear``:    ``T_k = T_0 + (T_{K-1} - T_0) * k / (K - 1)``

(a one-step chain runs at ``final_temperature``). The sampler exposes it as
``schedule(step_index, num_steps) -> {"temperature": T}``, which
:func:`ebmkit.sampling.run_chain` evaluates inside its scan; ``temperature``
is also an ordinary tunable (default ``final_temperature``) for callers that
step the kernel themselves. Energies in the state and info are untempered.
"""

from __future__ import annotations

import attrs
import jax.numpy as jnp

from ebmkit.config.base import (
    SamplerConfig,
    config_class,
    non_negative,
    one_of,
    optional,
    positive,
)
from ebmkit.registry import ComponentSpec
from ebmkit.types import Array
from ebmkit_builtins.langevin import (
    DEFAULT_PRNG,
    LangevinInfo,
    LangevinSampler,
    LangevinState,
    as_box,
    box,
    build_kernel,
    init,
    positive_int,
    resolve_prng,
)

__all__ = [
    "AnnealedLangevinConfig",
    "AnnealedLangevinSampler",
    "LangevinState",
    "LangevinInfo",
    "init",
    "build_kernel",
    "temperature_schedule",
    "spec",
]

SCHEDULES = ("geometric", "linear")


@config_class
class AnnealedLangevinConfig(SamplerConfig):
    """Annealed Langevin dynamics.

    Attributes:
        num_steps: K, steps per chain (the schedule spans them).
        step_size: drift coefficient (before division by the temperature).
        noise_scale: noise std; ``None`` means ``sqrt(2 * step_size)``.
        initial_temperature: temperature of the first step.
        final_temperature: temperature of the last step.
        schedule: ``"geometric"`` or ``"linear"`` interpolation between them.
        grad_clip: elementwise clip of ``grad E`` (before tempering), or ``None``.
        clamp: ``(low, high)`` box for every sample, or ``None``.
    """

    num_steps: int = attrs.field(default=20, validator=positive_int)
    step_size: float = attrs.field(default=0.01, validator=positive)
    noise_scale: float | None = attrs.field(default=None, validator=optional(non_negative))
    initial_temperature: float = attrs.field(default=10.0, validator=positive)
    final_temperature: float = attrs.field(default=1.0, validator=positive)
    schedule: str = attrs.field(default="geometric", validator=one_of(SCHEDULES))
    grad_clip: float | None = attrs.field(default=None, validator=optional(positive))
    clamp: tuple[float, float] | None = attrs.field(default=None, converter=as_box, validator=box)


def temperature_schedule(
    step_index: int | Array, num_steps: int, initial: float, final: float, kind: str = "geometric"
) -> Array:
    """``T`` at ``step_index`` of a ``num_steps`` chain (``initial`` at 0, ``final`` at the end).

    ``step_index`` may be traced; ``num_steps`` is static.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if num_steps <= 1:
        return jnp.asarray(final, jnp.float32)
    frac = jnp.asarray(step_index, jnp.float32) / float(num_steps - 1)
    if kind == "geometric":
        temperature = initial * (final / initial) ** frac
    else:
        temperature = initial + (final - initial) * frac
    # Exact endpoint, so a chain always ends at the configured temperature.
    return jnp.where(frac >= 1.0, jnp.float32(final), temperature)


class AnnealedLangevinSampler(LangevinSampler):
    """Annealed Langevin bound to an :class:`AnnealedLangevinConfig`.

    Attributes:
        config: the config it was built from.
        num_steps: K from the config.
        tunables: ``{"step_size", "noise_scale", "temperature"}`` defaults;
            ``temperature`` defaults to ``final_temperature`` and is replaced
            by :meth:`schedule` inside :func:`ebmkit.sampling.run_chain`.
    """

    def __init__(self, config: AnnealedLangevinConfig):  # noqa: D107 - same fields as Langevin's
        self.config = config
        self.num_steps = config.num_steps
        self.tunables: dict[str, float | None] = {
            "step_size": config.step_size,
            "noise_scale": config.noise_scale,
            "temperature": config.final_temperature,
        }
        self._clamp = config.clamp
        self.prng = resolve_prng(DEFAULT_PRNG)
        self._kernel = build_kernel(grad_clip=config.grad_clip, clamp=config.clamp, prng=self.prng)

    def schedule(self, step_index: int | Array, num_steps: int) -> dict[str, Array]:
        """``{"temperature": T_k}`` for step ``step_index`` of a ``num_steps`` chain."""
        c = self.config
        return {
            "temperature": temperature_schedule(
                step_index, num_steps, c.initial_temperature, c.final_temperature, c.schedule
            )
        }


spec = ComponentSpec(
    kind="sampler",
    name="annealed_langevin",
    config=AnnealedLangevinConfig,
    build=AnnealedLangevinSampler,
    summary="Langevin dynamics on E/T with a geometric or linear temperature schedule",
)
