"""Command line: ``fastdnc reproduce | train | spectrum | bench`` (``fastdnc <command> --help``).

Modules: :mod:`.parser` (arguments), :mod:`.commands` (what each command does), :mod:`.run_folder`
(devices, output folders, run configurations).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .parser import build_parser

__all__ = ["build_parser", "main", "one_line"]


def one_line(e: BaseException) -> str:
    """One line for an error a user can cause; unexpected ones keep their type and ask for --debug."""
    from .._comm import DistributedError
    from ..kernels.dispatch import BackendUnavailable

    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    elif isinstance(e, MemoryError):
        text = str(e) or "out of memory"
        if not str(e):
            text += " (use a smaller problem, float32, or a machine with more memory)"
    elif isinstance(e, (ValueError, TypeError, OSError, FloatingPointError, DistributedError, BackendUnavailable)):
        text = str(e) or type(e).__name__
    else:
        text = f"{type(e).__name__}: {e} (unexpected: rerun with --debug for the traceback, and please report it)"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    new_folders = [p for folder in _output_folders(args) for p in (folder, *folder.parents) if not p.exists()]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure a user can cause is one line (--debug: the traceback)
        _remove_if_empty(new_folders)
        if getattr(args, "debug", False):
            raise
        print(f"fastdnc {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


def _output_folders(args) -> list[Path]:
    """The folders a command writes into (``--out``, the parent of ``--doc``)."""
    paths = [getattr(args, "out", None), getattr(args, "doc", None) and Path(args.doc).parent]
    return [Path(p) for p in paths if p]


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (and missing parents) that this failed command created and left empty,
    deepest first; never one with a file."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
