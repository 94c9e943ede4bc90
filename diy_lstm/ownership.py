"""What a run may touch: only directories it made, and it can tell which those are.

A run directory is ours if it holds `RUN_MARKER`, written when the run made the directory (or took
an empty one). Staging (a SavedModel being written, a worker's scratch checkpoint) is ours if it
holds `STAGING_MARKER`, written the moment the directory is made, naming the process that made it.
Everything that deletes or rewrites goes through these checks:

    claim_run_dir(run_dir)     a new or empty directory becomes a run; a run of ours is resumed;
                               anything else that is not empty is refused before a byte is written
    make_staging(parent, ...)  a fresh staging directory, marked
    remove_stale_staging(...)  staging of ours whose process is gone; nothing unmarked, ever
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

RUN_MARKER = ".diy_lstm-run"
STAGING_MARKER = ".diy_lstm-staging"


class NotOursError(ValueError):
    """A directory the run would write in or replace holds something it did not make; nothing was touched."""


def is_run_dir(path: str) -> bool:
    """A directory that a run of ours made (it holds the run marker as a regular file)."""
    marker = os.path.join(path, RUN_MARKER)
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(marker) and not os.path.islink(marker)


def check_run_dir(run_dir: str, flag: str = "--run_name") -> None:
    """Raises `NotOursError` unless `run_dir` is new, empty, or a run of ours (writes nothing)."""
    if os.path.islink(run_dir) or (os.path.exists(run_dir) and not os.path.isdir(run_dir)):
        raise NotOursError(f"{run_dir} is not a directory; choose another {flag} or --logdir")
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not is_run_dir(run_dir):
        raise NotOursError(f"{run_dir} is not empty and is not a diy_lstm run directory (it has no {RUN_MARKER}); "
                           f"refusing to write in it: choose another {flag} or --logdir")


def claim_run_dir(run_dir: str, task_name: str) -> None:
    """Makes `run_dir` a run of ours (creating it, or marking an empty one), or checks that it is one."""
    check_run_dir(run_dir)
    if is_run_dir(run_dir):
        return
    os.makedirs(run_dir, exist_ok=True)
    check_run_dir(run_dir)  # another process may have filled it meanwhile
    _write_marker(os.path.join(run_dir, RUN_MARKER), {"kind": "run", "task": task_name})


def _write_marker(path: str, content: dict) -> None:
    with open(path, "w") as f:
        json.dump(content, f)


def make_staging(parent: str, prefix: str) -> str:
    """A new directory `<parent>/<prefix><random>`, marked as ours by this process; returns its path."""
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    _write_marker(os.path.join(staging, STAGING_MARKER), {"kind": "staging", "pid": os.getpid()})
    return staging


def make_marked_dir(path: str) -> None:
    """Creates `path` (which must not exist) as staging of this process."""
    os.mkdir(path)
    _write_marker(os.path.join(path, STAGING_MARKER), {"kind": "staging", "pid": os.getpid()})


def unmark_staging(staging: str) -> None:
    """Removes the staging marker (before the directory takes its final name)."""
    os.remove(os.path.join(staging, STAGING_MARKER))


def staging_owner(path: str) -> int | None:
    """The pid that made the staging directory `path`, or None if it is not staging of ours."""
    marker = os.path.join(path, STAGING_MARKER)
    if os.path.islink(path) or not os.path.isdir(path) or os.path.islink(marker) or not os.path.isfile(marker):
        return None
    try:
        with open(marker) as f:
            content = json.load(f)
        pid = content["pid"] if isinstance(content, dict) and content.get("kind") == "staging" else None
    except (OSError, ValueError, KeyError):
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is starting, so whatever it staged before is a leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: str, prefix: str) -> list[str]:
    """Removes the staging directories of ours named `<parent>/<prefix>*` whose process is gone;
    returns what it removed. Unmarked files and directories are never touched, whatever their name."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if name.startswith(prefix) and (pid := staging_owner(path)) is not None and not _alive(pid):
            shutil.rmtree(path)
            removed.append(path)
    return removed


def remove_staging(path: str) -> None:
    """Removes `path` if it is staging of ours (of any process); anything else is left alone."""
    if staging_owner(path) is not None:
        shutil.rmtree(path, ignore_errors=True)
