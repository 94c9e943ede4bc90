"""What this project reads and touches on disk: only regular files up to a stated size, and only
directories it made (and can tell that it made).

Reading (`read_regular_file`, `check_regular_tree`): a FIFO, a device (`/dev/zero`), a socket or a
directory where a file is expected is refused in one line before it is opened, and so is a file
larger than the caller's cap; nothing is read past the cap even if the file grows meanwhile.

Touching: a run directory is ours if it holds `RUN_MARKER`, written when the run made the directory
(or took an empty one). Staging (a SavedModel being written, a worker's scratch checkpoint) is ours
if it holds `STAGING_MARKER`, written the moment the directory is made, naming the process that made
it. Everything that deletes or rewrites goes through these checks:

    claim_run_dir(run_dir)     a new or empty directory becomes a run; a run of ours is resumed;
                               anything else that is not empty is refused before a byte is written
    make_staging(parent, ...)  a fresh staging directory, marked
    remove_stale_staging(...)  staging of ours whose process is gone; nothing unmarked, ever
    remove_tree(path, last)    a tree of ours, its marker removed last: a kill leaves it recognisable
"""

from __future__ import annotations

import json
import os
import stat
import tempfile

from diy_lstm.errors import BadInput

RUN_MARKER = ".diy_lstm-run"
STAGING_MARKER = ".diy_lstm-staging"
MAX_MARKER_BYTES = 4096


class FileLimitError(BadInput):
    """A file this project will not read: not a regular file, or larger than its cap."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_file(path: str, what: str, max_bytes: int) -> int:
    """The size of `path`, a regular file (or a link to one) of at most `max_bytes`, or `FileLimitError`
    naming `what` (e.g. `--text_file=notes.txt`). Other `OSError`s (no such file) are the caller's."""
    mode = os.stat(path)
    if not stat.S_ISREG(mode.st_mode):
        kind = next((kind for test, kind in _KINDS if test(mode.st_mode)), "not a regular file")
        raise FileLimitError(f"{what} is {kind}; only regular files are read")
    if mode.st_size > max_bytes:
        raise FileLimitError(f"{what} is {mode.st_size:,} bytes; at most {max_bytes:,} are read")
    return mode.st_size


def read_regular_file(path: str, what: str, max_bytes: int) -> bytes:
    """The bytes of `path` (see `check_regular_file`), never more than `max_bytes` of them."""
    check_regular_file(path, what, max_bytes)
    with open(path, "rb") as f:
        content = f.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise FileLimitError(f"{what} grew past {max_bytes:,} bytes while it was read")
    return content


def check_regular_tree(directory: str, what: str, max_bytes: int) -> None:
    """Every file under `directory` is a regular file, together at most `max_bytes` (a SavedModel or
    checkpoint that TensorFlow will open: a FIFO there would hang it)."""
    total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            total += check_regular_file(os.path.join(parent, name), f"{what}: {os.path.join(parent, name)}", max_bytes)
    if total > max_bytes:
        raise FileLimitError(f"{what} holds {total:,} bytes; at most {max_bytes:,} are read")


def unwritable_because(directory: str) -> str | None:
    """Why `directory` cannot be made or written in (a file where it or a parent should be, or no
    permission to write in the nearest one that exists), or None if it can."""
    ancestor = os.path.abspath(directory)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{ancestor} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None


class NotOursError(BadInput):
    """A directory the run would write in or replace holds something it did not make; nothing was touched."""


def is_run_dir(path: str) -> bool:
    """A directory that a run of ours made (it holds the run marker as a regular file)."""
    marker = os.path.join(path, RUN_MARKER)
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(marker) and not os.path.islink(marker)


def check_run_dir(run_dir: str, flag: str = "--run_name", task_name: str | None = None) -> None:
    """Raises `NotOursError` unless `run_dir` is new, empty, or a run of ours (of `task_name`, if
    given and the run names its task), in a place that can hold a directory (writes nothing)."""
    ancestor = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotOursError(f"--logdir/--run_name {run_dir}: {ancestor} is a file, not a directory")
    if os.path.islink(run_dir) or (os.path.exists(run_dir) and not os.path.isdir(run_dir)):
        raise NotOursError(f"{run_dir} is not a directory; choose another {flag} or --logdir")
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not is_run_dir(run_dir):
        raise NotOursError(
            f"{run_dir} is not empty and is not a diy_lstm run directory (it has no {RUN_MARKER}); "
            f"refusing to write in it: choose another {flag} or --logdir"
        )
    made_by = run_task(run_dir) if task_name is not None else None
    if made_by is not None and made_by != task_name:
        raise NotOursError(
            f"{run_dir} is a {made_by} run; a {task_name} run does not train in it: choose another {flag} or --logdir"
        )


def run_task(run_dir: str) -> str | None:
    """The task a run directory of ours was made for, as its marker says (None if it does not say)."""
    if not is_run_dir(run_dir):
        return None
    marker = os.path.join(run_dir, RUN_MARKER)
    try:
        content = json.loads(read_regular_file(marker, marker, MAX_MARKER_BYTES))
    except (OSError, ValueError):
        return None
    task = content.get("task") if isinstance(content, dict) else None
    return task if isinstance(task, str) and task else None


def claim_run_dir(run_dir: str, task_name: str) -> None:
    """Makes `run_dir` a run of ours (creating it, or marking an empty one), or checks that it is one
    (of `task_name`)."""
    check_run_dir(run_dir, task_name=task_name)
    if is_run_dir(run_dir):
        return
    os.makedirs(run_dir, exist_ok=True)
    check_run_dir(run_dir)  # another process may have filled it meanwhile
    _write_marker(os.path.join(run_dir, RUN_MARKER), {"kind": "run", "task": task_name})


def _write_marker(path: str, content: dict) -> None:
    """A new file (never through a link, never over anything already there) holding `content`."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(descriptor, "w") as f:
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
        content = json.loads(read_regular_file(marker, marker, MAX_MARKER_BYTES))
        pid = content["pid"] if isinstance(content, dict) and content.get("kind") == "staging" else None
    except (OSError, ValueError, KeyError, TypeError):
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
    """Removes the staging directories of ours named `<parent>/<prefix>*` whose process is gone, and
    directories of that name that hold nothing (what a kill between making a staging directory and
    writing its marker, or at the last step of its removal, leaves): returns what it removed.
    Unmarked files, and directories that hold anything, are never touched."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not name.startswith(prefix) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if _holds_nothing(path):
            remove_tree(path, last=STAGING_MARKER)
        elif (pid := staging_owner(path)) is not None and not _alive(pid):
            remove_tree(path, last=STAGING_MARKER)
        else:
            continue
        removed.append(path)
    return removed


def _holds_nothing(path: str) -> bool:
    """`path` holds no entry, or only an empty staging marker (made, not yet written)."""
    entries = os.listdir(path)
    marker = os.path.join(path, STAGING_MARKER)
    return not entries or (entries == [STAGING_MARKER] and not os.path.islink(marker) and os.path.getsize(marker) == 0)


def remove_staging(path: str) -> None:
    """Removes `path` if it is staging of ours (of any process); anything else is left alone."""
    if staging_owner(path) is not None:
        remove_tree(path, last=STAGING_MARKER)


def remove_tree(path: str, last: str) -> None:
    """Removes the directory `path` (links inside are removed, never followed) with the file `last`
    (relative to it) removed after every other file: a kill at any moment leaves either `last` in
    place, saying whose the rest is, or no file at all (only the directories above `last`)."""
    last = os.path.join(path, last)
    keep = {last, *_parents(last, path)}
    for parent, directories, names in os.walk(path, topdown=False):
        for name in names + [d for d in directories if os.path.islink(os.path.join(parent, d))]:
            if (entry := os.path.join(parent, name)) != last:
                os.remove(entry)
        for name in directories:
            if (entry := os.path.join(parent, name)) not in keep and not os.path.islink(entry):
                os.rmdir(entry)
    if os.path.lexists(last):
        os.remove(last)
    for directory in _parents(last, path):
        os.rmdir(directory)
    os.rmdir(path)


def _parents(file: str, top: str) -> list[str]:
    """The directories between `top` and `file`, deepest first (`top` itself not included)."""
    parents, directory = [], os.path.dirname(file)
    while directory != top:
        parents.append(directory)
        directory = os.path.dirname(directory)
    return parents
