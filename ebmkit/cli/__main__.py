"""``python -m ebmkit.cli``: the same as the ``ebmkit`` command."""

from ebmkit.cli import main

main()
