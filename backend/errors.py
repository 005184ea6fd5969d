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

from blender_addon.core.atomic_files import write_problem


class UserError(Exception):
    """Bad input, explained in plain words by the message."""


class SettingsError(UserError, ValueError):
    """Impossible settings (zero steps, an angle out of range, ...)."""


def check_writable(path: str | Path, what: str, folder: bool = False) -> Path:
    """Before any work: that a command can write ``path`` (a file, or with ``folder`` a folder it writes into),
    its missing folders included (``atomic_files.write_problem``: nothing is left behind); a UserError naming
    ``what`` (the option, e.g. "--out") and the reason otherwise."""
    problem = write_problem(path, folder=folder)
    if problem is not None:
        raise UserError(f"{what} {Path(path).expanduser()}: {problem}")
    return Path(path).expanduser()


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
