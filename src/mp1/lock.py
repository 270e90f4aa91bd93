"""One writer per folder (a training run, a sweep).

An exclusive `flock` on `<folder>/.lock`: the kernel releases it when its holder exits or is
killed, so a lock left by a crashed process is taken over without anyone having to delete it.
The file names the holder (PID, host, start time) for the message that refuses a second writer.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another live process is writing to the folder."""


class FolderLock:
    """`name` sets the lock file's name, for several locks in one folder (a store's lock sits
    beside it, as writing a new zarr store clears the store's own folder); `holds` is what the
    lock guards, named in the refusal (default: the folder)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME, holds: str | os.PathLike | None = None):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.holds = Path(holds or folder)  # what the refusal names
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise FolderLockedError(
                f"{self.holds} is in use by PID {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                f"(since {holder.get('since', '?')}); wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.write(fd, json.dumps(record).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
