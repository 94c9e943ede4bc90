"""The first line of an error's message: what every one-line report (a command line's `error: ...`,
a refused resume, a model that will not load) shows of an exception raised below it."""

from __future__ import annotations

import tensorflow as tf


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (a TensorFlow error's own message, not its traceback)."""
    text = error if isinstance(error, str) else error.message if isinstance(error, tf.errors.OpError) else str(error)
    text = text.strip()
    return text.splitlines()[0] if text else type(error).__name__
