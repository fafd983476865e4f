"""Refuse, before allocating, arrays that cannot fit in memory.

A typo such as ``hidden_dims = [100000000, 100000000]`` would otherwise end in
an out-of-memory kill (or a machine that swaps for minutes) instead of a
message that names the setting.
"""

from __future__ import annotations

import os

__all__ = ["available_bytes", "check_fits_in_memory"]


def available_bytes() -> int | None:
    """The machine's physical memory in bytes, or ``None`` where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(num_floats: int, what: str, *, copies: int = 1) -> None:
    """Raise ``ValueError`` when ``copies × num_floats`` float32 values exceed
    the machine's memory.

    Args:
        num_floats: values to allocate.
        what: the setting responsible, for the message (e.g. ``"energy.hidden_dims"``).
        copies: how many arrays of that size the run keeps (parameters and
            optimiser moments: 4 for Adam).
    """
    total = available_bytes()
    need = 4 * int(num_floats) * int(copies)
    if total is not None and need > total:
        raise ValueError(
            f"{what}: needs about {need / 2**30:.1f} GiB ({num_floats:,} float32 values x {copies}) "
            f"but this machine has {total / 2**30:.1f} GiB"
        )
