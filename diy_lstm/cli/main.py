"""What every command line shares: flags parsed in one line, expected failures in one line, exit codes.

An entry point imports `diy_lstm.cli.quiet` and calls `quiet.import_tensorflow()` first, defines its
flags (a training command adds the shared ones of `diy_lstm.training.flags`), and hands its `main`
to `run_main`. Every expected failure is one line on stderr, `error: ...`, with the exit code of
`diy_lstm.cli.errors` (`DIY_LSTM_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable

from absl import app, flags, logging

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()  # a command line's import of this module is never the noisy one

from diy_lstm.cli import flagfiles  # noqa: E402
from diy_lstm.cli.errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OutputError,
    exit_code,
    first_line,
)
from diy_lstm.training.config import RunSettings  # noqa: E402
from diy_lstm.training.results import INTERRUPTED, RunResult  # noqa: E402
from diy_lstm.training.run import check_directories, train  # noqa: E402
from diy_lstm.training.task import Task  # noqa: E402


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, then exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's parsing, with every error one line and exit 2 (flag files are checked first: regular
    files of at most `flagfiles.MAX_FLAGFILE_BYTES`)."""
    try:
        flagfiles.check(argv[1:])
        if (too_long := _too_long_for_suggestions(argv[1:])) is not None:
            fail(unknown_flag([too_long]))
        return flags.FLAGS(argv)
    except flags.Error as error:  # one line however it reads: a value's own line breaks shown as \n
        fail(str(error).strip().replace("\n", "\\n"))
    except flagfiles.FlagfileError as error:
        fail(str(error))
    except RecursionError:  # absl's suggestions for a very long unknown flag
        fail(unknown_flag(argv[1:]))


MAX_SUGGESTED_NAME = 100  # absl's suggestions for an unknown flag cost its name's length squared per flag


def _too_long_for_suggestions(arguments: list[str]) -> str | None:
    """The first flag argument (before any `--`) whose name is too long to be a flag's, if any."""
    for argument in arguments:
        if argument == "--":
            return None
        name = argument.lstrip("-").split("=", 1)[0]
        if argument.startswith("-") and len(name) > MAX_SUGGESTED_NAME and name not in flags.FLAGS:
            return argument
    return None


def unknown_flag(arguments: list[str]) -> str:
    """absl's message for the first argument that names no defined flag, its name cut to 60 characters."""
    names = [a.lstrip("-").split("=", 1)[0] for a in arguments if a.startswith("-")]
    name = next((n for n in names if n not in flags.FLAGS), names[0] if names else "?")
    shown = name if len(name) <= 60 else f"{name[:60]}... ({len(name)} characters)"
    return f"Unknown command line flag '{shown}'"


def train_each(runs: Iterable[tuple[RunSettings, Task]], summarize: Callable[[RunResult], None]) -> int:
    """`run.train` for each planned run (one per `--lstm_size`), printing the first summary line and
    the task's own; the exit code (130 if interrupted). Every run's directories are checked before
    the first trains, so a directory that is not ours stops the command before it writes anything
    (with `multi_worker`, each run's chief checks its own once the workers are connected, so that they
    hear of it)."""
    runs = list(runs)
    for settings, _ in runs:
        if settings.run.strategy != "multi_worker":  # (a chief checks once its workers are connected)
            check_directories(settings)
    for settings, task in runs:
        result = train(settings, task)
        if result.outcome == INTERRUPTED:
            return EXIT_INTERRUPTED
        resumed, epochs = result.resumed_from_epoch, result.epochs
        if result.stopped_at_goal and resumed == result.completed_epochs:
            trained = f"no epochs left to train (the run had reached its goal at epoch {resumed})"
        elif result.stopped_at_goal:
            trained = f"the goal at epoch {result.completed_epochs} of {epochs} (stopped there)"
        elif resumed == epochs:
            trained = f"no epochs left to train (the run had completed all {epochs})"
        else:
            trained = f"epochs {resumed + 1}..{epochs}" if resumed else f"{epochs} epochs"
        print(f"done: {trained} in {result.seconds:.1f}s")
        if result.export_dir is None:  # a worker that is not the chief
            print(f"  the chief wrote the run {result.run_dir} and its SavedModel")
            continue
        summarize(result)
    return EXIT_OK


def guarded(main: Callable[[list[str]], int], argv: list[str], takes_arguments: bool = False) -> int:
    """`main(argv)`'s exit code, with every expected failure one line on stderr and its code."""
    # TensorFlow's own Python warnings (a damaged checkpoint index is "ignored" before ours says why)
    # go through these two loggers: a command prints its own lines only.
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    if len(argv) > 1 and not takes_arguments:
        print(f"error: unexpected arguments {argv[1:]}; all settings are --flags (see --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `| head -1`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except Exception as error:
        code = exit_code(error)
        if code is None or os.environ.get("DIY_LSTM_DEBUG") == "1":
            raise
        if isinstance(error, OutputError):  # nothing more goes to an output that failed
            sys.stdout = open(os.devnull, "w")
        print(f"error: {first_line(error)}", file=sys.stderr)
        return code


def _standard_output_or_exit(writes_output: bool) -> None:
    """A closed standard output (`>&-`): a command whose output is its result stops in one line; any
    other writes its progress nowhere."""
    if sys.stdout is not None and not sys.stdout.closed:
        return
    if writes_output:
        fail("standard output is closed: there is nowhere to write the result", EXIT_FAILED)
    sys.stdout = open(os.devnull, "w")


def run_main(
    main: Callable[[list[str]], int],
    flags_parser: Callable[[list[str]], list[str]] = parse_flags_or_exit,
    takes_arguments: bool = False,
    writes_output: bool = False,
) -> None:
    """`app.run(main)` with one-line flag errors (exit 2), one-line expected failures, Ctrl-C as 130.
    `takes_arguments`: arguments other than flags reach `main` (else they are refused);
    `writes_output`: the command's standard output is its result (a closed one is an error)."""
    _standard_output_or_exit(writes_output)
    app.run(lambda argv: sys.exit(guarded(main, argv, takes_arguments)), flags_parser=flags_parser)
