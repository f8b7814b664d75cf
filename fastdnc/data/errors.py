"""The one error type of the data loaders, and the file check they share."""

from __future__ import annotations

from pathlib import Path

from ..safe_read import check_regular_file


class DataError(ValueError):
    """A data set is missing, corrupt or asked for wrongly; the message says what and where."""


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file, else :class:`DataError` (a FIFO or a folder is refused
    before anything opens it: opening a FIFO blocks)."""
    try:
        return check_regular_file(path, what)
    except (ValueError, FileNotFoundError) as e:
        raise DataError(str(e)) from None
