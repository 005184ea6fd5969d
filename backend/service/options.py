"""The service's own settings (``iso3d serve`` flags, generated from this dataclass) and the checks of what a client
names: limits on stored data, inputs and retries that protect the machine the backend runs on."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from backend.settings import check_bounds, setting

MAX_NAME_CHARS = 64


@dataclass
class ServiceOptions:
    """Sizes in GB are 10^9 bytes; times in days and seconds."""

    max_data_gb: float | None = setting(None, min=0.01, max=100_000.0,
                                        help="cap on the data folder; the oldest finished jobs are deleted first")
    keep_days: float | None = setting(None, min=0.0, max=36_500.0,
                                      help="delete finished jobs older than this (running/unfinished ones never)")
    min_free_gb: float = setting(1.0, min=0.0, max=100_000.0, help="refuse new jobs below this much free disk")
    max_input_pixels: int = setting(4096 * 4096, min=256 * 256, max=8192 * 8192,
                                    help="largest input image (width x height, read from the PNG header)")
    stored_input_side: int = setting(1024, min=256, max=8192,
                                     help="inputs are stored downscaled to at most this many pixels a side")
    max_queued: int = setting(64, min=1, max=10_000, help="jobs waiting at most; more are refused (queue_full)")
    max_crashes: int = setting(3, min=1, max=100,
                               help="a job that was running when the service died this often is failed")
    stop_timeout: float = setting(60.0, min=1.0, max=3600.0,
                                  help="seconds a stop waits for the running job to save its state")
    max_gpu_memory: float = setting(0.0, min=0.0, max=100_000.0,
                                    help="GiB of GPU memory a generate job may use (0: its preset's cap or the "
                                    "device's); a job that cannot fit fails at its start naming a preset that fits")

    def validate(self) -> None:
        check_bounds(self)


def sanitize_name(name: str) -> str:
    """A job's display name as stored and listed: NFC, no control or format characters, at most MAX_NAME_CHARS."""
    text = unicodedata.normalize("NFC", name[: MAX_NAME_CHARS * 4])
    text = "".join(c for c in text if unicodedata.category(c)[0] not in ("C", "Z") or c == " ")
    return " ".join(text.split())[:MAX_NAME_CHARS]
