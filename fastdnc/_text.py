"""Wording shared by messages, reports and progress lines."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 outlier"``, ``"3 outliers"`` (``many`` for an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
