"""The counter's goal: the check split of long fresh sequences, stopping at the goal, and restarts the
task asks for. A counter written by hand (below) is exact at any length, so what the check split
finds is known here without training."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import counter_settings

from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving.export import load_model
from diy_lstm.training import run
from diy_lstm.training.config import RestartConfig, TrainingConfig
from diy_lstm.training.task import VALIDATION
from tasks.counter import data_generator as dg
from tasks.counter import long_check
from tasks.counter.task import CHECK, CounterData, CounterTask

PLUS, MINUS, INVERT = 0, 1, 2  # input features: `+` = [1, 0, 0], `-` = [0, 1, 0], `I` = [0, 0, 1]
PARITY, PLUS_NORMAL, MINUS_INVERTED, PLUS_INVERTED, MINUS_NORMAL = range(5)  # the units


def hand_built_counter() -> LSTMModel:
    """An LSTM of 5 units with hard-sigmoid gates, every preactivation at least 6 beyond the gates'
    saturation at ±3, so each gate is exactly 0 or 1 and the cell states are whole numbers:

      PARITY         c = 1 after an odd number of `I`s, else 0 (forget and write on `I` only, writing
                     only when c was 0); its h = tanh(c) is the only state fed back
      PLUS_NORMAL    counts the `+` read while c_PARITY = 0 (input gate: `+` and not inverted), and so on
      readout        c_PLUS_NORMAL + c_MINUS_INVERTED - c_PLUS_INVERTED - c_MINUS_NORMAL, the running sum
    """
    model = LSTMModel(ModelConfig(input_size=3, units=5, readout="cell", recurrent_activation="hard_sigmoid"))
    rows = 3 + 5  # [x_t, h_{t-1}]
    weights = {gate: np.zeros([rows, 5], np.float32) for gate in "figo"}
    biases = {gate: np.zeros(5, np.float32) for gate in "figo"}
    inverted = 3 + PARITY  # the row of h_PARITY, which is 0 or tanh(1)
    per_inverted = 12.0 / np.tanh(1.0)  # 12 when inverted
    biases["f"][:] = 9.0  # counters never forget
    weights["f"][INVERT, PARITY], biases["f"][PARITY] = -18.0, 9.0  # the parity forgets on `I`
    weights["i"][INVERT, PARITY], weights["i"][inverted, PARITY], biases["i"][PARITY] = 18.0, -per_inverted * 1.5, -9.0
    for unit, character, when_inverted in (
        (PLUS_NORMAL, PLUS, False),
        (MINUS_INVERTED, MINUS, True),
        (PLUS_INVERTED, PLUS, True),
        (MINUS_NORMAL, MINUS, False),
    ):
        weights["i"][character, unit] = 18.0
        weights["i"][inverted, unit] = per_inverted * 1.5 * (1.0 if when_inverted else -1.0)
        biases["i"][unit] = -27.0 if when_inverted else -9.0
    biases["g"][:] = 20.0  # tanh(20) is 1.0 in float32: every write adds exactly 1
    biases["o"][:] = -9.0
    biases["o"][PARITY] = 9.0  # only the parity is seen by the next step
    layer = model.layers[0]
    for gate in "figo":
        getattr(layer, f"W_{gate}").assign(weights[gate])
        getattr(layer, f"b_{gate}").assign(biases[gate])
    model.W_out.assign(np.array([[0.0], [1.0], [1.0], [-1.0], [-1.0]], np.float32))
    model.b_out.assign([0.0])
    return model


def prepared_task(**data) -> CounterTask:
    task = CounterTask(CounterData(**{"check_length": 3000, "check_sequences": 20, **data}))
    task.prepare(TrainingConfig(epochs=1, batch_size=128))
    return task


def test_the_hand_built_counter_is_exact_far_beyond_any_training_length():
    task = prepared_task()
    metrics = task.evaluate(hand_built_counter())
    assert metrics[VALIDATION]["error_per_step"] == 0.0 and metrics[CHECK]["error_per_step"] == 0.0
    assert metrics[CHECK]["largest_miss"] == 0.0  # whole numbers, exactly
    assert task.goal_reached(metrics) and task.not_learned(metrics) is None
    assert task.validated_exact_up_to(metrics) == 3000
    assert task.progress(metrics)["check_3000_error_per_step"] == "0.000%"


def test_the_check_split_waits_for_an_exact_validation_and_a_try_without_it_has_not_learned():
    task = prepared_task()
    untrained = LSTMModel(ModelConfig(input_size=3, units=5, readout="cell"))
    metrics = task.evaluate(untrained)
    assert metrics[VALIDATION]["error_per_step"] > 0 and CHECK not in metrics
    assert task.progress(metrics)["check_3000_error_per_step"] == "-"
    assert not task.goal_reached(metrics) and task.validated_exact_up_to(metrics) == 0
    assert task.not_learned(metrics)[0] == "check not scored"


def test_a_counter_that_drifts_past_the_training_lengths_fails_the_check_and_is_not_learned():
    """A readout weight 0.3% off is right on every validation sequence (|sum| <= 6) and wrong once
    a count passes about 170: the check split names it."""
    model = hand_built_counter()
    model.W_out.assign(model.W_out.numpy() * np.array([[1], [1.003], [1], [1], [1]], np.float32))
    task = prepared_task()
    metrics = task.evaluate(model)
    assert metrics[VALIDATION]["error_per_step"] == 0.0 and metrics[CHECK]["error_per_step"] > 0.0
    assert not task.goal_reached(metrics) and task.validated_exact_up_to(metrics) == 6
    measured, reason = task.not_learned(metrics)
    assert measured.startswith("check error_per_step") and "of length 3000 are wrong" in reason


def test_the_readout_fit_mends_that_drift_for_the_check_and_leaves_the_trained_readout_in_place():
    model = hand_built_counter()
    drifted = model.W_out.numpy() * np.array([[1], [1.003], [1], [1], [1]], np.float32)
    model.W_out.assign(drifted)
    task = prepared_task(readout_fit_length=400, readout_fit_sequences=20)
    metrics = task.evaluate(model)
    assert metrics[CHECK]["error_per_step"] == 0.0 and task.goal_reached(metrics)  # scored as `finish` leaves it
    np.testing.assert_array_equal(model.W_out.numpy(), drifted)  # training goes on with its own readout
    assert "readout refitted on 27 sequences of length 400" in task.finish(model).description
    np.testing.assert_allclose(model.W_out.numpy()[:, 0], [0, 1, 1, -1, -1], atol=1e-6)


def test_the_long_check_passes_the_exact_counter_to_its_largest_sums_and_says_how_large():
    task = prepared_task(long_check_length=20_000)
    metrics = task.evaluate(hand_built_counter())
    assert metrics[CHECK]["long_wrong_cases"] == 0.0 and metrics[CHECK]["long_largest_miss"] == 0.0
    assert task.goal_reached(metrics)
    assert task.validated_exact_up_to(metrics) == 20_000 and task.validated_exact_sum(metrics) == 20_000
    assert task.progress(metrics)["long_check_wrong"] == f"0/{len(long_check.CASES)}"


def test_a_counter_whose_gain_is_off_by_two_in_100000_passes_the_check_split_and_fails_the_long_check():
    """Off by 2e-5, a count is 0.06 off at |sum| 3,000 (every step of the check split right) and
    0.4 off at 20,000: the long check's runs find it, and the goal does not hold."""
    model = hand_built_counter()
    model.W_out.assign(model.W_out.numpy() * np.array([[1], [1.00002], [1], [1], [1]], np.float32))
    task = prepared_task(long_check_length=20_000)
    metrics = task.evaluate(model)
    assert metrics[CHECK]["error_per_step"] == 0.0 and metrics[CHECK]["long_wrong_cases"] >= 1
    assert not task.goal_reached(metrics)
    assert task.validated_exact_up_to(metrics) == 3000 and task.validated_exact_sum(metrics) < 20_000
    assert task.not_learned(metrics)[0].startswith("long check wrong cases")


def test_the_long_check_finds_each_wrong_step_against_sums_counted_by_hand():
    """The unit that counts the `+` read while not inverted, read with a gain of 0.9993, leaves the
    prediction 0.0007 short per such `+`: the first wrong step is where 358 of them have been read
    (0.2506 >= the margin of 0.25), counted here character by character."""
    model = hand_built_counter()
    model.W_out.assign(model.W_out.numpy() * np.array([[1], [0.9993], [1], [1], [1]], np.float32))
    ids = long_check.cases(5000, seed=3)
    for name, case, result in zip(long_check.CASES, ids, long_check.run_check(model, ids)):
        total, sign, normal_plus, largest, first_wrong = 0, 1, 0, 0, 0
        for step, character in enumerate(dg.ALPHABET[i] for i in case):
            if character == "I":
                sign = -sign
            total += {"+": sign, "-": -sign}.get(character, 0)
            normal_plus += character == "+" and sign == 1
            largest = max(largest, abs(total))
            if normal_plus >= 358 and not first_wrong:
                first_wrong = step + 1
        assert (result.first_wrong_step, result.largest_sum) == (first_wrong, largest), name


def test_an_evaluation_that_is_not_thorough_leaves_the_check_out_and_cannot_reach_the_goal():
    task = prepared_task(long_check_length=2_000)
    quick, thorough = task.evaluate(hand_built_counter(), thorough=False), task.evaluate(hand_built_counter())
    assert CHECK not in quick and quick[VALIDATION] == thorough[VALIDATION]
    assert not task.goal_reached(quick) and task.goal_reached(thorough)


class RecordsThoroughness(CounterTask):
    thorough_at: list

    def evaluate(self, model, thorough=True, finished=None):
        self.thorough_at = getattr(self, "thorough_at", []) + [thorough]
        return super().evaluate(model, thorough, finished)


def test_evaluations_are_thorough_every_check_every_epochs_and_at_the_last(tmp_path):
    settings = counter_settings(str(tmp_path), "t", units=4, epochs=7, run_options={"eval_every": 1, "check_every": 3})
    task = RecordsThoroughness(settings.data)
    run.train(settings, task)
    assert task.thorough_at[:7] == [False, False, True, False, False, True, True]  # epochs 1..7, then the export's


class GoalAtEvaluation(CounterTask):
    """The counter task whose goal holds from its `at`-th evaluation on (counted here)."""

    def __init__(self, data: CounterData, at: int):
        super().__init__(data)
        self.evaluations, self.at = 0, at

    def evaluate(self, model, thorough=True, finished=None):
        self.evaluations += 1
        return super().evaluate(model, thorough, finished)

    def goal_reached(self, metrics):
        return self.evaluations >= self.at


def test_a_run_stops_at_its_goal_exports_and_a_rerun_trains_nothing_more(tmp_path, capsys):
    settings = counter_settings(
        str(tmp_path),
        "goal",
        units=4,
        epochs=40,
        stop_at_goal=True,
        run_options={"eval_every": 2, "checkpoint_every": 100},
    )
    result = run.train(settings, GoalAtEvaluation(settings.data, at=2))
    assert result.outcome == run.COMPLETED and result.stopped_at_goal and result.completed_epochs == 4
    assert result.goal_reached.epoch == 4 and os.path.isdir(result.export_dir)
    assert tf.train.latest_checkpoint(os.path.join(result.run_dir, "checkpoints")).endswith("ckpt-4")
    printed = capsys.readouterr().out
    assert "interrupted" not in printed
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("epoch")] == ["2/40", "4/40"]
    saved = json.load(open(os.path.join(result.run_dir, "results.json")))
    assert saved["completed_epochs"] == 4 and saved["stopped_at_goal"]

    again = run.train(settings, GoalAtEvaluation(settings.data, at=2))
    assert again.outcome == run.COMPLETED and again.resumed_from_epoch == 4 and again.completed_epochs == 4
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]


class GoalOfItsWeights(GoalAtEvaluation):
    """Its goal holds from the `at`-th evaluation on, and only for the weights it first held for:
    any change the finishing steps make loses it."""

    goal_weights = None

    def evaluate(self, model, thorough=True, finished=None):
        self.weights = [variable.numpy() for variable in model.trainable_variables if variable.name != "W_out:0"]
        return super().evaluate(model, thorough, finished)

    def goal_reached(self, metrics):
        if self.evaluations < self.at:
            return False
        if self.goal_weights is None:
            self.goal_weights = self.weights
        return all(np.array_equal(a, b) for a, b in zip(self.weights, self.goal_weights))


def test_a_try_whose_finishing_steps_lose_its_goal_exports_the_model_of_the_goal(tmp_path, capsys):
    data = CounterData(finishing_steps=3, finishing_length=12, finishing_batch_size=4, finishing_learning_rate=0.5)
    settings = counter_settings(
        str(tmp_path), "back", units=4, epochs=40, stop_at_goal=True, data=data, run_options={"eval_every": 2}
    )
    task = GoalOfItsWeights(settings.data, at=2)
    result = run.train(settings, task)
    assert result.stopped_at_goal and result.completed_epochs == 4
    assert "the finishing steps lost the goal" in capsys.readouterr().out
    exported = load_model(result.export_dir)
    checkpoint = LSTMModel(settings.model)
    tf.train.Checkpoint(model=checkpoint).read(
        tf.train.latest_checkpoint(os.path.join(result.run_dir, "checkpoints"))
    ).expect_partial()
    for kept, at_goal in zip(exported.trainable_variables, checkpoint.trainable_variables):
        np.testing.assert_array_equal(kept.numpy(), at_goal.numpy(), err_msg=at_goal.name)


class CheckNeverExact(CounterTask):
    """The counter task whose own restart measure always finds the try not learned."""

    def not_learned(self, metrics):
        return "check error_per_step 0.5", "half of the check steps are wrong"


def test_a_try_the_task_finds_not_learned_starts_over_as_the_next_seed(tmp_path, capsys):
    base = counter_settings(str(tmp_path), "r", units=4, epochs=4, run_options={"eval_every": 1})
    restart = RestartConfig(epoch=2, above=(("error", 1.0),), max_restarts=1)  # a bound never passed
    settings = dataclasses.replace(base, run=dataclasses.replace(base.run, restart=restart))
    result = run.train(settings, CheckNeverExact(settings.data))
    assert result.seed == 1 and [given_up.seed for given_up in result.restarts] == [0]
    assert result.restarts[0].reason == "half of the check steps are wrong"
    assert "epoch 2: half of the check steps are wrong: seed 0 given up" in capsys.readouterr().out


def test_the_hand_built_counter_against_sums_counted_here():
    from tasks.counter import data_generator

    sequences = ["+" * 2500, ("I" + "-" * 2000 + "I+").ljust(2500, "0"), "+-I0" * 625]
    sums = []
    for sequence in sequences:
        total, sign, running = 0, 1, []
        for character in sequence:
            sign = -sign if character == "I" else sign
            total += {"+": sign, "-": -sign}.get(character, 0)
            running.append(total)
        sums.append(running)
    model = hand_built_counter()
    inputs = np.stack([data_generator.encode_sequence(sequence) for sequence in sequences])
    predictions = tf.function(model.__call__)(inputs).numpy()[..., 0]  # [3, 2500]
    np.testing.assert_array_equal(predictions, sums)
    assert predictions[0, -1] == 2500 and predictions[1, -1] == 2000 + 1  # `-` counts up while inverted


def test_the_finishing_steps_are_fresh_long_sequences_the_same_for_a_seed():
    task = prepared_task(finishing_steps=3, finishing_length=40, finishing_batch_size=6)
    finishing = task.finishing_steps()
    assert finishing.steps == 3 and finishing.learning_rate == 0.005
    batches = list(finishing.batches())
    assert len(batches) == 3 and [len(inputs) for inputs, _, _ in batches] == [6, 6, 6]
    from tasks.counter import data_generator

    for inputs, sums, lengths in batches:
        assert inputs.shape == (6, 40, 3) and list(lengths) == [40] * 6
        for row, running in zip(inputs, sums):
            sequence = data_generator.decode_sequence(row)
            total, sign, by_hand = 0, 1, []
            for character in sequence:
                sign = -sign if character == "I" else sign
                total += {"+": sign, "-": -sign}.get(character, 0)
                by_hand.append(total)
            np.testing.assert_array_equal(running, by_hand)
    assert not np.array_equal(batches[0][0], batches[1][0])  # each step its own sequences
    again = list(finishing.batches())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))  # and the same ones every time
    assert prepared_task().finishing_steps() is None


@pytest.mark.slow
def test_finishing_steps_change_the_export_not_the_checkpoint_and_a_rerun_exports_the_same(tmp_path, capsys):
    data = CounterData(finishing_steps=4, finishing_length=30, finishing_batch_size=8)
    settings = counter_settings(str(tmp_path), "finished", units=4, data=data, epochs=3)
    result = run.train(settings, CounterTask(data))
    assert "finishing steps: 4 on 8 fresh sequences of length 30 at learning rate 0.005" in capsys.readouterr().out
    checkpointed = LSTMModel(settings.model)
    tf.train.Checkpoint(model=checkpointed).restore(
        tf.train.latest_checkpoint(os.path.join(result.run_dir, "checkpoints"))
    ).expect_partial()
    exported = tf.saved_model.load(result.export_dir).model.layers[0].W_f.numpy()
    assert np.abs(exported - checkpointed.layers[0].W_f.numpy()).max() > 1e-4  # the steps moved the weights

    rerun = run.train(settings, CounterTask(data))  # nothing left to train: the same finish, the same export
    assert rerun.resumed_from_epoch == 3
    np.testing.assert_array_equal(tf.saved_model.load(rerun.export_dir).model.layers[0].W_f.numpy(), exported)


def test_a_text_run_stops_at_its_goal_exports_and_records_it(tmp_path, capsys):
    from diy_lstm.model import ModelConfig
    from diy_lstm.training.config import RunConfig, RunSettings, TrainingConfig
    from tasks.text.task import TextData, TextTask

    data = TextData(corpus="fox_and_crow", validation_fraction=0.0, unroll_length=20, goal_bits_per_char=100.0)
    task = TextTask(data)
    size = len(task.vocabulary)
    settings = RunSettings(
        TextTask.name,
        ModelConfig(input_size=size, units=4, output_size=size),
        data,
        TrainingConfig(epochs=40, batch_size=2, stop_at_goal=True, jit_compile="false"),
        RunConfig(
            logdir=str(tmp_path),
            run_name="r",
            eval_every=2,
            checkpoint_every=100,
            image_every=0,
            histogram_every=0,
            sample_every=0,
        ),
    )
    result = run.train(settings, task)  # any model is under 100 bits a character: the goal at the first evaluation
    assert result.outcome == run.COMPLETED and result.stopped_at_goal and result.completed_epochs == 2
    assert os.path.exists(os.path.join(result.export_dir, "saved_model.pb"))
    saved = json.load(open(os.path.join(result.run_dir, "results.json")))
    assert saved["stopped_at_goal"] and saved["goal_reached"]["epoch"] == 2 and saved["metrics"]["train"]
    assert "interrupted" not in capsys.readouterr().out
    unreachable = dataclasses.replace(data, goal_bits_per_char=1e-9)
    assert not TextTask(unreachable).goal_reached({"train": {"bits_per_char": 0.5}})
    assert not TextTask(dataclasses.replace(data, goal_bits_per_char=0.0)).goal_reached({"train": {"bits_per_char": 0}})
