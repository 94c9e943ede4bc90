"""The error every config raises, and the first line of an error's message: what every one-line
report (a command line's `error: ...`, a refused resume, a model that will not load) shows of an
exception raised below it."""

from __future__ import annotations

import re

import tensorflow as tf

# Where in a graph an op failed, and which op: TensorFlow's, not the user's.
_FUNCTION_NODE = re.compile(r"^(\{\{function_node [^}]*\}\}\s*)+")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]( name:\s*\S*)?\s*$")


class ConfigError(ValueError):
    """A setting out of its range, raised by every config (`ModelConfig`, the training run's, each
    task's data); the message names the setting and its range."""


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (a TensorFlow error's own message, not its traceback,
    nor the graph function it failed in)."""
    text = error if isinstance(error, str) else error.message if isinstance(error, tf.errors.OpError) else str(error)
    text = _FUNCTION_NODE.sub("", text.strip()).strip()
    return _OP_SUFFIX.sub("", text.splitlines()[0]) if text else type(error).__name__
