"""Command line: ``fastdnc reproduce | train | spectrum | analyze | bench`` (``fastdnc <command> --help``).

Modules: :mod:`.parser` (arguments), :mod:`.commands` (what each command does), :mod:`.run_folder`
(devices, output folders, run configurations). :func:`main` owns what every command shares: the
run folder is created and locked before the command runs (one process per folder); a failed or
interrupted command removes the files it created (unless the folder holds a checkpoint to resume
from) and the folders it created; a process group is left on every exit; warnings are printed as
one-line notes and errors as one line.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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
    elif isinstance(e, RecursionError):
        text = "the input nests its data too deeply to process"
    else:
        text = f"{type(e).__name__}: {e} (unexpected: rerun with --debug for the traceback, and please report it)"
    return " ".join(text.split())


@contextmanager
def _notes(command: str) -> Iterator[None]:
    """Warnings as one line each on stderr: ``fastdnc COMMAND: note: …``."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"fastdnc {command}: note: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _run_folder(args) -> tuple[Path, str, bool] | None:
    """The folder a command owns while it runs: (path, its flag, whether to create it)."""
    if args.command in ("train", "reproduce", "analyze"):
        return Path(args.out), "--out", True
    if args.command == "spectrum":
        return Path(args.run), "--run", False
    return None


def _doc_folders(args) -> list[Path]:
    from .run_folder import output_folder

    doc = getattr(args, "doc", None)
    if not doc:
        return []
    parent = output_folder(str(Path(doc).parent), "--doc")
    return [p for p in (parent, *parent.parents) if not p.exists()]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .._comm import shutdown
    from .._malloc import reuse_large_allocations
    from .._threads import fixed_threads
    from ..io import recording_created
    from ..run_lock import locked
    from .run_folder import make_folder, output_folder

    reuse_large_allocations()
    made: list[Path] = []
    success = False
    with _notes(args.command), recording_created() as created:
        try:
            made += _doc_folders(args)
            owned = _run_folder(args)
            lock: AbstractContextManager = nullcontext()
            if owned is not None:
                folder, flag, create = owned
                if create:
                    made += make_folder(output_folder(str(folder), flag), flag)
                if folder.is_dir():
                    lock = locked(folder, f"{flag} {folder}", folder=True)
            with lock, fixed_threads(getattr(args, "threads", None) if args.command != "train" else None):
                status = args.func(args)
            success = status == 0
            return status
        except KeyboardInterrupt:
            print(f"\nfastdnc {args.command}: interrupted: {_after_failure(args, created, made)}", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - every failure a user can cause is one line (--debug: the traceback)
            _after_failure(args, created, made)
            if getattr(args, "debug", False):
                raise
            print(f"fastdnc {args.command}: error: {one_line(e)}", file=sys.stderr)
            return 2
        finally:
            shutdown(success)


def _after_failure(args, created: list[Path], made: list[Path]) -> str:
    """Remove what a failed command created unless its folder holds a checkpoint to resume from;
    returns what a rerun will do, in words."""
    from .run_folder import has_checkpoint, remove_created

    owned = _run_folder(args)
    if owned is not None and owned[2] and has_checkpoint(owned[0]):
        return f"rerun the same command to resume from the last checkpoint in {owned[0]}"
    remove_created(created, made)
    if owned is not None and owned[2]:
        return "no checkpoint had been written: the files it created are removed; rerun the command to start again"
    return "nothing was written"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
