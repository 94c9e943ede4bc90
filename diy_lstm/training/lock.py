"""One writer per run directory: an exclusive lock that dies with its holder.

`RunLock(run_dir)` holds an `flock` on `<run_dir>/.lock`, whose text is the holder's pid and start
time. The kernel releases the lock when the holder exits or is killed, so a lock left by a dead
process is never in the way; a second live process gets `RunLockedError` naming the first. The lock
file is opened without following a symbolic link and must be a regular file: a link, a directory or
a FIFO in its place is refused, naming it, and nothing it points to is touched.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import stat

from diy_lstm.errors import RunFailed

LOCK_FILE = ".lock"


class RunLockedError(RunFailed):
    """Another live process is training in this run directory, or its lock file is not a file."""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...` trains alone in `run_dir` (created if needed)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._file = None

    def __enter__(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, LOCK_FILE)
        handle = os.fdopen(_open_lock_file(path), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"{self.run_dir} is in use by {holder}; wait for it to finish, stop it, or choose another --run_name"
            ) from None
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


def _open_lock_file(path: str) -> int:
    """A descriptor of the regular file `path` (created if missing), never through a link."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        found = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a directory"}.get(error.errno)
        if found is None:
            raise RunLockedError(f"cannot open the run's lock file {path}: {error.strerror}") from None
        raise RunLockedError(f"the run's lock file {path} is {found}, not a file; remove it and rerun") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise RunLockedError(
            f"the run's lock file {path} is not a regular file (a FIFO or a device); remove it and rerun"
        )
    return descriptor
