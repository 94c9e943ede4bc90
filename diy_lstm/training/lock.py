"""One writer per run directory: an exclusive lock that dies with its holder.

`RunLock(run_dir)` holds an `flock` on `<run_dir>/.lock`, whose text is the holder's pid and start
time. The kernel releases the lock when the holder exits or is killed, so a lock left by a dead
process is never in the way; a second live process gets `RunLockedError` naming the first.
"""

from __future__ import annotations

import datetime
import fcntl
import os

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process is training in this run directory."""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...` trains alone in `run_dir` (created if needed)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._file = None

    def __enter__(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, LOCK_FILE)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{self.run_dir} is in use by {holder}; wait for it to finish, stop it, or choose "
                                 "another --run_name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} (since {datetime.datetime.now():%Y-%m-%d %H:%M:%S})")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
