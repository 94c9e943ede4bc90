"""The three kinds of mistake, the error every config raises, and the first line of an error's
message: what every one-line report (a command line's `error: ...`, a refused resume, a model that
will not load) shows of an exception raised below it.

Every error the code raises on purpose is of one kind, and its kind alone decides what a command
line does with it (`diy_lstm.cli.errors`): `BadInput` (exit 2), `RunFailed` (exit 1), `BadModel`
(exit 3). The subclasses say where it came from (`ConfigError`, `ResumeError`, ...).
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf

# Where in a graph an op failed, and which op: TensorFlow's, not the user's.
_FUNCTION_NODE = re.compile(r"^(\{\{function_node [^}]*\}\}\s*)+")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]( name:\s*\S*)?\s*$")


class BadInput(ValueError):
    """A flag, setting, path or input the user gave cannot be used; found before anything was written."""


class RunFailed(Exception):
    """A run or command that began cannot finish: a refused resume, a diverged loss, a lost worker,
    a file or output that cannot be written."""


class BadModel(Exception):
    """A model that cannot be used: missing, damaged, or not of the kind asked for."""


class ConfigError(BadInput):
    """A setting out of its range, raised by every config (`ModelConfig`, the training run's, each
    task's data); the message names the setting and its range."""


_KINDS = {  # (a float's range, NaN included, is each config's own check, which names its flag)
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def check_field_types(config) -> None:
    """Raises `ConfigError` naming the first field of the dataclass `config` whose value is not of
    its annotated kind (`int`, `float`, `bool`, `str`, each optionally `| None`): what a flag's
    parser refuses, the Python API refuses too, before anything is made or written."""
    for field in dataclasses.fields(config):
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        kind, optional = annotation.removesuffix(" | None"), annotation.endswith(" | None")
        value = getattr(config, field.name)
        if kind not in _KINDS or (optional and value is None):
            continue
        ok, described = _KINDS[kind]
        if not ok(value):
            raise ConfigError(f"{type(config).__name__}.{field.name} must be {described}, got {value!r}")


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (a TensorFlow error's own message, not its traceback,
    nor the graph function it failed in)."""
    text = error if isinstance(error, str) else error.message if isinstance(error, tf.errors.OpError) else str(error)
    text = _FUNCTION_NODE.sub("", text.strip()).strip()
    return _OP_SUFFIX.sub("", text.splitlines()[0]) if text else type(error).__name__
