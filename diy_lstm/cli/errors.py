"""One error path for every command line: typed errors, one table from error to exit code, and the one
place that turns a SavedModel's in-graph check into a line.

    0    done                                    2  bad flags or input (nothing was written)
    1    the run failed: cannot resume, diverged, a file or output problem
    3    a model that cannot be loaded           130  interrupted (Ctrl-C; rerun to resume)

A command raises; `exit_code(error)` finds the error's class, or the nearest class it derives from,
in `EXIT_CODES` (anything not there is a bug and keeps its traceback); `diy_lstm.cli.main` prints
`error: <first line>` on stderr and exits with that code.
"""

from __future__ import annotations

import re
from typing import Callable

import tensorflow as tf

from diy_lstm.errors import (
    BadInput,
    BadModel,
    RunFailed,
    first_line,  # noqa: F401 (the command lines' name for it)
)
from diy_lstm.serving.strings import ERROR_PREFIX

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BAD_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(BadInput):
    """Bad flags or input, found before anything was written."""


class ModelError(BadModel):
    """A model that cannot be used (missing, damaged, of another kind)."""


class OutputError(RunFailed):
    """The command's output cannot be written (a full disk, a closed standard output)."""


EXIT_CODES: dict[type[BaseException], int] = {  # by the kind of mistake (diy_lstm/errors.py)
    BadInput: EXIT_BAD_INPUT,
    BadModel: EXIT_BAD_MODEL,
    RunFailed: EXIT_FAILED,
    ValueError: EXIT_BAD_INPUT,  # what a library below refuses of an input
    OSError: EXIT_FAILED,
    tf.errors.OpError: EXIT_FAILED,
}


def exit_code(error: BaseException) -> int | None:
    """The exit code of an expected failure (by the nearest class in `EXIT_CODES`), or None for a bug."""
    return next((EXIT_CODES[kind] for kind in type(error).__mro__ if kind in EXIT_CODES), None)


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]((?: \[.*?\])*)\s*(?:\n|$)", re.DOTALL)
_UNKNOWN_CHARACTER = re.compile(r"unknown character U\+([0-9A-F]{4,6})")
_INPUT_INDEX = re.compile(r"\b([a-z_]+)\[(\d+)\]")
_ESCAPED = re.compile(r"\\(['\"\\])")  # how an assertion prints a string tensor: ' " and \ behind a backslash


def graph_error_message(
    error: tf.errors.InvalidArgumentError, name: Callable[[str, int], str] | None = None
) -> str | None:
    """The line of a failed in-graph check (`diy_lstm.serving.strings`), or None if `error` is not one.

    The character of `unknown character U+XXXX` is shown beside its code point, and each input
    reference `what[i]` is replaced by `name(what, i)` (e.g. `sequence 3 '+x'`)."""
    found = _ASSERTION.search(error.message)
    if not found or not found.group(1).startswith(ERROR_PREFIX):
        return None
    line = found.group(1).removeprefix(ERROR_PREFIX) + found.group(2).replace("] [", " ").replace(" [", " ").rstrip("]")
    line = _ESCAPED.sub(r"\1", line)
    line = _UNKNOWN_CHARACTER.sub(
        lambda match: f"unknown character {chr(int(match.group(1), 16))!r} (U+{match.group(1)})", line
    )
    if name is not None:
        line = _INPUT_INDEX.sub(lambda match: name(match.group(1), int(match.group(2))), line)
    return line
