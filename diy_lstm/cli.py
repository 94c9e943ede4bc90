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
from typing import Callable, Iterable

from absl import app, flags, logging

from diy_lstm import quiet

tf = quiet.import_tensorflow()  # a command line's import of this module is never the noisy one

from diy_lstm.checkpoints import ConfigMismatchError  # noqa: E402
from diy_lstm.config import ConfigError, RunSettings  # noqa: E402
from diy_lstm.export import ExportDirError  # noqa: E402
from diy_lstm.lock import RunLockedError  # noqa: E402
from diy_lstm.run import INTERRUPTED, RunError, RunResult, train  # noqa: E402
from diy_lstm.task import Task  # noqa: E402

EXIT_RUN_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 130


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's parsing, with every error one line and exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
    except RecursionError:  # absl's suggestions for a very long unknown flag
        print(f"error: {unknown_flag(argv[1:])}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def unknown_flag(arguments: list[str]) -> str:
    """absl's message for the first argument that names no defined flag, its name cut to 60 characters."""
    names = [a.lstrip("-").split("=", 1)[0] for a in arguments if a.startswith("-")]
    name = next((n for n in names if n not in flags.FLAGS), names[0] if names else "?")
    shown = name if len(name) <= 60 else f"{name[:60]}... ({len(name)} characters)"
    return f"Unknown command line flag '{shown}'"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Failures a user can cause and fix, by exit code; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_USAGE), (ExportDirError, EXIT_USAGE), (ValueError, EXIT_USAGE),
    (ConfigMismatchError, EXIT_RUN_FAILED), (RunError, EXIT_RUN_FAILED), (RunLockedError, EXIT_RUN_FAILED),
    (OSError, EXIT_RUN_FAILED), (tf.errors.OpError, EXIT_RUN_FAILED),
)


def train_each(runs: Iterable[tuple[RunSettings, Task]], summarize: Callable[[RunResult], None]) -> int:
    """`run.train` for each planned run (one per `--lstm_size`), printing the first summary line and
    the task's own; the exit code (130 if interrupted)."""
    for settings, task in runs:
        result = train(settings, task)
        if result.outcome == INTERRUPTED:
            return EXIT_INTERRUPTED
        resumed, epochs = result.resumed_from_epoch, result.epochs
        if resumed == epochs:
            trained = f"no epochs left to train (the run had completed all {epochs})"
        else:
            trained = f"epochs {resumed + 1}..{epochs}" if resumed else f"{epochs} epochs"
        print(f"done: {trained} in {result.seconds:.1f}s")
        if result.export_dir is None:  # a worker that is not the chief
            print(f"  the chief wrote the run {result.run_dir} and its SavedModel")
            continue
        summarize(result)
    return 0


def guarded(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """`main(argv)`'s exit code, with every expected failure one line on stderr and its code."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; all settings are --flags (see --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except tuple(error for error, _ in EXPECTED_ERRORS) as error:
        if os.environ.get("DIY_LSTM_DEBUG") == "1":
            raise
        code = next(code for kind, code in EXPECTED_ERRORS if isinstance(error, kind))
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        print(f"error: {first_line(message)}", file=sys.stderr)
        return code


def run_main(main: Callable[[list[str]], int]) -> None:
    """`app.run(main)` with one-line flag errors (exit 2), one-line expected failures, and Ctrl-C as 130."""
    app.run(lambda argv: sys.exit(guarded(main, argv)), flags_parser=parse_flags_or_exit)
