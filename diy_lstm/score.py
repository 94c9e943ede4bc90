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

import functools
import importlib
import re
import sys
from typing import Callable, Iterator

import numpy as np
from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train.py.")
_REFERENCE = flags.DEFINE_string(
    "reference", None, "'module:function' giving the true value of a sequence, e.g. data_generator:final_sum.")

EXIT_BAD_INPUT = 2
EXIT_BAD_MODEL = 3
_FLAG = re.compile(r"^--[A-Za-z_]\w*(=|$)")
CHUNK_LINES = 20_000  # stdin is read and scored this many lines at a time
MAX_PADDED_CHARACTERS = 2_000_000  # one model call: sequences × the longest of them


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


def explain_model_error(message: str, sequences: list[str], numbers: list[int] | None = None) -> str:
    """The model's one-line message, with `sequences[i]` replaced by the sequence itself (numbered
    `numbers[i]`, default i + 1) and the character shown as Python would (TensorFlow prints
    non-ASCII bytes escaped)."""
    from diy_lstm.export import ERROR_PREFIX

    found = _ASSERTION.search(message)
    line = found.group(1) if found else message.strip().splitlines()[-1]
    line = line.removeprefix(ERROR_PREFIX)

    def shown(index: int) -> str:
        text = sequences[index] if index < len(sequences) else "?"
        number = numbers[index] if numbers is not None and index < len(numbers) else index + 1
        return f"sequence {number} {(text if len(text) <= 60 else text[:57] + '...')!r}"

    unknown = _UNKNOWN_CHARACTER.search(line)
    if unknown:
        position, index = int(unknown.group(1)), int(unknown.group(2))
        character = sequences[index][position - 1]
        rest = line[unknown.end():]
        return (f"unknown character {character!r} (U+{ord(character):04X}) at position {position} "
                f"of {shown(index)}{rest}")
    return _SEQUENCE_INDEX.sub(lambda match: shown(int(match.group(1))), line)


@functools.lru_cache(maxsize=4)
def _load(model_dir: str):
    """The serving signature of `model_dir`, loaded once per process (a failed load is not kept)."""
    from diy_lstm.export import load_serving_signature

    return load_serving_signature(model_dir)[1]


class Scorer:
    """The serving signature of a SavedModel, called on batches whose padding stays bounded.

    Sequences are sorted by length and cut into batches of at most `MAX_PADDED_CHARACTERS`
    (sequences × the longest), so one long sequence among many short ones costs its own length, not
    the batch's size times it.
    """

    def __init__(self, model_dir: str, reference_spec: str | None = None):
        from diy_lstm import quiet

        self.tf = quiet.import_tensorflow()
        from diy_lstm.export import LoadError

        self.reference = resolve_reference(reference_spec)
        try:
            self.signature = _load(model_dir)
        except LoadError as error:
            raise ScoreError(str(error), EXIT_BAD_MODEL) from None

    def predictions(self, sequences: list[str], first_number: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Final predictions `[n]` float and their rounding `[n]` int for `sequences` (numbered from
        `first_number` in error messages)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        order = np.argsort(lengths, kind="stable")
        predictions = np.zeros(len(sequences), np.float32)
        rounded = np.zeros(len(sequences), np.int64)
        start = 0
        while start < len(order):
            stop = start + 1  # grow the batch while its padded size stays within the budget
            while stop < len(order) and (stop + 1 - start) * lengths[order[stop]] <= MAX_PADDED_CHARACTERS:
                stop += 1
            batch = order[start:stop]
            texts = [sequences[i] for i in batch]
            try:
                outputs = self.signature(sequences=self.tf.constant(texts, dtype=self.tf.string))
            except self.tf.errors.InvalidArgumentError as error:
                numbers = [first_number + int(i) for i in batch]
                raise ScoreError(explain_model_error(error.message, texts, numbers), EXIT_BAD_INPUT) from None
            predictions[batch] = outputs["final_prediction"].numpy()
            rounded[batch] = outputs["final_prediction_rounded"].numpy()
            start = stop
        return predictions, rounded

    def lines(self, sequences: list[str], width: int, first_number: int = 1) -> list[str]:
        """One formatted line per sequence (see `header`)."""
        predictions, rounded = self.predictions(sequences, first_number)
        if self.reference is None:
            return [f"{s:<{width}}  {p:>10.4f}  {r:>7d}" for s, p, r in zip(sequences, predictions, rounded)]
        lines = []
        for sequence, prediction, rounding in zip(sequences, predictions, rounded):
            true = self.reference(sequence)
            lines.append(f"{sequence:<{width}}  {prediction:>10.4f}  {rounding:>7d}  {true:>4}  "
                         f"{'yes' if rounding == true else 'NO'}")
        return lines

    def header(self, width: int) -> str:
        return f"{'sequence':<{width}}  prediction  rounded" + ("  true  ok" if self.reference else "")


def check_arguments_are_text(sequences: list[str]) -> None:
    """Arguments that were not valid UTF-8 reach Python as lone surrogates: name the byte and where."""
    for number, sequence in enumerate(sequences, start=1):
        for position, character in enumerate(sequence, start=1):
            if "\udc80" <= character <= "\udcff":
                raise ScoreError(f"invalid UTF-8 byte 0x{ord(character) - 0xDC00:02X} at position {position} of "
                                 f"sequence {number}", EXIT_BAD_INPUT)


def read_chunks(stream, size: int = CHUNK_LINES) -> Iterator[list[str]]:
    """The lines of a binary stream as text, `size` at a time; invalid UTF-8 is a `ScoreError`
    naming the line and byte."""
    chunk = []
    for number, raw in enumerate(stream, start=1):
        raw = raw.rstrip(b"\r\n")
        try:
            chunk.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ScoreError(f"invalid UTF-8 byte 0x{raw[error.start]:02X} at byte {error.start + 1} of line "
                             f"{number}", EXIT_BAD_INPUT) from None
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_flags(argv: list[str]) -> list[str]:
    """absl's flags parser, with every argument that is not `--name[=value]` taken as a sequence."""
    flag_args, sequences = [], []
    for index, argument in enumerate(argv[1:], start=1):
        if argument == "--":
            sequences += argv[index + 1:]
            break
        (flag_args if _FLAG.match(argument) or argument in ("-h", "-help", "-?") else sequences).append(argument)
    from diy_lstm import cli  # one-line flag errors, exit 2 (EXIT_BAD_INPUT)

    return [argv[0], *cli.parse_flags_or_exit([argv[0], *flag_args])[1:], *sequences]


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        print("error: --model_dir is required: the directory of a SavedModel written by train.py", file=sys.stderr)
        return EXIT_BAD_INPUT
    if len(argv) == 1 and (sys.stdin is None or sys.stdin.closed):
        print("error: no sequences: give them as arguments or one per line on stdin", file=sys.stderr)
        return EXIT_BAD_INPUT
    chunks = [argv[1:]] if len(argv) > 1 else read_chunks(sys.stdin.buffer)
    try:
        if len(argv) > 1:
            check_arguments_are_text(argv[1:])
        scorer = Scorer(_MODEL_DIR.value, _REFERENCE.value)
        width, scored = None, 0
        for chunk in chunks:
            header = ""
            if width is None:  # columns sized by the first chunk; longer sequences push theirs along
                width = max([len("sequence")] + [len(s) for s in chunk[:1000]])
                header = scorer.header(width) + "\n"
            lines = scorer.lines(chunk, width, scored + 1)  # scored before anything of it is written
            sys.stdout.write(header + "\n".join(lines) + "\n")
            scored += len(chunk)
        if width is None:
            sys.stdout.write(scorer.header(len("sequence")) + "\n")
        sys.stdout.flush()
    except ScoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # e.g. `| head -1`: the reader has what it wanted
        sys.stdout = None
    except OSError as error:  # e.g. >/dev/full
        sys.stdout = None
        print(f"error: cannot write the output: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=split_flags)
