"""Import TensorFlow without its C++ start-up lines.

TensorFlow 2.21 writes "All log messages before absl::InitializeLog() ..." and "oneDNN custom
operations are on ..." to file descriptor 2 while it is imported, whatever `TF_CPP_MIN_LOG_LEVEL`
says. Command lines call `import_tensorflow()` before anything imports TensorFlow: descriptor 2 goes
to a temporary file for the import only, and what was captured is replayed if the import fails.
`TF_CPP_MIN_LOG_LEVEL` defaults to 3: TensorFlow's C++ log lines (a collective's error when a worker
dies, say) stay quiet, since every error a command expects also reaches it as an exception, printed
as its one line; set the variable lower to see them. Python warnings still show.

Ctrl-C and SIGTERM are one: each ends a command with "error: interrupted" and exit 130 (a training
run turns either into a stop at the end of its epoch, `diy_lstm.training.run.StopRequest`).

This module imports nothing heavy, so an entry point can import it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from types import ModuleType
from typing import Callable, Iterator

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)  # both mean "stop": exit 130


@contextlib.contextmanager
def captured_stderr(replay: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file inside the block (a C++ library's own lines, which
    Python cannot silence); what was captured is replayed if the block raises and `replay()` says so."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved_stderr, 2)
            if replay():
                captured.seek(0)
                os.write(2, captured.read())
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, with its start-up lines on stderr silenced; returns the module."""
    # Errors too: every one a command expects is raised to it, and printed as its one line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    interrupted = []
    # Ctrl-C inside TensorFlow's C extensions can surface as an ImportError: note it, finish the import.
    previous = {
        signum: signal.signal(signum, lambda signum, frame: interrupted.append(signum)) for signum in INTERRUPTS
    }
    try:
        with captured_stderr(replay=lambda: not interrupted):
            import tensorflow
    except BaseException:
        if not interrupted:
            raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if interrupted:  # Ctrl-C during the few seconds of start-up: one line, not a traceback
        _exit_interrupted()
    # Until a command installs its own (the training run's stop request), Ctrl-C ends it in one line.
    for signum in INTERRUPTS:
        signal.signal(signum, lambda signum, frame: _exit_interrupted())
    return tensorflow


def _exit_interrupted() -> None:
    print("error: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130)
