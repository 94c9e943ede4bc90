"""The least-squares readout fit (`diy_lstm.readout`) against numpy float64, and the counter's use of it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, counter_settings, run_python, train_counter

from diy_lstm import reference
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.readout import assign_readout, fit_readout
from diy_lstm.serving import litert
from diy_lstm.training import run
from tasks.counter import data_generator as dg
from tasks.counter import defaults
from tasks.counter.task import CounterData, readout_fit_examples


def reference_sources(model: LSTMModel, inputs: np.ndarray) -> np.ndarray:
    """`c` of every step from the numpy float64 LSTM, `[batch, time, units]`."""
    _, records = reference.forward(inputs, reference.params_from_model(model), readout="cell")
    return records[-1]["c"]


@pytest.fixture
def model_and_data():
    model = LSTMModel(ModelConfig(input_size=3, units=5, readout="cell", seed=3, dtype="float64"))
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(7, 12, 3))
    lengths = np.array([12, 3, 12, 8, 1, 12, 5])
    return model, inputs, lengths


def test_recovers_a_readout_that_fits_exactly(model_and_data):
    model, inputs, lengths = model_and_data
    wanted_W, wanted_b = np.arange(1.0, 6.0)[:, None] / 7, np.array([-0.25])
    targets = reference_sources(model, inputs) @ wanted_W + wanted_b  # [batch, time, 1]
    fit = fit_readout(model, inputs, targets, lengths, batch_size=3)
    np.testing.assert_allclose(fit.W_out, wanted_W, atol=1e-9)
    np.testing.assert_allclose(fit.b_out, wanted_b, atol=1e-9)
    assert fit.steps == lengths.sum() and fit.max_error_after < 1e-9 < fit.max_error_before


def test_least_squares_over_real_steps_only(model_and_data):
    model, inputs, lengths = model_and_data
    rng = np.random.default_rng(1)
    targets = rng.normal(size=(7, 12, 1))
    real = np.arange(12)[None, :] < lengths[:, None]
    sources = reference_sources(model, inputs)[real]  # [real steps, units]
    design = np.concatenate([sources, np.ones([len(sources), 1])], axis=1)
    expected, *_ = np.linalg.lstsq(design, targets[real], rcond=None)
    padded_targets = np.where(real[..., None], targets, 1e6)  # what lies past each sequence's end counts nowhere
    fit = fit_readout(model, inputs, padded_targets, lengths)
    np.testing.assert_allclose(np.concatenate([fit.W_out, fit.b_out[None]]), expected, atol=1e-9)
    residual = np.abs(design @ expected - targets[real]).max()
    assert fit.max_error_after == pytest.approx(residual, rel=1e-9)
    assign_readout(model, fit.W_out, fit.b_out)
    predictions = model(inputs).numpy()
    np.testing.assert_allclose(predictions[real], sources @ expected[:-1] + expected[-1], atol=1e-9)


def test_counter_run_exports_the_least_squares_readout(tmp_path):
    """The exported readout is the numpy float64 least-squares fit to the running sums (counted here)
    of the fit's fresh sequences, over the checkpoint's trained LSTM; or, if not kept, the trained one."""
    data = CounterData(readout_fit_length=60, readout_fit_sequences=40)
    settings = counter_settings(str(tmp_path), "refit", data=data, epochs=40)
    result = train_counter(settings)
    assert result.outcome == run.COMPLETED
    trained = LSTMModel(settings.model)
    tf.train.Checkpoint(model=trained).restore(
        tf.train.latest_checkpoint(f"{result.run_dir}/checkpoints")
    ).expect_partial()
    sequences = readout_fit_examples(60, 40, settings.training.seed).sequences
    assert len(sequences) > 40 and "-" * 60 in sequences
    sources = reference_sources(trained, np.stack([dg.encode_sequence(s) for s in sequences])).reshape(-1, 8)
    sums = np.array([running_sum_by_hand(sequence) for sequence in sequences], np.float64).reshape(-1)
    expected, *_ = np.linalg.lstsq(np.concatenate([sources, np.ones([len(sources), 1])], axis=1), sums, rcond=None)
    loaded = tf.saved_model.load(result.export_dir)
    kept = loaded.signatures["about"]()["readout_fit_length"].numpy() == 60
    exported = np.concatenate([loaded.model.W_out.numpy()[:, 0], loaded.model.b_out.numpy()])
    if kept:
        np.testing.assert_allclose(exported, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    else:
        np.testing.assert_array_equal(exported, np.concatenate([trained.W_out.numpy()[:, 0], trained.b_out.numpy()]))


def events_of(directory, tag: str) -> list:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator.Tensors(tag) if tag in accumulator.Tags()["tensors"] else []


def running_sum_by_hand(sequence: str) -> list[int]:
    """The running sum: `+` adds 1, `-` subtracts 1, `0` nothing, `I` flips the meaning of what follows."""
    total, sign, sums = 0, 1, []
    for character in sequence:
        if character == "I":
            sign = -sign
        total += {"+": sign, "-": -sign}.get(character, 0)
        sums.append(total)
    return sums


def printed_by_doc_code(doc: str, starts: str, path: str, replaced_by: str) -> list[str]:
    """The lines the Python block of docs/`doc` that starts with `starts` prints, `path` in it replaced."""
    import contextlib
    import io

    text = open(os.path.join(ROOT, "docs", doc), encoding="utf-8").read()
    start = text.index("```python\n" + starts) + len("```python\n")
    code = text[start : text.index("```", start)].replace(path, replaced_by)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    return printed.getvalue().splitlines()


def replay_of_the_design_doc(export_dir: str) -> list[float]:
    """What docs/design.md's numpy replay of `+I-` prints for its three steps, run on `export_dir`."""
    lines = printed_by_doc_code("design.md", "import numpy as np, tensorflow as tf", "logs/RUN/saved_model", export_dir)
    return [float(line) for line in lines[:3]]


@pytest.mark.slow
def test_the_default_command_counts_fresh_sequences_and_sums_of_100000_exactly(tmp_path):
    """`python train.py --lstm_size=24` as a user runs it (no other flag but where it writes), then its
    SavedModel on fresh sequences up to 100x the training length, uniform and with long runs of one
    character, on a 100,000-step drift and on `+` repeated 100,000 times, against running sums
    counted here."""
    result = run_python(
        [os.path.join(ROOT, "train.py"), "--lstm_size=24", f"--logdir={tmp_path}", "--run_name=default"], timeout=900
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "readout refitted on 207 sequences of length 1000" in result.stdout
    assert "long check: 0 of 16 cases with a wrong step" in result.stdout
    loaded = tf.saved_model.load(str(tmp_path / "default" / "saved_model"))
    about = {name: value.numpy().tolist() for name, value in loaded.signatures["about"]().items()}
    assert about["trained_lengths"] == [20, 20] and about["readout_fit_length"] == 1000
    assert about["validated_exact_up_to"] == 1_000_000 and about["validated_exact_sum"] == 1_000_000
    epochs = int(result.stdout.split("done: the goal at epoch ")[1].split()[0])
    points = {
        (split, tag): len(events_of(tmp_path / "default" / split, tag))
        for split, tag in (
            ("train_steps", "loss"),
            ("train_steps", "error"),
            ("validation_steps", "loss"),
            ("validation_steps", "error"),
            ("validation", "error_per_step"),
            ("check", "error_per_step"),
            ("validation", "gates/++I--0+"),
            ("train", "weights/layer_0/W_f"),
        )
    }  # curves worth viewing: each batch every 10th step, validation every 20th and every epoch, the
    # check every 5th; heat maps every 2nd epoch, histograms every 5th, both at the goal
    train_sequences, _ = defaults.DEFAULT_DATA.split_sizes()  # one length: batches of 128, the last part-full
    steps = epochs * -(-train_sequences // defaults.DEFAULT_TRAINING.batch_size)
    assert points[("train_steps", "loss")] == points[("train_steps", "error")] == steps // 10 >= 50
    assert points[("validation_steps", "loss")] == points[("validation_steps", "error")] == steps // 20 >= 50
    assert points[("validation", "error_per_step")] == epochs and points[("check", "error_per_step")] >= 1
    assert points[("validation", "gates/++I--0+")] == len({*range(2, epochs + 1, 2), epochs})
    assert points[("train", "weights/layer_0/W_f")] == len({*range(5, epochs + 1, 5), epochs})
    score = loaded.signatures["serving_default"]
    replayed = replay_of_the_design_doc(str(tmp_path / "default" / "saved_model"))
    served = score(sequences=tf.constant(["+I-"]))["step_predictions"].numpy()[0]
    np.testing.assert_allclose(replayed, served, atol=1e-3)  # the doc's numpy replay is the model's
    rng = np.random.default_rng(2026)
    for length in (1, 6, 7, 100, 1000, 2000):
        sequences = dg.sample_sequences(length, 50, rng, "uniform") + dg.sample_sequences(length, 50, rng, "varied")
        predictions = score(sequences=tf.constant(sequences))["step_predictions"]
        sums = np.array([running_sum_by_hand(sequence) for sequence in sequences])
        assert np.array_equal(np.round(predictions.numpy()), sums), f"length {length}"
    # 100,000 steps drifting: 80% `+` then, after an `I`, 80% `-` (the sum climbs on), `0` between.
    climb = rng.choice(list("+0-"), size=50_000, p=[0.8, 0.15, 0.05])
    fall = rng.choice(list("-0+"), size=50_000, p=[0.8, 0.15, 0.05])
    for sequence in ("".join(climb) + "I" + "".join(fall)[1:], "+" * 100_000):
        predictions = score(sequences=tf.constant([sequence]))["step_predictions"].numpy()[0]
        sums = running_sum_by_hand(sequence)
        assert abs(sums[-1]) > 50_000
        assert np.array_equal(np.round(predictions), sums), sequence[:10]
    check_its_litert_files(tmp_path / "default", climb)


def check_its_litert_files(run_dir, climb: np.ndarray) -> None:
    """`export_litert.py` on the fresh model: both files pass the command's own check against the
    SavedModel (16 sequences of 10,000 steps), and the step file, looped here in the LiteRT
    interpreter as device code loops it, counts a 20,000-step drift as the running sums by hand do."""
    result = run_python([os.path.join(ROOT, "export_litert.py"), f"--model_dir={run_dir / 'saved_model'}"])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.count("16 sequences of 10,000 steps: 0 steps with another rounded sum") == 2, result.stdout
    with open(run_dir / "litert" / "step.tflite", "rb") as f:
        step = litert.LiteRTModel(f.read())
    sequence = "".join(climb[:10_000]) + "I" + "".join(climb[10_000:19_999])
    predictions = litert.run_steps(step, dg.encode_sequence(sequence)[np.newaxis])[0, :, 0]
    assert np.array_equal(np.round(predictions), running_sum_by_hand(sequence))
    device_loop = printed_by_doc_code("litert.md", "import json, numpy", "logs/RUN/litert", str(run_dir / "litert"))
    assert device_loop == [f"{c} {s}" for c, s in zip("+-I0++", running_sum_by_hand("+-I0++"))]
