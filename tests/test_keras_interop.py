"""Weights copied from and to tf.keras LSTMs give the same predictions; the round trip is exact."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from diy_lstm.keras_interop import (
    gate_weights_from_keras,
    keras_weights_from_gates,
    load_from_keras,
    model_from_keras,
    save_to_keras,
)
from diy_lstm.model import LSTMModel, ModelConfig


def keras2_hard_sigmoid(x):
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def randomize(layers, seed):
    """Every weight random: constant weights could not tell the gates apart."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        for variable in layer.weights:
            variable.assign(rng.normal(scale=0.6, size=variable.shape).astype(np.float32))


def keras_stack(time, features, units, layers, head_units, head_activation=None, **lstm_kwargs):
    inputs = keras.Input((time, features))
    x = inputs
    lstms = []
    for index in range(layers):
        lstm = keras.layers.LSTM(units, return_sequences=index < layers - 1, **lstm_kwargs)
        lstms.append(lstm)
        x = lstm(x)
    dense = keras.layers.Dense(head_units, activation=head_activation)
    return keras.Model(inputs, dense(x)), lstms, dense


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_one_unit_with_softmax_head_matches_keras(unit_forget_bias, measured):
    """The first walk-through: one LSTM unit, Dense(5) + softmax."""
    keras_model, lstms, dense = keras_stack(8, 4, 1, 1, 5, "softmax", unit_forget_bias=unit_forget_bias)
    randomize(lstms + [dense], seed=1)
    ours = model_from_keras(lstms, dense)
    inputs = np.random.default_rng(2).normal(size=(32, 8, 4)).astype(np.float32)
    expected = keras_model.predict(inputs, verbose=0)
    got = tf.nn.softmax(ours(inputs)[:, -1]).numpy()
    assert measured("Keras parity: 1 unit + softmax, float32, abs", np.max(np.abs(got - expected))) <= 1e-6


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_keras_initial_forget_bias_lands_in_b_f(unit_forget_bias):
    _, lstms, _ = keras_stack(3, 3, 6, 1, 1, unit_forget_bias=unit_forget_bias)
    ours = model_from_keras(lstms)
    np.testing.assert_array_equal(ours.layers[0].b_f.numpy(), np.full(6, 1.0 if unit_forget_bias else 0.0))
    for gate in "igo":
        np.testing.assert_array_equal(getattr(ours.layers[0], f"b_{gate}").numpy(), np.zeros(6))


@pytest.mark.parametrize(
    "keras_activation, ours",
    [("hard_sigmoid", "hard_sigmoid"), (keras2_hard_sigmoid, "hard_sigmoid_keras2"), ("sigmoid", "sigmoid")],
    ids=["keras3-hard-sigmoid", "keras2-hard-sigmoid", "sigmoid"],
)
@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_three_stacked_layers_of_ten_match_keras(keras_activation, ours, unit_forget_bias, measured):
    """The second walk-through: 3 x LSTM(10) with a hard sigmoid, then Dense(1)."""
    keras_model, lstms, dense = keras_stack(
        12, 3, 10, 3, 1, recurrent_activation=keras_activation, unit_forget_bias=unit_forget_bias
    )
    randomize(lstms + [dense], seed=3)
    model = model_from_keras(lstms, dense, recurrent_activation=ours)
    inputs = np.random.default_rng(4).normal(size=(16, 12, 3)).astype(np.float32)
    expected = keras_model.predict(inputs, verbose=0)
    got = model(inputs)[:, -1].numpy()
    assert measured("Keras parity: 3 x LSTM(10) + Dense(1), float32, abs", np.max(np.abs(got - expected))) <= 1e-6


def test_round_trip_ours_to_keras_to_ours_is_exact():
    ours = LSTMModel(ModelConfig(input_size=3, units=7, num_layers=2, output_size=2, seed=5))
    rng = np.random.default_rng(6)
    for variable in ours.trainable_variables:
        variable.assign(rng.normal(size=variable.shape))
    keras_model, lstms, dense = keras_stack(5, 3, 7, 2, 2)
    save_to_keras(ours, lstms, dense)
    inputs = rng.normal(size=(4, 5, 3)).astype(np.float32)
    assert np.max(np.abs(keras_model.predict(inputs, verbose=0) - ours(inputs)[:, -1].numpy())) <= 1e-6
    back = LSTMModel(ModelConfig(input_size=3, units=7, num_layers=2, output_size=2, seed=99))
    load_from_keras(back, lstms, dense)
    for a, b in zip(ours.trainable_variables, back.trainable_variables):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_layout_conversion_is_its_own_inverse():
    rng = np.random.default_rng(0)
    kernel, recurrent, bias = rng.normal(size=(3, 20)), rng.normal(size=(5, 20)), rng.normal(size=20)
    weights = gate_weights_from_keras(kernel, recurrent, bias)
    np.testing.assert_array_equal(weights["W_f"][:3], kernel[:, 5:10])  # Keras order i, f, c, o
    np.testing.assert_array_equal(weights["W_o"][3:], recurrent[:, 15:20])
    for original, converted in zip((kernel, recurrent, bias), keras_weights_from_gates(weights, input_dim=3)):
        np.testing.assert_array_equal(original, converted)


def test_shape_mismatches_are_named():
    with pytest.raises(ValueError, match=r"recurrent_kernel has shape \[4, 20\], expected \[5, 20\]"):
        gate_weights_from_keras(np.zeros((3, 20)), np.zeros((4, 20)), np.zeros(20))
    _, lstms, _ = keras_stack(3, 4, 6, 1, 1)
    with pytest.raises(ValueError, match="layer 0 kernel"):
        load_from_keras(LSTMModel(ModelConfig(input_size=3, units=6)), lstms)


def test_a_model_with_peepholes_is_refused_both_ways_as_keras_has_none():
    _, lstms, _ = keras_stack(3, 4, 6, 1, 1)
    model = LSTMModel(ModelConfig(input_size=3, units=6, peephole=True))
    for copy in (load_from_keras, save_to_keras):
        with pytest.raises(ValueError, match="peephole connections"):
            copy(model, lstms)
