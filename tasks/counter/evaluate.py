"""How well an exported model counts on sequences of many lengths, longer than it was trained on.

    python evaluate.py --model_dir=logs/RUN/saved_model         (or python -m tasks.counter.evaluate)
    python evaluate.py --model_dir=logs/RUN/saved_model --lengths=6,100,1000 --tensorboard_dir=logs/RUN

For every length, `--sequences` fresh random sequences (fixed by `--sample_seed`, the same for every
model) go through the SavedModel's serving signature as raw strings, as a user would score them.
`--sampling=varied` draws harder ones: each sequence with its own character
frequencies, so long runs of one character and sums far from 0 are common.
Prints, per length, the metrics training reports (`tasks.counter.task`): `error` (share of sequences
whose rounded final prediction misses the final sum), `error_per_step` (share of all steps whose
rounded prediction misses the running sum) and `mean_square_error` (of the final prediction).

    python evaluate.py --model_dir=logs/RUN/saved_model --pattern_length=10000

also scores each of `--patterns` repeated to `--pattern_length` characters (`0000…`, `I+I+…`) and
prints the first step whose rounded prediction is wrong: random sequences rarely hold long runs of
one character, so a counter can be right on them and still drift on such runs.

    python evaluate.py --model_dir=logs/RUN/saved_model --long_length=1000000

also runs the long check's 16 cases (`tasks/counter/long_check.py`: runs, drifts, patterns, sums to
±1,000,000), drawn from `--sample_seed`, through the export's weights (`load_model`; an XLA-compiled
loop, about 4 s for a million steps on 2 cores, 8 bytes a step held): each case's first wrong step,
and the per-step error by band of |sum| (<=10^2 ... <=10^6).
"""

from __future__ import annotations

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from absl import flags  # noqa: E402

from diy_lstm import files  # noqa: E402
from diy_lstm.cli import main as cli  # noqa: E402
from diy_lstm.cli.errors import ModelError, OutputError, UsageError  # noqa: E402
from diy_lstm.serving.export import LoadError, load_model, load_serving_signature  # noqa: E402
from tasks.counter import data_generator  # noqa: E402
from tasks.counter.generalization import (  # noqa: E402
    evaluate,
    evaluate_long,
    evaluate_patterns,
    format_long,
    format_patterns,
    format_table,
    tensorboard_run,
    write_tensorboard,
)
from tasks.counter.serving import SIGNATURE_INPUTS, about, call_budget  # noqa: E402

MAX_CHARACTERS_HELD = 200_000_000
DEFAULT_LENGTHS = ["6", "20", "50", "100", "200", "500", "1000", "2000", "5000", "10000"]
DEFAULT_PATTERNS = ["0", "+", "-", "I", "I+", "I-", "+-", "++-", "--+"]

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A SavedModel written by train.py.")
_LENGTHS = flags.DEFINE_list("lengths", DEFAULT_LENGTHS, "Sequence lengths to evaluate, each in 1..100000.")
_SEQUENCES = flags.DEFINE_integer(
    "sequences", 200, "Random sequences per length.", lower_bound=1, upper_bound=1_000_000
)
_SAMPLING = flags.DEFINE_enum(
    "sampling",
    "uniform",
    list(data_generator.SAMPLINGS),
    "uniform: every sequence of a length equally likely; varied: each sequence draws its own character "
    "frequencies (long runs of one character, large sums).",
)
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 12345, "Fixes the sampled sequences.", lower_bound=0)
_SCORE_BATCH_SIZE = flags.DEFINE_integer(
    "score_batch_size",
    500,
    "Sequences per call to the model (fewer where the model's padded budget says so).",
    lower_bound=1,
    upper_bound=100_000,
)
_PATTERN_LENGTH = flags.DEFINE_integer(
    "pattern_length",
    0,
    "If > 0, also score each of --patterns repeated to this many characters and print the first step it gets wrong.",
    lower_bound=0,
    upper_bound=100_000,
)
_LONG_LENGTH = flags.DEFINE_integer(
    "long_length",
    0,
    "If > 0, also run the long check's cases of this many steps and report them by |sum|.",
    lower_bound=0,
    upper_bound=2_000_000,
)
_PATTERNS = flags.DEFINE_list("patterns", DEFAULT_PATTERNS, "Patterns for --pattern_length, e.g. 0,+,I+.")
_TENSORBOARD_DIR = flags.DEFINE_string(
    "tensorboard_dir", None, "If set, also write the table there (scalars at step=length, and a text table)."
)

flags.register_validator(
    "lengths",
    lambda values: (
        bool(values) and all(v.strip().isascii() and v.strip().isdigit() and 1 <= int(v) <= 100_000 for v in values)
    ),
    message="--lengths must be integers in [1, 100000], e.g. 6,20,100",
)
flags.register_validator(
    "patterns",
    lambda values: all(v and set(v) <= set(data_generator.ALPHABET) for v in values) and values,
    message=f"--patterns must be non-empty sequences over {data_generator.ALPHABET!r}, e.g. 0,+,I+",
)


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        raise UsageError("--model_dir is required: the directory of a SavedModel written by train.py")
    lengths = [int(v) for v in _LENGTHS.value]
    held = _SEQUENCES.value * max(lengths)  # one length's sequences are held at once
    if held > MAX_CHARACTERS_HELD:
        raise UsageError(
            f"--sequences={_SEQUENCES.value} of length {max(lengths)} would hold {held:,} characters in "
            f"memory; at most {MAX_CHARACTERS_HELD:,}: lower --sequences or --lengths"
        )
    if _TENSORBOARD_DIR.value and (because := files.unwritable_because(_TENSORBOARD_DIR.value)) is not None:
        raise UsageError(f"--tensorboard_dir={_TENSORBOARD_DIR.value}: {because}")  # before the evaluation
    try:
        loaded, signature, metadata = load_serving_signature(
            _MODEL_DIR.value, "serving_default", SIGNATURE_INPUTS["serving_default"]
        )
    except LoadError as error:
        raise ModelError(str(error)) from None
    limit = call_budget(about(loaded), metadata)
    results = evaluate(
        signature,
        lengths,
        _SEQUENCES.value,
        _SAMPLE_SEED.value,
        min(_SCORE_BATCH_SIZE.value, limit.sequences),
        _SAMPLING.value,
        limit.padded_characters,
    )
    table = format_table(results, _SEQUENCES.value)
    print(table)
    pattern_table = None
    if _PATTERN_LENGTH.value:
        pattern_table = format_patterns(
            evaluate_patterns(signature, _PATTERNS.value, _PATTERN_LENGTH.value), _PATTERN_LENGTH.value
        )
        print()
        print(pattern_table)
    long_table = None
    if _LONG_LENGTH.value:
        long_table = format_long(
            evaluate_long(load_model(_MODEL_DIR.value), _LONG_LENGTH.value, _SAMPLE_SEED.value), _LONG_LENGTH.value
        )
        print()
        print(long_table)
    if _TENSORBOARD_DIR.value:
        run_dir = tensorboard_run(_TENSORBOARD_DIR.value, _SAMPLING.value)
        try:
            write_tensorboard(run_dir, results, table, pattern_table, long_table)
        except (OSError, tf.errors.OpError) as error:  # e.g. a full disk
            raise OutputError(
                f"--tensorboard_dir={_TENSORBOARD_DIR.value}: cannot write: {cli.first_line(error)}"
            ) from None
        print(f"written to {run_dir}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
