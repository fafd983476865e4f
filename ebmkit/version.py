"""The installed version of ebmkit (``ebmkit.__version__``)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _metadata_version

__all__ = ["__version__"]

try:
    __version__ = _metadata_version("ebmkit-jax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
