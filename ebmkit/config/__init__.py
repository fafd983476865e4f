"""Configuration: frozen attrs classes, one cattrs converter, TOML/JSON io.

* :mod:`ebmkit.config.base`: :func:`config_class` and the config base of each kind.
* :mod:`ebmkit.config.validators`: field validators for built-ins and plugins.
* :mod:`ebmkit.config.converter`: the one converter every config goes through.
* :mod:`ebmkit.config.schema`: the run's :class:`Config`.
* :mod:`ebmkit.config.io`: files, overrides and dumps.
"""

from ebmkit.config.base import (
    BufferConfig,
    ComponentConfig,
    ConfigBase,
    DatasetConfig,
    EnergyConfig,
    LossConfig,
    SamplerConfig,
    config_class,
)
from ebmkit.config.converter import (
    AUTO,
    NONE,
    component_field,
    component_name,
    converter,
    structure,
    unstructure,
)
from ebmkit.config.io import (
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
    read_config_file,
)
from ebmkit.config.schema import (
    DEFAULT_COMPONENTS,
    BaseMeasureConfig,
    Config,
    DistributedConfig,
    TrainConfig,
)
from ebmkit.config.validators import (
    as_tuple,
    box,
    finite,
    in_range,
    non_negative,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
    positive_ints,
    probability,
)

__all__ = [
    "AUTO",
    "NONE",
    "as_tuple",
    "BaseMeasureConfig",
    "box",
    "BufferConfig",
    "ComponentConfig",
    "Config",
    "ConfigBase",
    "DEFAULT_COMPONENTS",
    "DatasetConfig",
    "DistributedConfig",
    "EnergyConfig",
    "LossConfig",
    "SamplerConfig",
    "TrainConfig",
    "apply_overrides",
    "component_field",
    "component_name",
    "config_class",
    "converter",
    "dump_config",
    "finite",
    "in_range",
    "load_config",
    "non_negative",
    "non_negative_int",
    "one_of",
    "optional",
    "parse_override",
    "positive",
    "positive_int",
    "positive_ints",
    "probability",
    "read_config_file",
    "structure",
    "unstructure",
]
