"""Score sequences with an exported SavedModel.

    python -m diy_lstm.score --model_dir=logs/RUN/saved_model "+-I0" "++0" -I--
    printf '+-I0\\n++0\\n' | python -m diy_lstm.score --model_dir=logs/RUN/saved_model
    python -m diy_lstm.score --model_dir=M --reference=data_generator:final_sum "+-I0"

Prints one line per sequence: the sequence, the model's final prediction and its rounding; with
`--reference=module:function` (code the user names, imported from the current directory), also the
true value and whether the rounded prediction matches it. A model never chooses code to run.
Only `--name[=value]` arguments are flags; every other argument is a sequence, so `-I--` is scored
(`--` ends the flags, too). Any error (a bad character, a missing or broken model) is one line on
stderr and a non-zero exit status: 2 for bad input, 3 for a model that cannot be loaded.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Callable

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train.py.")
_REFERENCE = flags.DEFINE_string(
    "reference", None, "'module:function' giving the true value of a sequence, e.g. data_generator:final_sum.")

EXIT_BAD_INPUT = 2
EXIT_BAD_MODEL = 3
_FLAG = re.compile(r"^--[A-Za-z_]\w*(=|$)")


class ScoreError(Exception):
    """A problem to report in one line, with the exit status to use."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def resolve_reference(spec: str | None) -> Callable[[str], float] | None:
    """Imports the `module:function` the user named with --reference (None: no true values)."""
    if not spec:
        return None
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ScoreError(f"--reference={spec} must be module:function, e.g. data_generator:final_sum", EXIT_BAD_INPUT)
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # `python -m` puts the current directory first; a console script does not
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ScoreError(f"--reference={spec}: cannot import it ({error})", EXIT_BAD_INPUT) from None


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*\n", re.DOTALL)
_UNKNOWN_CHARACTER = re.compile(r"unknown character .* \(U\+[0-9A-F]+\) at position (\d+) of sequences\[(\d+)\]")
_SEQUENCE_INDEX = re.compile(r"sequences\[(\d+)\]")


def explain_model_error(message: str, sequences: list[str]) -> str:
    """The model's one-line message, with `sequences[i]` replaced by the sequence itself and the
    character shown as Python would (TensorFlow prints non-ASCII bytes escaped)."""
    from diy_lstm.export import ERROR_PREFIX

    found = _ASSERTION.search(message)
    line = found.group(1) if found else message.strip().splitlines()[-1]
    line = line.removeprefix(ERROR_PREFIX)

    def shown(index: int) -> str:
        text = sequences[index] if index < len(sequences) else "?"
        return f"sequence {index + 1} {(text if len(text) <= 60 else text[:57] + '...')!r}"

    unknown = _UNKNOWN_CHARACTER.search(line)
    if unknown:
        position, index = int(unknown.group(1)), int(unknown.group(2))
        character = sequences[index][position - 1]
        rest = line[unknown.end():]
        return (f"unknown character {character!r} (U+{ord(character):04X}) at position {position} "
                f"of {shown(index)}{rest}")
    return _SEQUENCE_INDEX.sub(lambda match: shown(int(match.group(1))), line)


def score(sequences: list[str], model_dir: str, reference_spec: str | None = None) -> list[dict]:
    """Scores `sequences`; returns one dict per sequence (sequence, prediction, rounded, true?)."""
    from diy_lstm import quiet

    tf = quiet.import_tensorflow()
    from diy_lstm.export import LoadError, load_serving_signature

    reference = resolve_reference(reference_spec)
    try:
        _, signature, _ = load_serving_signature(model_dir)
    except LoadError as error:
        raise ScoreError(str(error), EXIT_BAD_MODEL) from None
    try:
        outputs = signature(sequences=tf.constant(sequences, dtype=tf.string))
    except tf.errors.InvalidArgumentError as error:
        raise ScoreError(explain_model_error(error.message, sequences), EXIT_BAD_INPUT) from None
    rows = []
    for index, sequence in enumerate(sequences):
        row = {
            "sequence": sequence,
            "prediction": float(outputs["final_prediction"][index]),
            "rounded": int(outputs["final_prediction_rounded"][index]),
        }
        if reference is not None:
            row["true"] = reference(sequence)
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    width = max([len("sequence")] + [len(row["sequence"]) for row in rows])
    has_truth = bool(rows) and "true" in rows[0]
    header = f"{'sequence':<{width}}  prediction  rounded" + ("  true  ok" if has_truth else "")
    lines = [header]
    for row in rows:
        line = f"{row['sequence']:<{width}}  {row['prediction']:>10.4f}  {row['rounded']:>7d}"
        if has_truth:
            line += f"  {row['true']:>4}  {'yes' if row['rounded'] == row['true'] else 'NO'}"
        lines.append(line)
    return "\n".join(lines)


def read_lines(stream) -> list[str]:
    """The lines of a binary stream as text; invalid UTF-8 is a `ScoreError` naming the line and byte."""
    lines = []
    for number, raw in enumerate(stream, start=1):
        raw = raw.rstrip(b"\r\n")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ScoreError(f"invalid UTF-8 byte 0x{raw[error.start]:02X} at byte {error.start + 1} of line "
                             f"{number}", EXIT_BAD_INPUT) from None
    return lines


def split_flags(argv: list[str]) -> list[str]:
    """absl's flags parser, with every argument that is not `--name[=value]` taken as a sequence."""
    flag_args, sequences = [], []
    for index, argument in enumerate(argv[1:], start=1):
        if argument == "--":
            sequences += argv[index + 1:]
            break
        (flag_args if _FLAG.match(argument) or argument in ("-h", "-help", "-?") else sequences).append(argument)
    try:
        return [argv[0], *flags.FLAGS([argv[0], *flag_args])[1:], *sequences]
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        print("error: --model_dir is required: the directory of a SavedModel written by train.py", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        sequences = argv[1:] or read_lines(sys.stdin.buffer)
        rows = score(sequences, _MODEL_DIR.value, _REFERENCE.value)
    except ScoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    try:
        print(format_rows(rows), flush=True)
    except BrokenPipeError:  # e.g. `| head -1`: the reader has what it wanted
        sys.stdout = None
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=split_flags)
