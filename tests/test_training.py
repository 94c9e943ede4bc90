"""Losses and metrics ignore padding; the optimizer is Adam; the step, the noise and the schedule; a task
that writes only what the `Task` contract requires."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import counter_settings, train_counter

from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.training import run
from diy_lstm.training.config import RunConfig, RunSettings, TrainingConfig
from diy_lstm.training.optimizer import Adam
from diy_lstm.training.task import TRAIN, VALIDATION, BatchLoss, PlannedBatch, Prepared, Task
from diy_lstm.training.trainer import Trainer
from tasks.counter.task import CounterData, CounterTask, loss_fn, metrics_fn

PREDICTIONS = np.array([[0.4, 1.6, 2.2, 9.0], [-0.6, 0.2, 5.0, 5.0]], dtype=np.float32)
TARGETS = np.array([[0.0, 1.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
LENGTHS = np.array([3, 2], dtype=np.int32)  # the 9.0 and the 5.0s are padding


def test_losses_ignore_padding():
    final = loss_fn(PREDICTIONS, TARGETS, LENGTHS, "final")
    assert float(final.mean) == pytest.approx(((2.2 - 2.0) ** 2 + (0.2 - 0.0) ** 2) / 2) and float(final.count) == 2
    running = loss_fn(PREDICTIONS, TARGETS, LENGTHS, "running")
    real = [0.4**2, 0.6**2, 0.2**2, 0.4**2, 0.2**2]
    assert float(running.mean) == pytest.approx(sum(real) / 5) and float(running.count) == 5
    empty = loss_fn(PREDICTIONS[:0], TARGETS[:0], LENGTHS[:0], "running")  # a replica's empty slice
    assert (float(empty.mean), float(empty.count)) == (0.0, 0.0)


def test_metrics_count_rounded_misses_on_real_steps_only():
    metrics = {k: float(v) for k, v in metrics_fn(PREDICTIONS, TARGETS, LENGTHS).items()}
    # rounded: [0, 2, 2] vs [0, 1, 2]; [-1, 0] vs [-1, 0]
    assert metrics["error"] == 0.0
    assert metrics["error_per_step"] == pytest.approx(1 / 5)
    assert metrics["mean_square_error"] == pytest.approx((0.2**2 + 0.2**2) / 2)


def test_adam_matches_the_textbook_update():
    variable = tf.Variable([1.0, -2.0], dtype=tf.float64)
    optimizer = Adam([variable], learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    theta, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for step, gradient in enumerate([np.array([0.5, -1.0]), np.array([0.3, 2.0]), np.array([-0.1, 0.0])], 1):
        optimizer.apply_gradients([tf.constant(gradient)])
        m = 0.9 * m + 0.1 * gradient
        v = 0.999 * v + 0.001 * gradient**2
        theta = theta - 0.1 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(variable.numpy(), theta, rtol=1e-12)


def test_mixed_length_run_end_to_end(tmp_path, capsys):
    data = CounterData(min_length=2, max_length=5)
    result = train_counter(
        counter_settings(
            str(tmp_path), "mixed", units=6, data=data, epochs=3, batch_size=64, run_options={"eval_every": 1}
        )
    )
    assert result.outcome == run.COMPLETED and result.completed_epochs == 3
    printed = capsys.readouterr().out
    assert "lengths 2..5" in printed
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("epoch")] == ["1/3", "2/3", "3/3"]
    # Every validation sequence counted once: the error is a whole number of the 12 + 48 + 192 + 768 sequences.
    misses = result.metrics["validation"]["error"] * sum(4**length - round(4**length * 0.25) for length in range(2, 6))
    assert abs(misses - round(misses)) < 1e-3


@pytest.mark.parametrize("distribution", ["normal", "table"])
def test_preactivation_noise_is_seeded_per_step_and_never_used_to_evaluate_or_in_noise_free_steps(distribution):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(16, 7, 3)).astype(np.float32)
    targets = np.cumsum(rng.integers(-1, 2, size=(16, 7)), axis=1).astype(np.float32)
    lengths = np.full(16, 7, np.int32)
    task = CounterTask(CounterData(target="running"))
    task.prepare(TrainingConfig(epochs=1, batch_size=16))

    def losses(noise, seed, steps=3):
        model = LSTMModel(ModelConfig(input_size=3, units=6, seed=1))
        trainer = Trainer(
            model,
            Adam(model.trainable_variables, learning_rate=0.0),
            task.loss,
            preactivation_noise=noise,
            seed=seed,
            noise_distribution=distribution,
        )
        return [float(trainer.train_step(inputs, targets, lengths)["loss"]) for _ in range(steps)], trainer

    clean, _ = losses(0.0, 0)
    noisy, trainer = losses(2.0, 0)
    assert len(set(clean)) == 1  # learning rate 0: the weights never move
    assert len(set(noisy)) == 3 and all(abs(n - clean[0]) > 1e-4 for n in noisy)  # new noise every step
    assert losses(2.0, 0)[0] == noisy  # same seed, same noise
    assert losses(2.0, 1)[0] != noisy
    evaluation = metrics_fn(trainer.model(inputs)[..., 0], targets, lengths)["mean_square_error_per_step"]
    assert float(evaluation) == pytest.approx(clean[0], rel=1e-6)
    noise_free = trainer.noise_free_train_step(inputs, targets, lengths)  # the --noise_free_epochs step
    assert float(noise_free["loss"]) == clean[0]


def test_final_target_reads_out_the_last_step_only_and_gives_the_same_loss():
    """With one length per batch the final-sum loss reads out only the last step: same value as the full readout."""
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(8, 5, 3)).astype(np.float32)
    targets = np.cumsum(rng.integers(-1, 2, size=(8, 5)), axis=1).astype(np.float32)
    lengths = np.full(8, 5, np.int32)
    model = LSTMModel(ModelConfig(input_size=3, units=4, seed=2))
    task = CounterTask(CounterData(target="final"))
    task.prepare(TrainingConfig(epochs=1, batch_size=8))
    assert task.last_step_only
    loss = task.loss(lambda x, **kwargs: model.run(x, **kwargs), (inputs, targets, lengths))
    full = loss_fn(model(inputs)[..., 0], targets, lengths, "final")
    np.testing.assert_allclose(float(loss.mean), float(full.mean), rtol=1e-6)
    by_hand = np.mean((model(inputs).numpy()[:, -1, 0] - targets[:, -1]) ** 2)
    np.testing.assert_allclose(float(loss.mean), by_hand, rtol=1e-6)


def test_learning_rate_schedule_decays_exponentially_from_the_first_to_the_last_epoch():
    config = TrainingConfig(epochs=10, learning_rate=0.1, learning_rate_decay=0.01, noise_free_epochs=3)
    rates = [config.learning_rate_at(epoch) for epoch in range(10)]
    decayed = [0.1 * 0.01 ** (epoch / 9) for epoch in range(10)]  # 0.1 at the first epoch, 0.001 at the last
    np.testing.assert_allclose(rates, decayed, rtol=1e-12)
    assert config.first_noise_free_epoch == 7
    assert TrainingConfig(epochs=1, learning_rate=0.5).learning_rate_at(0) == 0.5


class FirstInputTask(Task):
    """The smallest task: remember the first of ±1 inputs to the end of the sequence. It writes only
    what `Task` marks as required; everything else is the contract's default."""

    name = "first_input"
    metric_names = ("mse", "error")
    steps_per_epoch = 4

    def prepare(self, training: TrainingConfig) -> Prepared:
        rng = np.random.default_rng(training.seed)
        signs = rng.choice([-1.0, 1.0], size=(2, 128, 5, 1)).astype(np.float32)  # [split, batch, time, 1]
        self.splits = {TRAIN: signs[0], VALIDATION: signs[1]}
        return Prepared("128 training / 128 validation sequences of 5 signs", {"seed": training.seed})

    def training_batches(self, epochs: range) -> tf.data.Dataset:
        batches = np.split(self.splits[TRAIN], self.steps_per_epoch)
        return tf.data.Dataset.from_tensor_slices(np.stack(batches * len(epochs))).map(lambda x: (x,))

    def planned_batches(self, training: TrainingConfig) -> list[PlannedBatch]:
        return [PlannedBatch("training", 32, 5, True, ("--batch_size",)), PlannedBatch("split", 128, 5, False, ())]

    def loss(self, run_model, batch) -> BatchLoss:
        (inputs,) = batch
        error = run_model(inputs).predictions[:, -1, 0] - inputs[:, 0, 0]
        return BatchLoss(tf.reduce_mean(error**2), tf.cast(tf.size(error), tf.float32))

    def evaluate(self, model, thorough=True, finished=None) -> dict[str, dict[str, float]]:
        metrics = {}
        for split, inputs in self.splits.items():
            last = model(inputs).numpy()[:, -1, 0]
            metrics[split] = {
                "mse": float(np.mean((last - inputs[:, 0, 0]) ** 2)),
                "error": float(np.mean(np.sign(last) != inputs[:, 0, 0])),
            }
        return metrics

    def serving_module(self, model, metrics, finished):
        module = tf.Module()
        module.model = model
        module.predict = tf.function(lambda x: model(x)[:, -1, 0], input_signature=[tf.TensorSpec([None, None, 1])])
        return module, {"predict": module.predict}


@pytest.mark.slow
def test_a_task_that_writes_only_the_required_members_trains_and_exports_by_the_contracts_defaults(tmp_path):
    settings = RunSettings(
        "first_input",
        ModelConfig(input_size=1, units=8),
        CounterData(),  # (the run only records a task's data config)
        TrainingConfig(epochs=30, batch_size=32, learning_rate=0.05, preactivation_noise=0.0),
        RunConfig(logdir=str(tmp_path), run_name="mine", eval_every=10, checkpoint_every=30),
    )
    result = run.train(settings, FirstInputTask())
    assert result.outcome == run.COMPLETED and result.metrics[VALIDATION]["error"] == 0.0
    predict = tf.saved_model.load(result.export_dir).signatures["predict"]
    signs = np.array([[[1.0], [-1.0], [-1.0]], [[-1.0], [1.0], [1.0]]], np.float32)  # any length: 3, not 5
    np.testing.assert_array_equal(np.sign(predict(x=tf.constant(signs))["output_0"].numpy()), [1.0, -1.0])
