"""``classifier``: any registered network with ``K`` outputs read as an energy
over inputs and labels (Grathwohl et al. 2020, "Your classifier is secretly
an energy based model").

A network ``f(x) -> logits[B, K]`` defines the joint energy
``E(x, y) = -f(x)[y]`` and, summing over labels, the marginal energy
``E(x) = -logsumexp_y f(x)[y]``. Then ``p(y | x) = softmax(f(x))[y]``, the
usual classifier, and ``p(x) ∝ exp(-E(x))``, a density over inputs, come from
the same parameters.

Called as ``energy(x)`` it returns ``E(x)``, so every sampler, loss and
evaluator that knows energies works on it unchanged; called as
``energy(x, y)`` with labels ``y[B]`` it returns ``E(x, y)``, the energy of
the class-conditional density ``p(x | y) ∝ exp(-E(x, y))`` that conditional
sampling runs chains on. :meth:`ClassifierEnergy.logits` gives ``f(x)``.

The inner network is built from its own config (``network``, a name or a
table, default ``"mlp"``) with ``out_features = K``, ``K`` the data's number
of classes (or ``num_classes``). Any network whose config has an
``out_features`` field fits (``mlp``, ``cnn``).
"""

from __future__ import annotations

import attrs
import jax
import jax.numpy as jnp
from flax import nnx

from ebmkit.components import build_component
from ebmkit.config import EnergyConfig, component_field, component_name, config_class
from ebmkit.config.validators import optional, positive_int
from ebmkit.errors import ConfigError, ConfigProblem
from ebmkit.nn import ModeViewMixin
from ebmkit.registry import ComponentSpec
from ebmkit.types import BuildContext

__all__ = ["ClassifierEnergyConfig", "ClassifierEnergy", "build", "spec"]


def _not_classifier(_inst, attribute, value) -> None:
    name, _ = component_name(value)
    if name.split(":")[-1] == "classifier":
        raise ValueError(f"{attribute.name}: a classifier cannot wrap another classifier")


@config_class
class ClassifierEnergyConfig(EnergyConfig):
    """A network with ``K`` outputs as a joint energy over inputs and labels.

    Attributes:
        network: the inner network, a registered energy whose config has an
            ``out_features`` field (``"mlp"``, ``"cnn"``), as a name or a table
            with its fields; ``out_features`` is set to the number of classes.
        num_classes: ``K``; ``None`` (default) takes it from the data set.
    """

    network: EnergyConfig = component_field("energy", "mlp", validator=_not_classifier)
    num_classes: int | None = attrs.field(default=None, validator=optional(positive_int))


class ClassifierEnergy(ModeViewMixin, nnx.Module):
    """``E(x) = -logsumexp f(x)``, ``E(x, y) = -f(x)[y]`` over a network ``f``.

    Args:
        network: a module ``x[B, *event] -> logits[B, K]``.
        num_classes: ``K``.
    """

    def __init__(self, network: nnx.Module, num_classes: int):
        self.network = network
        self.num_classes = int(num_classes)

    def logits(self, x: jax.Array) -> jax.Array:
        """``f(x)``, float32 ``[B, K]``: ``log p(y | x)`` up to a per-row constant."""
        out = self.network(x)
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise ValueError(
                f"classifier: the network returned shape {tuple(out.shape)}, expected "
                f"[{x.shape[0]}, {self.num_classes}]"
            )
        return out.astype(jnp.float32)

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        logits = self.logits(x)
        if y is None:
            return -jax.nn.logsumexp(logits, axis=-1)
        y = jnp.asarray(y)
        if y.shape != (x.shape[0],) or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"classifier: the condition must be integer labels of shape ({x.shape[0]},), "
                f"one per row of x; got {y.dtype}{tuple(y.shape)}"
            )
        return -jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=1)[:, 0]


def build(config: ClassifierEnergyConfig, ctx: BuildContext) -> ClassifierEnergy:
    """Build the inner network with ``out_features = K`` and wrap it.

    Raises:
        ConfigError: the number of classes is unknown, or the inner network
            has no ``out_features`` field.
    """
    k = config.num_classes if config.num_classes is not None else ctx.num_classes
    if k is None:
        where = f"data set {ctx.dataset_name!r}" if ctx.dataset_name else "the data"
        raise ConfigError([ConfigProblem(
            path="energy.num_classes",
            message=f"the classifier energy needs a number of classes, but {where} has no labels",
            suggestion="choose a labelled data set (digits, the 2-D toys), or set energy.num_classes",
        )])
    if k < 2:
        raise ConfigError([ConfigProblem(
            path="energy.num_classes", message=f"a classifier needs at least 2 classes, got {k}",
            suggestion="use a labelled data set with two or more classes",
        )])
    name, _ = component_name(config.network)
    if "out_features" not in attrs.fields_dict(type(config.network)):
        raise ConfigError([ConfigProblem(
            path="energy.network",
            message=f"network {name!r} has no out_features field, so it cannot give one output per class",
            suggestion="use 'mlp' or 'cnn' (or a network whose config has out_features)",
        )])
    inner = build_component(attrs.evolve(config.network, out_features=int(k)), ctx)
    return ClassifierEnergy(inner, int(k))


spec = ComponentSpec(
    kind="energy",
    name="classifier",
    config=ClassifierEnergyConfig,
    build=build,
    summary="A K-output network as a joint energy: E(x) = -logsumexp f(x), E(x, y) = -f(x)[y] (JEM)",
)
