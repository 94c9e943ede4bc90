"""evaluate.py and generalization.py: the long-sequence table, checked with scorers whose answers are known."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_python

from tasks.counter import data_generator as dg
from tasks.counter import generalization as evaluate


def signature_from(predict):
    """A stand-in for the SavedModel's serving signature: `predict(sequence) -> per-step predictions`."""

    def signature(sequences):
        texts = [s.decode() for s in sequences.numpy()]
        longest = max(map(len, texts))
        rows = [np.pad(np.asarray(predict(t), dtype=np.float32), (0, longest - len(t))) for t in texts]
        return {"step_predictions": tf.constant(np.stack(rows))}

    return signature


def test_perfect_predictions_score_zero_error():
    row = evaluate.evaluate_length(signature_from(dg.running_sum), length=50, count=40, seed=1, batch_size=16)
    assert row == {"error": 0.0, "error_per_step": 0.0, "mean_square_error": 0.0}


def test_always_zero_predictions_miss_exactly_the_nonzero_sums():
    length, count, seed = 9, 200, 3
    row = evaluate.evaluate_length(signature_from(lambda s: np.zeros(len(s))), length, count, seed, batch_size=64)
    sequences = dg.sample_sequences(length, count, np.random.default_rng([seed, length]))
    sums = np.stack([dg.running_sum(s) for s in sequences])
    assert row["error"] == pytest.approx(np.mean(sums[:, -1] != 0))
    assert row["error_per_step"] == pytest.approx(np.mean(sums != 0))
    assert row["mean_square_error"] == pytest.approx(np.mean(sums[:, -1] ** 2))


def test_varied_sampling_scores_the_varied_sequences():
    length, count, seed = 12, 300, 5
    row = evaluate.evaluate_length(signature_from(lambda s: np.zeros(len(s))), length, count, seed, 100, "varied")
    sequences = dg.sample_sequences(length, count, np.random.default_rng([seed, length]), "varied")
    sums = np.stack([dg.running_sum(s) for s in sequences])
    assert row["mean_square_error"] == pytest.approx(np.mean(sums[:, -1] ** 2))
    uniform = evaluate.evaluate_length(signature_from(lambda s: np.zeros(len(s))), length, count, seed, 100)
    assert row["mean_square_error"] > 1.5 * uniform["mean_square_error"]  # varied sums stray further from 0


def test_off_by_one_everywhere_is_all_wrong():
    row = evaluate.evaluate_length(signature_from(lambda s: dg.running_sum(s) + 1), 20, 30, 0, 30)
    assert row == {"error": 1.0, "error_per_step": 1.0, "mean_square_error": 1.0}


def test_repeated_patterns_find_the_first_step_a_drift_gets_wrong():
    drift_per_zero = 0.003  # rounds wrong once 0.003 * k > 0.5: at the 167th `0`

    def drifting(sequence):
        zeros_so_far = np.cumsum([character == "0" for character in sequence])
        return dg.running_sum(sequence) + drift_per_zero * zeros_so_far

    rows = evaluate.evaluate_patterns(signature_from(drifting), ["0", "+0", "I-", "++-"], length=400)
    assert rows["0"]["first_wrong_step"] == 167
    assert rows["0"]["last_step_error"] == pytest.approx(400 * drift_per_zero, rel=1e-5)
    assert rows["+0"]["first_wrong_step"] == 2 * 167  # `+0+0…`: the 167th `0` is step 334
    assert rows["I-"] == {"first_wrong_step": None, "last_step_error": 0.0}
    assert rows["++-"] == {"first_wrong_step": None, "last_step_error": 0.0}


@pytest.mark.slow
def test_command_line_table_and_tensorboard(short_run, tmp_path):
    result = run_python(
        [
            "evaluate.py",
            f"--model_dir={short_run['export_dir']}",
            "--lengths=6,30",
            "--sequences=40",
            f"--tensorboard_dir={tmp_path}",
            "--pattern_length=50",
            "--patterns=0,I+",
            "--long_length=300",
        ]
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["length", "sequences"]
    assert [line.split()[0] for line in lines[1:3]] == ["6", "30"]
    assert lines[4].split()[:3] == ["pattern", "repeated", "to"]
    assert [line.split()[:2] for line in lines[5:7]] == [["0", "50"], ["I+", "50"]]
    assert lines[8].split()[:2] == ["case", "steps"] and lines[9].split()[:4] == ["+", "repeated", "300", "300"]
    assert os.listdir(tmp_path / "generalization")
    varied = run_python(
        [
            "evaluate.py",
            f"--model_dir={short_run['export_dir']}",
            "--lengths=6",
            "--sequences=20",
            "--sampling=varied",
            f"--tensorboard_dir={tmp_path}",
        ]
    )
    assert varied.returncode == 0, varied.stderr
    assert os.listdir(tmp_path / "generalization_varied")


@pytest.mark.slow
def test_bad_pattern_names_the_flag(short_run):
    result = run_python(
        ["evaluate.py", f"--model_dir={short_run['export_dir']}", "--pattern_length=10", "--patterns=0,+x"]
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: flag --patterns=['0', '+x']: --patterns must be non-empty sequences over '0+-I', e.g. 0,+,I+"
    ]


@pytest.mark.slow
def test_bad_model_dir_is_one_line(tmp_path):
    result = run_python(["evaluate.py", f"--model_dir={tmp_path}"])
    assert result.returncode == 3 and result.stderr == (
        f"error: --model_dir={tmp_path}: no saved_model.pb there; is this a SavedModel?\n"
    )


def test_the_long_cases_by_band_of_sum_count_each_wrong_step_against_sums_counted_here():
    """The hand-built counter with the `+`-while-not-inverted unit read at a gain of 0.9993: a step is
    wrong (rounded) once 715 such `+` have been read (0.5005 short); counted here by band of |sum|."""
    from test_goal import hand_built_counter

    from tasks.counter import long_check

    model = hand_built_counter()
    model.W_out.assign(model.W_out.numpy() * np.array([[1], [0.9993], [1], [1], [1]], np.float32))
    length, seed = 3000, 11
    results = evaluate.evaluate_long(model, length, seed)
    steps, wrong = np.zeros(len(long_check.BANDS), int), np.zeros(len(long_check.BANDS), int)
    for name, case in zip(long_check.CASES, long_check.cases(length, seed)):
        sums = dg.running_sums(["".join(dg.ALPHABET[i] for i in case)])[0]
        inverted = np.cumsum(case == dg.ALPHABET.index("I")) % 2
        normal_plus = np.cumsum((case == dg.ALPHABET.index("+")) & (inverted == 0))
        missed = normal_plus >= 715
        bands = np.searchsorted(long_check.BAND_LIMITS, np.abs(sums))  # |sum| <= 100 -> 0, ...
        np.add.at(steps, bands, 1)
        np.add.at(wrong, bands, missed)
        first = int(np.argmax(missed)) + 1 if missed.any() else 0
        assert (results[name].first_wrong_step, results[name].wrong_steps) == (first, int(missed.sum())), name
    assert np.sum([r.steps_by_band for r in results.values()], axis=0).tolist() == steps.tolist()
    assert np.sum([r.wrong_by_band for r in results.values()], axis=0).tolist() == wrong.tolist()
    table = evaluate.format_long(results, length)
    assert "+ repeated" in table and "<=10^4" in table and ">10^6" not in table
