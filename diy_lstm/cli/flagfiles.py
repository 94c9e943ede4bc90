"""Flag files (`--flagfile=FILE`, and the flag files they name) are checked before absl reads them:
each a regular file (never a FIFO that would hang, or `/dev/zero` that would grow without end) of at
most `MAX_FLAGFILE_BYTES`, nested at most `MAX_DEPTH` deep. The files are found exactly as absl finds
them (`named_files`, `nested_files`; a test holds the two to absl's own parse), so none it opens goes
unchecked."""

from __future__ import annotations

import io
import os

from diy_lstm import files
from diy_lstm.errors import BadInput

MAX_FLAGFILE_BYTES = 1_000_000
MAX_DEPTH = 10
_NAMES = ("--flagfile", "-flagfile")
_PREFIXES = ("--flagfile=", "-flagfile=")


class FlagfileError(BadInput):
    """A flag file that will not be read; the message names it."""


def named_files(arguments: list[str]) -> list[str]:
    """The paths that `--flagfile=PATH` (or `--flagfile PATH`) arguments name, in order, as absl's
    `read_flags_from_files` reads them (`PATH` after `=` stripped of white space, `~` expanded)."""
    paths, rest = [], iter(arguments)
    for argument in rest:
        if argument == "--":
            break
        if argument in _NAMES:  # the next argument is the path, whatever it looks like
            paths.append(os.path.expanduser(next(rest, "")))
        elif argument.startswith(_PREFIXES):
            paths.append(_extracted(argument))
    return [path for path in paths if path]


def nested_files(content: str) -> list[str]:
    """The paths a flag file's text names, as absl's `_get_flag_file_lines` finds them: its lines as
    `readlines` splits them (at newlines only: a form feed is inside a line), a directive only where
    a line starts with `--flagfile=` or `-flagfile=`, the rest of that line stripped."""
    lines = io.StringIO(content, newline=None).readlines()
    return [path for line in lines if not line.isspace() and line.startswith(_PREFIXES) if (path := _extracted(line))]


def _extracted(directive: str) -> str:
    return os.path.expanduser(directive.partition("=")[2].strip())


def check(arguments: list[str]) -> None:
    """Raises `FlagfileError` for the first flag file (among `arguments` and those they name) that is
    missing, not a regular file, too large, not UTF-8, or nested too deep."""
    _check_files(named_files(arguments), 0)


def _check_files(paths: list[str], depth: int) -> None:
    for path in paths:
        if depth >= MAX_DEPTH:
            raise FlagfileError(f"--flagfile={path}: flag files nest more than {MAX_DEPTH} deep")
        what = f"--flagfile={path}"
        try:
            content = files.read_regular_file(path, what, MAX_FLAGFILE_BYTES)
        except files.FileLimitError as error:
            raise FlagfileError(str(error)) from None
        except OSError as error:
            raise FlagfileError(f"{what}: cannot read it ({error.strerror or error})") from None
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as error:
            raise FlagfileError(
                f"{what} is not UTF-8 text: byte 0x{content[error.start]:02X} at byte {error.start + 1}"
            ) from None
        _check_files(nested_files(text), depth + 1)
