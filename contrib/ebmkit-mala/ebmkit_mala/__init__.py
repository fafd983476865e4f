"""ebmkit-mala: a Metropolis-adjusted Langevin sampler plugin for ebmkit.

Nothing here is imported until a config selects ``sampler = "mala"``: ebmkit
finds the sampler through the ``ebmkit.samplers`` entry point in this
distribution's metadata.
"""

__version__ = "0.2.0"
