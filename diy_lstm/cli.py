"""What every command line shares: one-line errors with documented exit codes.

An entry point imports `diy_lstm.quiet` and calls `quiet.import_tensorflow()` first, defines its
flags (a training command adds the shared ones of `training_flags.py`), and hands its `main` to
`cli.run_main`. Exit codes:

    0    done                       2  bad flags or input (nothing was written)
    1    the run failed (diverged, cannot resume, a file problem)
    3    a model that cannot be loaded    130  interrupted (Ctrl-C; rerun to resume)

Every expected failure is one line on stderr, `error: ...`; `DIY_LSTM_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags, logging

from diy_lstm.checkpoints import ConfigMismatchError
from diy_lstm.config import ConfigError
from diy_lstm.export import ExportDirError
from diy_lstm.run import RunError

EXIT_RUN_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 130


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


# Failures a user can cause and fix, by exit code; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_USAGE), (ExportDirError, EXIT_USAGE), (ValueError, EXIT_USAGE),
    (ConfigMismatchError, EXIT_RUN_FAILED), (RunError, EXIT_RUN_FAILED), (OSError, EXIT_RUN_FAILED),
)


def run_main(main: Callable[[list[str]], int]) -> None:
    """`app.run(main)` with one-line flag errors (exit 2), one-line expected failures, and Ctrl-C as 130."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]}; all settings are --flags (see --help)", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        try:
            sys.exit(main(argv))
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except tuple(error for error, _ in EXPECTED_ERRORS) as error:
            if os.environ.get("DIY_LSTM_DEBUG") == "1":
                raise
            code = next(code for kind, code in EXPECTED_ERRORS if isinstance(error, kind))
            print(f"error: {error}", file=sys.stderr)
            sys.exit(code)

    app.run(guarded, flags_parser=_parse_flags)
