"""How well an exported counter counts on sequences of many lengths, longer than it was trained on.

The scoring behind `evaluate.py`, apart from its command line. Every function takes the SavedModel's
serving signature (`sequences: string [batch]` -> `step_predictions [batch, time]`), so it scores
strings as a user would. The metrics are the ones training reports (`tasks.counter.task`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tasks.counter import data_generator, long_check


def evaluate_length(
    signature,
    length: int,
    count: int,
    seed: int,
    batch_size: int,
    sampling: str = "uniform",
    max_padded_characters: int | None = None,
) -> dict[str, float]:
    """`error`, `error_per_step` and `mean_square_error` of `count` random sequences of `length`,
    scored `batch_size` at a time (fewer if `batch_size × length` exceeds `max_padded_characters`)."""
    if max_padded_characters is not None:
        batch_size = max(1, min(batch_size, max_padded_characters // length))
    rng = np.random.default_rng([seed, length])
    sequences = data_generator.sample_sequences(length, count, rng, sampling)
    final_misses = step_misses = 0
    squared_error = 0.0
    for start in range(0, count, batch_size):
        batch = sequences[start : start + batch_size]
        outputs = signature(sequences=tf.constant(batch))
        predictions = outputs["step_predictions"].numpy()  # [batch, length]
        truth = data_generator.running_sums(batch)
        rounded = np.round(predictions)
        final_misses += int(np.sum(rounded[:, -1] != truth[:, -1]))
        step_misses += int(np.sum(rounded != truth))
        squared_error += float(np.sum((predictions[:, -1] - truth[:, -1]) ** 2))
    return {
        "error": final_misses / count,
        "error_per_step": step_misses / (count * length),
        "mean_square_error": squared_error / count,
    }


def evaluate(
    signature,
    lengths: list[int],
    count: int,
    seed: int,
    batch_size: int,
    sampling: str = "uniform",
    max_padded_characters: int | None = None,
) -> dict[int, dict]:
    """`evaluate_length` for every length, in order."""
    return {
        length: evaluate_length(signature, length, count, seed, batch_size, sampling, max_padded_characters)
        for length in lengths
    }


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
    lines = [f"{'length':>7}  {'sequences':>9}  {'error':>8}  {'error_per_step':>14}  {'mean_square_error':>17}"]
    for length, row in results.items():
        lines.append(
            f"{length:>7}  {count:>9}  {100 * row['error']:>7.2f}%  "
            f"{100 * row['error_per_step']:>13.3f}%  {row['mean_square_error']:>17.4f}"
        )
    return "\n".join(lines)


def evaluate_long(model, length: int, seed: int) -> dict[str, long_check.CaseResult]:
    """The long check's cases (`tasks/counter/long_check.py`), `length` steps each, drawn from `seed`,
    run through `model` (an `LSTMModel`: `diy_lstm.serving.export.load_model` of an export); a step
    is wrong where its rounded prediction misses the sum."""
    results = long_check.run_check(model, long_check.cases(length, seed), margin=0.5)
    return dict(zip(long_check.CASES, results))


def format_long(results: dict[str, long_check.CaseResult], length: int) -> str:
    """One line per case (its first wrong step, share of wrong steps, largest |sum|), then the
    per-step error of all cases by band of |sum|."""
    lines = [f"{'case':>24}  {'steps':>9}  {'largest |sum|':>13}  {'first wrong step':>16}  {'error_per_step':>14}"]
    for name, row in results.items():
        first = str(row.first_wrong_step) if row.first_wrong_step else "none"
        lines.append(
            f"{name:>24}  {length:>9}  {row.largest_sum:>13}  {first:>16}  {100 * row.wrong_steps / length:>13.4f}%"
        )
    steps = np.sum([row.steps_by_band for row in results.values()], axis=0)
    wrong = np.sum([row.wrong_by_band for row in results.values()], axis=0)
    lines += ["", f"{'|sum|':>24}  {'steps':>9}  {'wrong steps':>13}  {'error_per_step':>16}"]
    for band, count, missed in zip(long_check.BANDS, steps, wrong):
        if count:
            lines.append(f"{band:>24}  {count:>9}  {missed:>13}  {100 * missed / count:>15.4f}%")
    return "\n".join(lines)


def tensorboard_run(directory: str, sampling: str) -> str:
    """The run the table goes to: `<directory>/generalization`, or `generalization_varied`."""
    return os.path.join(directory, "generalization" if sampling == "uniform" else f"generalization_{sampling}")


def write_tensorboard(
    run_dir: str, results: dict[int, dict], table: str, pattern_table: str | None, long_table: str | None = None
) -> None:
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        for length, row in results.items():
            for name, value in row.items():
                tf.summary.scalar(f"generalization/{name}", value, step=length)
        tf.summary.text("generalization/table", "```\n" + table + "\n```", step=0)
        if pattern_table:
            tf.summary.text("generalization/repeated_patterns", "```\n" + pattern_table + "\n```", step=0)
        if long_table:
            tf.summary.text("generalization/long_check", "```\n" + long_table + "\n```", step=0)
    writer.close()
