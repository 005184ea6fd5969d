"""Waits are conditions with a deadline, never bare sleeps.

Deadlines are generous on purpose: the suite must pass on a 2-core machine with a load average of 10-18 from other
work (a tiny-model job that takes 5 s on a quiet machine can take a minute there). A condition that holds returns at
once, so a generous deadline costs nothing when things go well; it only bounds how long a real hang takes to fail.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.05


def wait_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str] = "the condition",
               poll: float = POLL_SECONDS) -> T:
    """Calls ``condition`` until it returns something truthy (returned), or raises TimeoutError after ``timeout``
    seconds, naming ``what`` (a string, or a function giving the state to report)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"waited {timeout:.0f} s for {described}")
        time.sleep(poll)
