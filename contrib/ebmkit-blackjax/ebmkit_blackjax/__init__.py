"""ebmkit-blackjax: BlackJAX's MCMC kernels as ebmkit samplers.

``blackjax_mala``, ``blackjax_hmc``, ``blackjax_nuts`` and ``blackjax_mclmc``.
Nothing here is imported until a config selects one of them: ebmkit finds them
through the ``ebmkit.samplers`` entry points in this distribution's metadata.
"""

__version__ = "0.1.0"
