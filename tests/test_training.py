"""Losses and metrics ignore padding; the optimizer is Adam; mixed-length training runs end to end."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_train
from diy_lstm.optimizer import Adam
from diy_lstm.training import loss_fn, metrics_fn

PREDICTIONS = np.array([[0.4, 1.6, 2.2, 9.0], [-0.6, 0.2, 5.0, 5.0]], dtype=np.float32)
TARGETS = np.array([[0.0, 1.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
LENGTHS = np.array([3, 2], dtype=np.int32)  # the 9.0 and the 5.0s are padding


def test_losses_ignore_padding():
    final = loss_fn(PREDICTIONS, TARGETS, LENGTHS, "final").numpy()
    assert final == pytest.approx(((2.2 - 2.0) ** 2 + (0.2 - 0.0) ** 2) / 2)
    running = loss_fn(PREDICTIONS, TARGETS, LENGTHS, "running").numpy()
    real = [0.4 ** 2, 0.6 ** 2, 0.2 ** 2, 0.4 ** 2, 0.2 ** 2]
    assert running == pytest.approx(sum(real) / 5)


def test_metrics_count_rounded_misses_on_real_steps_only():
    metrics = {k: float(v) for k, v in metrics_fn(PREDICTIONS, TARGETS, LENGTHS).items()}
    # rounded: [0, 2, 2] vs [0, 1, 2]; [-1, 0] vs [-1, 0]
    assert metrics["error"] == 0.0
    assert metrics["error_per_step"] == pytest.approx(1 / 5)
    assert metrics["mean_square_error"] == pytest.approx((0.2 ** 2 + 0.2 ** 2) / 2)


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


def test_mixed_length_run_end_to_end(tmp_path):
    result = run_train(["--min_length=2", "--max_length=5", "--lstm_size=6", "--epochs=3", "--eval_every=1",
                        "--batch_size=64", "--image_every=0", "--histogram_every=0", "--run_name=mixed"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "lengths 2..5" in result.stdout
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch")] == ["1/3", "2/3", "3/3"]


def test_preactivation_noise_is_seeded_per_step_and_never_used_to_evaluate_or_in_noise_free_steps():
    from diy_lstm.model import LSTMModel, ModelConfig
    from diy_lstm.training import Trainer

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(16, 7, 3)).astype(np.float32)
    targets = np.cumsum(rng.integers(-1, 2, size=(16, 7)), axis=1).astype(np.float32)
    lengths = np.full(16, 7, np.int32)

    def losses(noise, seed, steps=3):
        model = LSTMModel(ModelConfig(input_size=3, units=6, seed=1))
        trainer = Trainer(model, Adam(model.trainable_variables, learning_rate=0.0), "running",
                          preactivation_noise=noise, seed=seed)
        return [float(trainer.train_step(inputs, targets, lengths)) for _ in range(steps)], trainer

    clean, clean_trainer = losses(0.0, 0)
    noisy, trainer = losses(2.0, 0)
    assert len(set(clean)) == 1  # learning rate 0: the weights never move
    assert len(set(noisy)) == 3 and all(abs(n - clean[0]) > 1e-4 for n in noisy)  # new noise every step
    assert losses(2.0, 0)[0] == noisy  # same seed, same noise
    assert losses(2.0, 1)[0] != noisy
    evaluation = trainer.evaluate(inputs, targets, lengths)["mean_square_error_per_step"]
    assert float(evaluation) == pytest.approx(clean[0], rel=1e-6)
    assert float(trainer.noise_free_train_step(inputs, targets, lengths)) == clean[0]  # the --noise_free_epochs step


def test_readout_l1_soft_thresholds_the_readout_after_each_update_and_nothing_else():
    from diy_lstm.model import LSTMModel, ModelConfig
    from diy_lstm.training import Trainer

    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(16, 5, 3)).astype(np.float32)
    targets = np.cumsum(rng.integers(-1, 2, size=(16, 5)), axis=1).astype(np.float32)
    lengths = np.full(16, 5, np.int32)
    learning_rate = 0.05

    def one_step(readout_l1):
        model = LSTMModel(ModelConfig(input_size=3, units=8, seed=2))
        trainer = Trainer(model, Adam(model.trainable_variables, learning_rate=learning_rate), "running",
                          readout_l1=readout_l1)
        trainer.train_step(inputs, targets, lengths)
        return model

    plain = one_step(0.0)
    updated = plain.W_out.numpy().astype(np.float64)
    threshold = float(np.median(np.abs(updated)))  # half the weights end at 0, half move towards it
    penalised = one_step(threshold / learning_rate)
    expected = np.sign(updated) * np.maximum(np.abs(updated) - threshold, 0.0)
    assert (expected == 0).sum() >= 4 and (expected != 0).sum() >= 3
    np.testing.assert_allclose(penalised.W_out.numpy(), expected, rtol=0, atol=1e-6)
    assert (penalised.W_out.numpy()[expected == 0] == 0).all()  # exactly 0, not merely small
    for before, after in zip(plain.trainable_variables, penalised.trainable_variables):
        if before.name != plain.W_out.name:
            np.testing.assert_array_equal(before.numpy(), after.numpy())


def test_readout_l1_epochs_penalise_only_the_last_epochs(tmp_path):
    """With --readout_l1_epochs=1 of 2, epoch 1 trains exactly as without the penalty; after epoch 2
    the readout has weights at exactly 0 where the run without it has none."""
    common = ["--lstm_size=8", "--epochs=2", "--eval_every=1", "--checkpoint_every=1", "--image_every=0",
              "--histogram_every=0"]
    for name, extra in (("plain", []), ("l1", ["--readout_l1=1", "--readout_l1_epochs=1"])):
        result = run_train([*common, *extra, f"--run_name={name}"], str(tmp_path))
        assert result.returncode == 0, result.stderr

    def readout(run, epoch):
        reader = tf.train.load_checkpoint(str(tmp_path / run / "checkpoints" / f"ckpt-{epoch}"))
        (key,) = [k for k in reader.get_variable_to_shape_map() if k.startswith("model/W_out/")]
        return reader.get_tensor(key)

    np.testing.assert_array_equal(readout("l1", 1), readout("plain", 1))
    plain, penalised = readout("plain", 2), readout("l1", 2)
    assert (plain == 0).sum() == 0 and (penalised == 0).sum() >= 1
    assert np.abs(penalised).sum() < 0.8 * np.abs(plain).sum()


def test_noise_free_sampling_swaps_the_training_set_for_the_noise_free_epochs_only(tmp_path):
    """Length 8 with 256 sequences is sampled. With --noise_free_sampling=varied, the noisy epoch trains
    exactly as without it, and noise-free epochs train exactly as a run with --sampling=varied does."""
    common = ["--sequence_length=8", "--max_sequences_per_length=256", "--lstm_size=4", "--epochs=2",
              "--eval_every=1", "--checkpoint_every=1", "--image_every=0", "--histogram_every=0"]
    runs = {
        "uniform": ["--noise_free_epochs=1"],
        "finish_varied": ["--noise_free_epochs=1", "--noise_free_sampling=varied"],
        "all_noise_free_varied": ["--noise_free_epochs=2", "--noise_free_sampling=varied"],
        "varied": ["--noise_free_epochs=2", "--sampling=varied"],
    }
    for name, extra in runs.items():
        result = run_train([*common, *extra, f"--run_name={name}"], str(tmp_path))
        assert result.returncode == 0, result.stderr

    def weights(run, epoch):
        reader = tf.train.load_checkpoint(str(tmp_path / run / "checkpoints" / f"ckpt-{epoch}"))
        return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if key.startswith("model/")}

    def assert_same(a, b):
        assert a.keys() == b.keys() and len(a) >= 10
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    assert_same(weights("finish_varied", 1), weights("uniform", 1))
    assert not np.array_equal(weights("finish_varied", 2)["model/W_out/.ATTRIBUTES/VARIABLE_VALUE"],
                              weights("uniform", 2)["model/W_out/.ATTRIBUTES/VARIABLE_VALUE"])
    assert_same(weights("all_noise_free_varied", 2), weights("varied", 2))


@pytest.mark.parametrize("noise_free_learning_rate", [None, 1e-4])
def test_learning_rate_schedule_and_the_noise_free_learning_rate(noise_free_learning_rate):
    import train

    settings = {"learning_rate": 0.1, "learning_rate_decay": 0.01, "epochs": 10, "noise_free_epochs": 3,
                "noise_free_learning_rate": noise_free_learning_rate}
    rates = [train.learning_rate_at(epoch, settings) for epoch in range(10)]
    decayed = [0.1 * 0.01 ** (epoch / 9) for epoch in range(10)]  # 0.1 at the first epoch, 0.001 at the last
    np.testing.assert_allclose(rates[:7], decayed[:7], rtol=1e-12)
    np.testing.assert_allclose(rates[7:], decayed[7:] if noise_free_learning_rate is None else [1e-4] * 3, rtol=1e-12)
