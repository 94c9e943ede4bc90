"""The TensorFlow model against the hand-written numpy forward and backward passes (float64)."""

import numpy as np
import pytest
import tensorflow as tf

from diy_lstm import reference
from diy_lstm.cell import parameter_names
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.training.trainer import gaussian_gate_noise, noise_table


def relative_difference(ours, expected):
    """Largest absolute difference over the largest absolute expected entry."""
    return float(np.max(np.abs(np.asarray(ours) - expected)) / max(np.max(np.abs(expected)), 1e-300))


def randomized_model(seed, readout="hidden", **config):
    """A float64 model whose every variable (biases included) is drawn at random."""
    model = LSTMModel(
        ModelConfig(input_size=config.pop("input_size", 3), dtype="float64", readout=readout, seed=seed, **config)
    )
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.5, size=variable.shape))
    return model


CASES = [  # (units, layers, time, activation, readout, peephole)
    (1, 1, 1, "sigmoid", "hidden", False),
    (5, 1, 7, "sigmoid", "cell", False),
    (8, 2, 13, "sigmoid", "hidden", False),
    (3, 3, 20, "hard_sigmoid", "hidden", False),
    (6, 2, 11, "hard_sigmoid_keras2", "cell", False),
    (16, 1, 20, "sigmoid", "hidden", False),
    (4, 1, 2, "hard_sigmoid", "cell", False),
    (5, 1, 7, "sigmoid", "cell", True),
    (3, 2, 11, "hard_sigmoid", "hidden", True),
    (6, 2, 9, "sigmoid", "hidden", True),
]


@pytest.mark.parametrize("units, layers, time, activation, readout, peephole", CASES)
def test_forward_matches_numpy_to_1e_10(units, layers, time, activation, readout, peephole, measured):
    model = randomized_model(
        units + time,
        readout,
        units=units,
        num_layers=layers,
        recurrent_activation=activation,
        output_size=2,
        peephole=peephole,
    )
    inputs = np.random.default_rng(time).normal(size=(5, time, 3))
    expected, records = reference.forward(inputs, reference.params_from_model(model), activation, readout)
    output = model.run(tf.constant(inputs))
    assert measured("forward, float64, relative", relative_difference(output.predictions, expected)) <= 1e-10
    for layer, record in zip(output.layers, records):  # per-step h of every layer
        assert relative_difference(tf.transpose(layer.hidden, [1, 0, 2]), record["h"]) <= 1e-10
    gates = model.gates(tf.constant(inputs))
    for layer_gates, record in zip(gates, records):  # every gate, c and h of every layer
        for name, key in [
            ("input_gate", "i"),
            ("forget_gate", "f"),
            ("candidate", "g"),
            ("output_gate", "o"),
            ("cell", "c"),
            ("hidden", "h"),
        ]:
            assert relative_difference(getattr(layer_gates, name), record[key]) <= 1e-10


@pytest.mark.parametrize("backprop", ["bptt", "autodiff"])
@pytest.mark.parametrize("units, layers, time, activation, readout, peephole", CASES)
def test_gradients_match_hand_written_bptt_to_1e_8(
    units, layers, time, activation, readout, peephole, backprop, measured
):
    model = randomized_model(
        units * 7 + time,
        readout,
        units=units,
        num_layers=layers,
        recurrent_activation=activation,
        output_size=2,
        peephole=peephole,
    )
    model.backprop = backprop
    rng = np.random.default_rng(time)
    inputs = rng.normal(size=(4, time, 3))
    targets = rng.normal(size=(4, time, 2))

    with tf.GradientTape() as tape:
        predictions = model(tf.constant(inputs), training=True)
        loss = 0.5 * tf.reduce_sum((predictions - targets) ** 2)
    tape_gradients = dict(
        zip([v.name for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables))
    )

    params = reference.params_from_model(model)
    numpy_predictions, records = reference.forward(inputs, params, activation, readout)
    numpy_gradients = reference.backward(inputs, params, records, numpy_predictions - targets, activation, readout)
    assert len(numpy_gradients) == len(tape_gradients) == len(parameter_names(peephole)) * layers + 2
    for name, expected in numpy_gradients.items():
        ours = tape_gradients[f"lstm_model/{name}:0"]
        difference = measured(f"gradient vs numpy BPTT ({backprop}), relative", relative_difference(ours, expected))
        assert difference <= 1e-8, name


@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_numpy_backward_against_central_differences(peephole, measured):
    model = randomized_model(3, "hidden", units=2, num_layers=2, output_size=1, peephole=peephole)
    params = reference.params_from_model(model)
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 1))

    def loss():
        predictions, _ = reference.forward(inputs, params)
        return 0.5 * np.sum((predictions - targets) ** 2)

    predictions, records = reference.forward(inputs, params)
    analytic = reference.backward(inputs, params, records, predictions - targets)
    arrays = {"W_out": params.W_out, "b_out": params.b_out}
    for index, layer in enumerate(params.layers):
        for gate in reference.GATES:
            arrays[f"layer_{index}/W_{gate}"] = layer.W[gate]
            arrays[f"layer_{index}/b_{gate}"] = layer.b[gate]
        for gate, value in layer.p.items():
            arrays[f"layer_{index}/p_{gate}"] = value
    assert len(arrays) == len(analytic)  # every parameter checked
    epsilon = 1e-6
    for name, array in arrays.items():
        numeric = np.zeros_like(array)
        for position in np.ndindex(array.shape):
            saved = array[position]
            array[position] = saved + epsilon
            plus = loss()
            array[position] = saved - epsilon
            minus = loss()
            array[position] = saved
            numeric[position] = (plus - minus) / (2 * epsilon)
        assert (
            measured("numpy BPTT vs central differences, relative", relative_difference(analytic[name], numeric))
            <= 1e-6
        ), name


def test_bptt_and_autodiff_agree_in_float32_training_step():
    rng = np.random.default_rng(1)
    inputs, targets = rng.normal(size=(8, 6, 3)).astype(np.float32), rng.normal(size=(8, 6, 1)).astype(np.float32)
    gradients = {}
    for backprop in ("bptt", "autodiff"):
        model = LSTMModel(ModelConfig(input_size=3, units=24, seed=2), backprop=backprop, inline_loops=True)

        @tf.function
        def grads():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(inputs, training=True) - targets) ** 2)
            return tape.gradient(loss, model.trainable_variables)

        gradients[backprop] = [g.numpy() for g in grads()]
    for a, b in zip(gradients["bptt"], gradients["autodiff"]):
        assert relative_difference(a, b) <= 1e-5


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_one_tanh_gates_match_numpy(jit_compile, measured):
    """σ(x) = (1 + tanh(x/2)) / 2: the XLA step's single-tanh gates give the same values and gradients."""
    model = randomized_model(5, "cell", units=6, num_layers=2, output_size=1)
    rng = np.random.default_rng(5)
    inputs, targets = rng.normal(size=(3, 9, 3)), rng.normal(size=(3, 9, 1))

    @tf.function(jit_compile=jit_compile)
    def gradients():
        with tf.GradientTape() as tape:
            predictions = model.run(tf.constant(inputs), training=True, xla=True).predictions
            loss = 0.5 * tf.reduce_sum((predictions - targets) ** 2)
        return predictions, tape.gradient(loss, model.trainable_variables)

    predictions, tape_gradients = gradients()
    params = reference.params_from_model(model)
    expected, records = reference.forward(inputs, params, readout="cell")
    assert measured("one-tanh gates forward, float64, relative", relative_difference(predictions, expected)) <= 1e-10
    numpy_gradients = reference.backward(inputs, params, records, expected - targets, readout="cell")
    by_name = dict(zip([v.name for v in model.trainable_variables], tape_gradients))
    for name, gradient in numpy_gradients.items():
        assert relative_difference(by_name[f"lstm_model/{name}:0"], gradient) <= 1e-8, name


@pytest.mark.parametrize("backprop", ["bptt", "autodiff"])
def test_gradients_with_preactivation_noise_match_numpy(backprop, measured):
    """Training noise enters before the gate nonlinearities; the hand-written backward pass must
    still give the exact gradient of the noisy forward pass."""
    model = randomized_model(11, "cell", units=5, num_layers=2, recurrent_activation="hard_sigmoid", output_size=1)
    model.backprop = backprop
    rng = np.random.default_rng(11)
    inputs, targets = rng.normal(size=(4, 12, 3)), rng.normal(size=(4, 12, 1))
    seed = tf.constant([3, 8], tf.int64)

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            predictions = model.run(
                tf.constant(inputs), training=True, gate_noise=gaussian_gate_noise(1.5, seed)
            ).predictions
            loss = 0.5 * tf.reduce_sum((predictions - targets) ** 2)
        return predictions, tape.gradient(loss, model.trainable_variables)

    predictions, tape_gradients = gradients()
    noise = [np.transpose(gate_noise(12, 4, 5, 1.5, seed, layer, tf.float64), [1, 0, 2]) for layer in (0, 1)]
    params = reference.params_from_model(model)
    expected, records = reference.forward(inputs, params, "hard_sigmoid", "cell", preactivation_noise=noise)
    clean, _ = reference.forward(inputs, params, "hard_sigmoid", "cell")
    assert np.max(np.abs(expected - clean)) > 0.1  # the noise is really there
    assert measured("noisy forward, float64, relative", relative_difference(predictions, expected)) <= 1e-10
    numpy_gradients = reference.backward(inputs, params, records, expected - targets, "hard_sigmoid", "cell")
    by_name = dict(zip([v.name for v in model.trainable_variables], tape_gradients))
    for name, gradient in numpy_gradients.items():
        difference = measured(
            f"noisy gradient vs numpy BPTT ({backprop}), relative",
            relative_difference(by_name[f"lstm_model/{name}:0"], gradient),
        )
        assert difference <= 1e-8, name


def gate_noise(time, batch, units, stddev, seed, layer_index=0, dtype=tf.float32):
    """One layer's noise `[time, batch, 4 * units]`, as the trainer draws it."""
    return gaussian_gate_noise(stddev, seed)(layer_index, tf.constant([time, batch, 4 * units]), dtype).numpy()


def test_gate_noise_statistics_and_streams():
    seed = tf.constant([0, 5], tf.int64)
    noise = gate_noise(50, 64, 8, 2.0, seed)
    assert noise.shape == (50, 64, 32)
    assert abs(noise.std() - 2.0) < 0.05 and abs(noise.mean()) < 0.05  # 102,400 draws: std error ~0.006
    np.testing.assert_array_equal(noise, gate_noise(50, 64, 8, 2.0, seed))  # stateless: repeatable
    other_layer = gate_noise(50, 64, 8, 2.0, seed, layer_index=1)
    other_step = gate_noise(50, 64, 8, 2.0, seed + tf.constant([0, 1], tf.int64))
    for other in (other_layer, other_step):
        assert abs(np.corrcoef(noise.ravel(), other.ravel())[0, 1]) < 0.02


def test_table_noise_is_a_run_of_one_gaussian_table_at_a_random_offset_wrapping_around():
    full = noise_table(seed=3, dtype=tf.float32).numpy().astype(np.float64)  # 4,194,304 values
    assert abs(full.mean()) < 0.002 and abs(full.std() - 1.0) < 0.002  # standard errors 0.0005 and 0.0004
    assert abs(((full - full.mean()) ** 4).mean() / full.var() ** 2 - 3.0) < 0.02  # a Gaussian's kurtosis
    table = noise_table(seed=3, dtype=tf.float32, size=10_000)
    values = table.numpy()
    seed = tf.constant([0, 5], tf.int64)

    def drawn(shape, stddev=2.0, seed=seed, layer_index=0):
        noise = gaussian_gate_noise(stddev, seed, distribution="table", table=table)
        return noise(layer_index, tf.constant(shape), tf.float32).numpy().ravel() / stddev

    def offset(flat):
        (start,) = np.flatnonzero(values == flat[0])
        return start

    small = drawn([5, 4, 8])
    np.testing.assert_array_equal(small, np.take(values, offset(small) + np.arange(small.size), mode="wrap"))
    wrapped = drawn([3, 10, 400])  # 12,000 values from a table of 10,000: around and on
    np.testing.assert_array_equal(wrapped, np.take(values, offset(wrapped) + np.arange(12_000), mode="wrap"))
    np.testing.assert_array_equal(drawn([5, 4, 8]), small)  # stateless: the same seed, the same values
    others = {offset(drawn([5, 4, 8], seed=seed + tf.constant([0, step], tf.int64))) for step in range(1, 6)}
    others.add(offset(drawn([5, 4, 8], layer_index=1)))
    assert offset(small) not in others and len(others) == 6  # each step and layer starts elsewhere
