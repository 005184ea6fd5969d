"""One server per data folder: an exclusive OS lock on ``<data>/server.lock``, released when the process ends (even
by kill -9). The file names the holder, so a second server says which process has the folder."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from backend.errors import UserError

LOCK_NAME = "server.lock"


class DataFolderLock:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / LOCK_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")
        except OSError as error:  # a file in the way, no permission, a read-only disk
            raise UserError(f"cannot use the data folder {Path(data_dir)}: {error.strerror or error}; give another "
                            "--data folder") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read(200).strip() or "another process"
            self.handle.close()
            raise UserError(f"the data folder {Path(data_dir)} is in use by another iso3d serve ({holder}); stop "
                            "it or give another --data folder") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
