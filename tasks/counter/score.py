"""Score sequences with an exported counter SavedModel.

    python score.py --model_dir=logs/RUN/saved_model "+-I0" "++0" -I--
    printf '+-I0\\n++0\\n' | python score.py --model_dir=logs/RUN/saved_model
    python score.py --model_dir=M --reference=data_generator:final_sum "+-I0"

Prints one line per sequence: the sequence, the model's final prediction and its rounding; with
`--reference=module:function` (code the user names, imported from the current directory), also the
true value and whether the rounded prediction matches it. A model never chooses code to run.
Only `--name[=value]` arguments are flags; every other argument is a sequence, so `-I--` is scored
(`--` ends the flags, too). One sequence may hold at most `MAX_SEQUENCE_CHARACTERS` characters. A
sequence longer than the model was checked on gets a note on stderr (the answer is still printed).
Any error is one line on stderr and the exit code of `diy_lstm.cli.errors`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import numbers
import re
import sys
from typing import Callable, Iterator

import numpy as np
from absl import flags

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from diy_lstm.cli import main as cli  # noqa: E402
from diy_lstm.cli.errors import ModelError, OutputError, UsageError, graph_error_message  # noqa: E402
from diy_lstm.serving.export import LoadError, load_serving_signature  # noqa: E402
from tasks.counter.serving import SIGNATURE_INPUTS, about, call_budget  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train.py.")
_REFERENCE = flags.DEFINE_string(
    "reference", None, "'module:function' giving the true value of a sequence, e.g. data_generator:final_sum."
)

_FLAG = re.compile(r"^--[A-Za-z_]\w*(=|$)")
# stdin is read and scored this many lines, or this many characters (and one more line), at a time:
# the chunk, its output lines and its calls' inputs hold about 3 bytes a character (docs/reliability.md)
CHUNK_LINES, CHUNK_CHARACTERS = 20_000, 20_000_000
MAX_SEQUENCE_CHARACTERS = 1_000_000  # one sequence; longer ones are refused (docs/reliability.md)


def resolve_reference(spec: str | None) -> Callable[[str], int] | None:
    """Imports the `module:function` the user named with --reference (None: no true values); it must
    be a function of one argument."""
    if not spec:
        return None
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"--reference={spec} must be module:function, e.g. data_generator:final_sum")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # `python -m` puts the current directory first; a console script does not
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--reference={spec}: cannot import it ({error})") from None
    except Exception as error:  # the module the user named raised while it was imported
        raise UsageError(
            f"--reference={spec}: importing {module_name} raised {type(error).__name__}: {cli.first_line(error)}"
        ) from None
    try:
        inspect.signature(function).bind("+")
    except TypeError:
        raise UsageError(f"--reference={spec} is not a function of one sequence") from None
    except ValueError:
        pass  # a builtin without a signature: let it try
    return function


@functools.lru_cache(maxsize=4)
def _load(model_dir: str):
    """The serving signature of `model_dir` and what its `about` signature says, loaded once per process."""
    try:
        loaded, signature, metadata = load_serving_signature(
            model_dir, "serving_default", SIGNATURE_INPUTS["serving_default"]
        )
    except LoadError as error:
        raise ModelError(str(error)) from None
    return signature, about(loaded), metadata


def shown_sequence(number: int, text: str) -> str:
    return f"sequence {number} {(text if len(text) <= 60 else text[:57] + '...')!r}"


class Scorer:
    """The serving signature of a SavedModel, called on batches whose padding stays bounded.

    Sequences are sorted by length and cut into batches of at most the model's `max_padded_characters`
    (sequences × the longest) and `max_sequences` (`call_budget`), so one long sequence among many
    short ones costs its own length, not the batch's size times it.
    """

    def __init__(self, model_dir: str, reference_spec: str | None = None):
        self.reference = resolve_reference(reference_spec)
        self.reference_spec = reference_spec
        self.signature, self.checked, self.metadata = _load(model_dir)
        self.budget = call_budget(self.checked, self.metadata)
        self.noted: set[str] = set()  # the notes given (each once)

    def predictions(self, sequences: list[str], first_number: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Final predictions `[n]` float and their rounding `[n]` int for `sequences` (numbered from
        `first_number` in error messages)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        order = np.argsort(lengths, kind="stable")
        predictions, rounded = np.zeros(len(sequences), np.float32), np.zeros(len(sequences), np.int64)
        start = 0
        while start < len(order):
            stop = start + 1  # grow the batch while its padded size stays within the budget
            while (
                stop < len(order)
                and stop + 1 - start <= self.budget.sequences
                and (stop + 1 - start) * lengths[order[stop]] <= self.budget.padded_characters
            ):
                stop += 1
            batch = order[start:stop]
            texts = [sequences[i] for i in batch]
            try:
                outputs = self.signature(sequences=tf.constant(texts, dtype=tf.string))
            except tf.errors.InvalidArgumentError as error:
                message = graph_error_message(
                    error, lambda what, i: shown_sequence(first_number + int(batch[i]), texts[i])
                )
                raise UsageError(message or cli.first_line(error)) from None
            predictions[batch] = outputs["final_prediction"].numpy()
            rounded[batch] = outputs["final_prediction_rounded"].numpy()
            start = stop
        self._note_lengths(int(lengths.max(initial=0)))
        self._note_sums(int(np.abs(rounded).max(initial=0)))
        return predictions, rounded

    def _note_lengths(self, longest: int) -> None:
        """One note on stderr, the first time a sequence is longer than the model was checked exact at
        (any sequence, for a model never checked exact or that does not say)."""
        validated = self.checked.get("validated_exact_up_to") or 0
        if "length" in self.noted or longest <= validated:
            return
        self.noted.add("length")
        trained = self.checked.get("trained_lengths") or ["?", "?"]
        checked = (
            f"checked exact up to {validated:,}: longer answers are unchecked"
            if validated
            else "never checked exact at any length: its answers are unchecked"
        )
        print(
            f"note: a sequence has {longest:,} characters; this model was trained on lengths {trained[0]}.."
            f"{trained[1]} and {checked}",
            file=sys.stderr,
        )

    def _note_sums(self, largest: int) -> None:
        """One note on stderr, the first time a predicted |sum| is larger than any the model was
        checked exact at (models that say: `validated_exact_sum` > 0)."""
        checked = self.checked.get("validated_exact_sum") or 0
        if "sum" in self.noted or not checked or largest <= checked:
            return
        self.noted.add("sum")
        print(
            f"note: a predicted sum is {largest:,}; this model was checked exact up to |sum| {checked:,}: "
            "larger answers are unchecked",
            file=sys.stderr,
        )

    def lines(self, sequences: list[str], width: int, first_number: int = 1) -> list[str]:
        """One formatted line per sequence (see `header`)."""
        predictions, rounded = self.predictions(sequences, first_number)
        if self.reference is None:
            return [f"{s:<{width}}  {p:>10.4f}  {r:>7d}" for s, p, r in zip(sequences, predictions, rounded)]
        return [
            f"{sequence:<{width}}  {prediction:>10.4f}  {rounding:>7d}  {true:>4}  "
            f"{'yes' if rounding == true else 'NO'}"
            for sequence, prediction, rounding, true in zip(
                sequences, predictions, rounded, map(self._true_value, sequences)
            )
        ]

    def _true_value(self, sequence: str) -> int:
        try:
            value = self.reference(sequence)
        except Exception as error:  # the user's code: its failure is named, not a traceback
            raise UsageError(
                f"--reference raised {type(error).__name__} on {sequence[:60]!r}: {cli.first_line(error)}"
            ) from None
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise UsageError(
                f"--reference={self.reference_spec} returned {shown_value(value)} "
                f"({type(value).__name__}) on {sequence[:60]!r}; it must return an integer"
            )
        return int(value)

    def header(self, width: int) -> str:
        return f"{'sequence':<{width}}  prediction  rounded" + ("  true  ok" if self.reference else "")


def shown_value(value: object) -> str:
    """A value the user's code returned, in one short line (its repr may be long or span lines)."""
    try:
        text = repr(value)
    except Exception:
        return "(no repr)"
    text = " ".join(text.splitlines())
    return text if len(text) <= 40 else text[:37] + "..."


def check_arguments(sequences: list[str]) -> None:
    """Arguments that were not valid UTF-8 reach Python as lone surrogates: name the byte and where;
    a sequence longer than `MAX_SEQUENCE_CHARACTERS` is refused."""
    for number, sequence in enumerate(sequences, start=1):
        check_length(len(sequence), f"sequence {number}")
        for position, character in enumerate(sequence, start=1):
            if "\udc80" <= character <= "\udcff":
                raise UsageError(
                    f"invalid UTF-8 byte 0x{ord(character) - 0xDC00:02X} at position {position} of sequence {number}"
                )


def check_length(characters: int, what: str) -> None:
    if characters > MAX_SEQUENCE_CHARACTERS:
        raise UsageError(
            f"{what} has more than {MAX_SEQUENCE_CHARACTERS:,} characters; one sequence may have at "
            f"most {MAX_SEQUENCE_CHARACTERS:,}"
        )


def read_chunks(stream, size: int = CHUNK_LINES, characters: int = CHUNK_CHARACTERS) -> Iterator[list[str]]:
    """The lines of a binary stream as text, `size` at a time or fewer once they hold `characters`;
    invalid UTF-8 or a line longer than `MAX_SEQUENCE_CHARACTERS` is a `UsageError` naming the line
    (no line is read past the cap)."""
    chunk, number, held = [], 0, 0
    while raw := stream.readline(4 * MAX_SEQUENCE_CHARACTERS + 2):  # UTF-8: at most 4 bytes a character
        number += 1
        if not raw.endswith(b"\n") and len(raw) > 4 * MAX_SEQUENCE_CHARACTERS:
            check_length(MAX_SEQUENCE_CHARACTERS + 1, f"line {number}")
        raw = raw.rstrip(b"\r\n")
        try:
            chunk.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise UsageError(
                f"invalid UTF-8 byte 0x{raw[error.start]:02X} at byte {error.start + 1} of line {number}"
            ) from None
        check_length(len(chunk[-1]), f"line {number}")
        held += len(chunk[-1])
        if len(chunk) == size or held >= characters:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def split_flags(argv: list[str]) -> list[str]:
    """absl's flags parser, with every argument that is not `--name[=value]` taken as a sequence."""
    flag_args, sequences = [], []
    for index, argument in enumerate(argv[1:], start=1):
        if argument == "--":
            sequences += argv[index + 1 :]
            break
        (flag_args if _FLAG.match(argument) or argument in ("-h", "-help", "-?") else sequences).append(argument)
    return [argv[0], *cli.parse_flags_or_exit([argv[0], *flag_args])[1:], *sequences]


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        raise UsageError("--model_dir is required: the directory of a SavedModel written by train.py")
    if len(argv) == 1 and (sys.stdin is None or sys.stdin.closed):
        raise UsageError("no sequences: give them as arguments or one per line on stdin")
    if len(argv) > 1:
        check_arguments(argv[1:])
    chunks = [argv[1:]] if len(argv) > 1 else read_chunks(sys.stdin.buffer)
    scorer = Scorer(_MODEL_DIR.value, _REFERENCE.value)
    width, scored = None, 0
    try:
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
    except BrokenPipeError:
        raise
    except OSError as error:  # e.g. >/dev/full
        raise OutputError(f"cannot write the output: {error.strerror or error}") from None
    return 0


def run() -> None:
    """The command line: `python score.py ...` (or `python -m tasks.counter.score ...`)."""
    cli.run_main(main, flags_parser=split_flags, takes_arguments=True, writes_output=True)


if __name__ == "__main__":
    run()
