"""The base class of errors caused by the user's input (files, settings, checkpoints), not by a bug, and the one
place that turns them into a command's exit code.

The CLI prints them as one line and exits with code 2; the service sends them as an ``error`` message. A command
checks where it will write (``check_writable``) before its work, so an output folder it cannot write says so at
once, not as a traceback after minutes of work; the file system failing later (a full disk) is one line too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from blender_addon.core.atomic_files import temporary_path


class UserError(Exception):
    """Bad input, explained in plain words by the message."""


class SettingsError(UserError, ValueError):
    """Impossible settings (zero steps, an angle out of range, ...)."""


def check_writable(path: str | Path, what: str, folder: bool = False) -> Path:
    """Before any work: that a command can write ``path`` (a file, or with ``folder`` a folder it writes into),
    its missing folders included; a UserError naming ``what`` (the option, e.g. "--out") and the reason otherwise.

    It writes and removes a probe file there, and removes the folders it made for it again (the command makes them
    when it writes), so a check that passes leaves nothing behind."""
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise UserError(f"{what} {path}: is a folder; give a file name")
    target = path if folder else path.parent
    missing = [p for p in (target, *target.parents) if not p.exists()]  # the deepest first
    made: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
        probe = temporary_path(target / ".write-check")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        raise UserError(f"{what} {path}: cannot be written there ({error.strerror or error})") from None
    finally:
        for directory in reversed(made):
            try:
                directory.rmdir()
            except OSError:  # something else wrote there meanwhile: it stays
                pass
    return path


def run_command(program: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code, with the errors a user can act on as one line on stderr: bad input -> 2, Ctrl-C ->
    130, out of GPU memory or a file system that fails (full, read-only, gone: ``OSError``) -> 1. Anything else is
    a bug and raises with its traceback."""
    try:
        return run()
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"{program}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except Exception as error:
        torch = sys.modules.get("torch")  # only a run that imported torch can run out of GPU memory
        if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
            print(f"{program}: error: out of GPU memory (try --dtype float16, a smaller batch or resolution, or "
                  "another GPU)", file=sys.stderr)
            return 1
        raise
