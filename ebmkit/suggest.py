""""Did you mean ..." suggestions shared by the registry and the config converter."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates close to ``word``, best first (case-insensitive)."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    # A prefix or substring is a strong hint even when the ratio is low ("lang" -> "langevin").
    for c in candidates:
        if len(word) >= 3 and (c.lower().startswith(word.lower()) or word.lower() in c.lower()):
            if c.lower() not in hits:
                hits.append(c.lower())
    return [lowered[h] for h in hits][:n]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` or ``None`` when nothing is close."""
    hits = close_matches(word, candidates)
    if not hits:
        return None
    return "did you mean " + " or ".join(repr(h) for h in hits) + "?"
