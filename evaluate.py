"""How well an exported model counts on sequences of many lengths, longer than it was trained on.

    python evaluate.py --model_dir=logs/RUN/saved_model
    python evaluate.py --model_dir=logs/RUN/saved_model --lengths=6,100,1000 --tensorboard_dir=logs/RUN

For every length, `--sequences` fresh random sequences (fixed by `--sample_seed`, the same for every
model) go through the SavedModel's serving signature as raw strings, as a user would score them.
`--sample_distribution=varied` draws harder ones: each sequence with its own character
frequencies, so long runs of one character and sums far from 0 are common.
Prints, per length: the final-sum error (share of sequences whose rounded final prediction misses),
the per-step error (share of all steps whose rounded prediction misses the running sum), and the
mean squared error of the final prediction.

    python evaluate.py --model_dir=logs/RUN/saved_model --pattern_length=10000

also scores each of `--patterns` repeated to `--pattern_length` characters (`0000…`, `I+I+…`) and
prints the first step whose rounded prediction is wrong: random sequences rarely hold long runs of
one character, so a counter can be right on them and still drift on such runs.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import data_generator  # noqa: E402
from diy_lstm.export import LoadError, load_serving_signature  # noqa: E402

DEFAULT_LENGTHS = ["6", "20", "50", "100", "200", "500", "1000"]
DEFAULT_PATTERNS = ["0", "+", "-", "I", "I+", "I-", "+-", "++-", "--+"]

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A SavedModel written by train.py.")
_LENGTHS = flags.DEFINE_list("lengths", DEFAULT_LENGTHS, "Sequence lengths to evaluate, each in 1..100000.")
_SEQUENCES = flags.DEFINE_integer(
    "sequences", 1000, "Random sequences per length.", lower_bound=1, upper_bound=1_000_000)
_SAMPLE_DISTRIBUTION = flags.DEFINE_enum(
    "sample_distribution", "uniform", list(data_generator.SAMPLINGS),
    "uniform: every sequence of a length equally likely; varied: each sequence draws its own character "
    "frequencies (long runs of one character, large sums).")
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 12345, "Fixes the sampled sequences.", lower_bound=0)
_SCORE_BATCH_SIZE = flags.DEFINE_integer("score_batch_size", 500, "Sequences per call to the model.", lower_bound=1)
_PATTERN_LENGTH = flags.DEFINE_integer(
    "pattern_length", 0, "If > 0, also score each of --patterns repeated to this many characters and print the "
    "first step it gets wrong.", lower_bound=0, upper_bound=100_000)
_PATTERNS = flags.DEFINE_list("patterns", DEFAULT_PATTERNS, "Patterns for --pattern_length, e.g. 0,+,I+.")
_TENSORBOARD_DIR = flags.DEFINE_string(
    "tensorboard_dir", None, "If set, also write the table there (scalars at step=length, and a text table).")

flags.register_validator(
    "lengths", lambda values: all(v.strip().isdigit() and 1 <= int(v) <= 100_000 for v in values) and values,
    message="--lengths must be integers in [1, 100000], e.g. 6,20,100")
flags.register_validator(
    "patterns", lambda values: all(v and set(v) <= set(data_generator.ALPHABET) for v in values) and values,
    message=f"--patterns must be non-empty sequences over {data_generator.ALPHABET!r}, e.g. 0,+,I+")


def evaluate_length(
    signature, length: int, count: int, seed: int, batch_size: int, sampling: str = "uniform"
) -> dict[str, float]:
    """Final-sum error, per-step error and final MSE of `count` random sequences of `length`."""
    rng = np.random.default_rng([seed, length])
    sequences = data_generator.sample_sequences(length, count, rng, sampling)
    final_misses = step_misses = 0
    squared_error = 0.0
    for start in range(0, count, batch_size):
        batch = sequences[start : start + batch_size]
        outputs = signature(sequences=tf.constant(batch))
        predictions = outputs["step_predictions"].numpy()  # [batch, length]
        truth = np.stack([data_generator.running_sum(s) for s in batch])
        rounded = np.round(predictions)
        final_misses += int(np.sum(rounded[:, -1] != truth[:, -1]))
        step_misses += int(np.sum(rounded != truth))
        squared_error += float(np.sum((predictions[:, -1] - truth[:, -1]) ** 2))
    return {
        "final_error": final_misses / count,
        "step_error": step_misses / (count * length),
        "final_mse": squared_error / count,
    }


def evaluate(
    signature, lengths: list[int], count: int, seed: int, batch_size: int, sampling: str = "uniform"
) -> dict[int, dict]:
    """`evaluate_length` for every length, in order."""
    return {length: evaluate_length(signature, length, count, seed, batch_size, sampling) for length in lengths}


def evaluate_patterns(signature, patterns: list[str], length: int) -> dict[str, dict]:
    """Each pattern repeated to `length` characters: the first step (1-based) whose rounded prediction
    misses the running sum (None if none does), and the prediction's error at the last step."""
    results = {}
    for pattern in patterns:
        sequence = (pattern * (length // len(pattern) + 1))[:length]
        predictions = signature(sequences=tf.constant([sequence]))["step_predictions"].numpy()[0]  # [length]
        truth = data_generator.running_sum(sequence)
        wrong = np.flatnonzero(np.round(predictions) != truth)
        results[pattern] = {
            "first_wrong_step": int(wrong[0]) + 1 if wrong.size else None,
            "last_step_error": float(predictions[-1] - truth[-1]),
        }
    return results


def format_patterns(results: dict[str, dict], length: int) -> str:
    lines = [f"{'pattern':>7}  {'repeated to':>11}  {'first wrong step':>16}  {'error at the last step':>22}"]
    for pattern, row in results.items():
        first = "none" if row["first_wrong_step"] is None else str(row["first_wrong_step"])
        lines.append(f"{pattern:>7}  {length:>11}  {first:>16}  {row['last_step_error']:>+22.4f}")
    return "\n".join(lines)


def format_table(results: dict[int, dict], count: int) -> str:
    lines = [f"{'length':>7}  {'sequences':>9}  {'final-sum error':>15}  {'per-step error':>14}  {'final mse':>10}"]
    for length, row in results.items():
        lines.append(f"{length:>7}  {count:>9}  {100 * row['final_error']:>14.2f}%  "
                     f"{100 * row['step_error']:>13.3f}%  {row['final_mse']:>10.4f}")
    return "\n".join(lines)


def tensorboard_run(directory: str, sampling: str) -> str:
    """The run the table goes to: `<directory>/generalization`, or `generalization_varied`."""
    return os.path.join(directory, "generalization" if sampling == "uniform" else f"generalization_{sampling}")


def write_tensorboard(run_dir: str, results: dict[int, dict], table: str, pattern_table: str | None) -> None:
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        for length, row in results.items():
            for name, value in row.items():
                tf.summary.scalar(f"generalization/{name}", value, step=length)
        tf.summary.text("generalization/table", "```\n" + table + "\n```", step=0)
        if pattern_table:
            tf.summary.text("generalization/repeated_patterns", "```\n" + pattern_table + "\n```", step=0)
    writer.close()


def main(argv: list[str]) -> int:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    if _MODEL_DIR.value is None:
        print("error: --model_dir is required: the directory of a SavedModel written by train.py", file=sys.stderr)
        return 3
    lengths = [int(v) for v in _LENGTHS.value]
    try:
        _, signature, _ = load_serving_signature(_MODEL_DIR.value)
    except LoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    results = evaluate(signature, lengths, _SEQUENCES.value, _SAMPLE_SEED.value, _SCORE_BATCH_SIZE.value,
                       _SAMPLE_DISTRIBUTION.value)
    table = format_table(results, _SEQUENCES.value)
    print(table)
    pattern_table = None
    if _PATTERN_LENGTH.value:
        pattern_table = format_patterns(
            evaluate_patterns(signature, _PATTERNS.value, _PATTERN_LENGTH.value), _PATTERN_LENGTH.value)
        print()
        print(pattern_table)
    if _TENSORBOARD_DIR.value:
        run_dir = tensorboard_run(_TENSORBOARD_DIR.value, _SAMPLE_DISTRIBUTION.value)
        write_tensorboard(run_dir, results, table, pattern_table)
        print(f"written to {run_dir}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
