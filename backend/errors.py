"""The base class of errors caused by the user's input (files, settings, checkpoints), not by a bug, and the one
place that turns them into a command's exit code.

The CLI prints them as one line and exits with code 2; the service sends them as an ``error`` message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input, explained in plain words by the message."""


class SettingsError(UserError, ValueError):
    """Impossible settings (zero steps, an angle out of range, ...)."""


def run_command(program: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code, with the errors a user can act on as one line on stderr: bad input -> 2, Ctrl-C ->
    130, out of GPU memory -> 1. Anything else is a bug and raises with its traceback."""
    try:
        return run()
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        torch = sys.modules.get("torch")  # only a run that imported torch can run out of GPU memory
        if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
            print(f"{program}: error: out of GPU memory (try --dtype float16, a smaller batch or resolution, or "
                  "another GPU)", file=sys.stderr)
            return 1
        raise
