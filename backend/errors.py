"""The base class of errors caused by the user's input (files, settings, checkpoints), not by a bug.

The CLI prints them as one line and exits with code 2; the service sends them as an ``error`` message.
"""


class UserError(Exception):
    """Bad input, explained in plain words by the message."""


class SettingsError(UserError, ValueError):
    """Impossible settings (zero steps, an angle out of range, ...)."""
