"""Flag files (`--flagfile=FILE`, and the flag files they name) are checked before absl reads them:
each a regular file (never a FIFO that would hang, or `/dev/zero` that would grow without end) of at
most `MAX_FLAGFILE_BYTES`, nested at most `MAX_DEPTH` deep."""

from __future__ import annotations

import os

from diy_lstm import files

MAX_FLAGFILE_BYTES = 1_000_000
MAX_DEPTH = 10
_NAMES = ("--flagfile", "-flagfile")


class FlagfileError(ValueError):
    """A flag file that will not be read; the message names it."""


def named_files(arguments: list[str]) -> list[str]:
    """The paths that `--flagfile=PATH` (or `--flagfile PATH`) arguments name, in order."""
    paths = []
    for index, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if name in _NAMES and equals:
            paths.append(value)
        elif argument in _NAMES and index + 1 < len(arguments):
            paths.append(arguments[index + 1])
        elif argument == "--":
            break
    return paths


def check(arguments: list[str], depth: int = 0) -> None:
    """Raises `FlagfileError` for the first flag file (among `arguments` and those they name) that is
    missing, not a regular file, too large, not UTF-8, or nested too deep."""
    for path in named_files(arguments):
        if depth >= MAX_DEPTH:
            raise FlagfileError(f"--flagfile={path}: flag files nest more than {MAX_DEPTH} deep")
        what = f"--flagfile={path}"
        try:
            content = files.read_regular_file(os.path.expanduser(path), what, MAX_FLAGFILE_BYTES)
        except files.FileLimitError as error:
            raise FlagfileError(str(error)) from None
        except OSError as error:
            raise FlagfileError(f"{what}: cannot read it ({error.strerror or error})") from None
        try:
            lines = content.decode("utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise FlagfileError(f"{what} is not UTF-8 text: byte 0x{content[error.start]:02X} at byte "
                                f"{error.start + 1}") from None
        check([line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "//"))],
              depth + 1)
