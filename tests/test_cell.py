"""The cell (diy_lstm/cell.py): its parameters by name, one step worked out by hand, its activations,
and its backward step against TensorFlow's autodiff of the forward step, with and without peepholes."""

import numpy as np
import pytest
import tensorflow as tf

from diy_lstm.cell import (
    PEEPHOLES,
    LSTMCell,
    LSTMState,
    add_weight_gradients,
    backward_weights,
    get_recurrent_activation,
    lstm_step,
    lstm_step_backward,
    parameter_names,
    project_input,
    zero_state,
)
from diy_lstm.model import LSTMModel, ModelConfig


@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("ids", [False, True], ids=["features", "ids"])
def test_the_backward_step_is_the_forward_step_differentiated(peephole, activation, ids):
    """`lstm_step_backward` and `add_weight_gradients` for one step give what `tf.GradientTape` finds by
    differentiating `lstm_step` (float64), for every parameter by name, `h_{t-1}` and `c_{t-1}`."""
    rng = np.random.default_rng(7)
    batch, features, units = 4, 3, 5
    cell = LSTMCell(features, units, recurrent_activation=activation, seed=3, dtype=tf.float64, peephole=peephole)
    for variable in cell.gate_variables().values():  # every parameter away from its start, peepholes too
        variable.assign(rng.normal(scale=0.5, size=variable.shape))
    inputs = (
        tf.constant(rng.integers(0, features, size=batch), tf.int32)
        if ids
        else tf.constant(rng.normal(size=(batch, features)))
    )
    previous = LSTMState(*(tf.constant(rng.normal(size=(batch, units))) for _ in range(2)))
    d_state = LSTMState(*(tf.constant(rng.normal(size=(batch, units))) for _ in range(2)))
    sigma = get_recurrent_activation(activation)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(previous)
        weights = cell.fused_weights()
        gates = lstm_step(project_input(inputs, weights), previous, weights, sigma.function)
        loss = tf.reduce_sum(gates.hidden * d_state.hidden) + tf.reduce_sum(gates.cell * d_state.cell)
    step = lstm_step_backward(d_state, gates, previous, backward_weights(weights), sigma)
    zeros = {name: tf.zeros_like(value) for name, value in weights.items()}
    ours = add_weight_gradients(zeros, inputs, previous, gates.cell, step.dz)
    assert sorted(ours) == sorted(weights)  # a gradient for every weight, by its name
    for name, expected in zip(weights, tape.gradient(loss, list(weights.values()))):
        np.testing.assert_allclose(ours[name], tf.convert_to_tensor(expected), rtol=1e-12, atol=1e-12, err_msg=name)
    for ours_previous, expected in zip(step.d_previous, tape.gradient(loss, list(previous))):
        np.testing.assert_allclose(ours_previous, expected, rtol=1e-12, atol=1e-12)


def test_the_parameters_are_named_once_and_the_cell_makes_exactly_them():
    assert parameter_names() == ("W_i", "b_i", "W_f", "b_f", "W_g", "b_g", "W_o", "b_o")
    assert parameter_names(peephole=True) == parameter_names() + tuple(PEEPHOLES.values())
    for peephole in (False, True):
        cell = LSTMCell(3, 4, peephole=peephole)
        assert tuple(cell.gate_variables()) == parameter_names(peephole)
        assert sorted(v.name.split("/")[-1][:-2] for v in cell.trainable_variables) == sorted(parameter_names(peephole))
    peephole_cell = LSTMCell(3, 4, peephole=True)
    for name in PEEPHOLES.values():  # start at 0: the cell starts as the one without them
        np.testing.assert_array_equal(getattr(peephole_cell, name).numpy(), np.zeros(4))


def test_gate_variables_are_named_and_forget_bias_is_one():
    model = LSTMModel(ModelConfig(input_size=3, units=24))
    names = {v.name for v in model.trainable_variables}
    for gate in "figo":
        assert f"lstm_model/layer_0/W_{gate}:0" in names and f"lstm_model/layer_0/b_{gate}:0" in names
    layer = model.layers[0]
    assert layer.W_f.shape == (3 + 24, 24)
    np.testing.assert_array_equal(layer.b_f.numpy(), np.ones(24))
    for gate in "igo":
        np.testing.assert_array_equal(getattr(layer, f"b_{gate}").numpy(), np.zeros(24))


def test_reference_initializer_statistics():
    weights = LSTMModel(ModelConfig(input_size=3, units=200, seed=5)).layers[0].W_i.numpy()
    assert abs(weights.mean() + 0.2) < 0.005 and 0.07 < weights.std() < 0.1  # truncated at 2 std
    assert weights.min() >= -0.4 - 1e-6 and weights.max() <= 1e-6


def test_same_seed_same_weights_different_seed_different():
    a = LSTMModel(ModelConfig(input_size=3, units=8, seed=3)).layers[0].W_g.numpy()
    b = LSTMModel(ModelConfig(input_size=3, units=8, seed=3)).layers[0].W_g.numpy()
    c = LSTMModel(ModelConfig(input_size=3, units=8, seed=4)).layers[0].W_g.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["sigmoid", "hard_sigmoid", "hard_sigmoid_keras2"])
def test_recurrent_activations_match_their_formulas(name):
    x = np.linspace(-6, 6, 121)
    expected = {
        "sigmoid": 1 / (1 + np.exp(-x)),
        "hard_sigmoid": np.clip(x / 6 + 0.5, 0, 1),
        "hard_sigmoid_keras2": np.clip(0.2 * x + 0.5, 0, 1),
    }[name]
    np.testing.assert_allclose(get_recurrent_activation(name).function(tf.constant(x)).numpy(), expected, atol=1e-15)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="'relu'.*hard_sigmoid"):
        get_recurrent_activation("relu")


def test_state_is_a_named_tuple_of_zeros_in_the_cell_dtype():
    state = LSTMCell(3, 4, dtype=tf.float64).zero_state(2)
    assert isinstance(state, LSTMState) and state.hidden.shape == (2, 4) and state.cell.shape == (2, 4)
    assert state.hidden.dtype == tf.float64 and not np.any(state.cell.numpy())


def test_one_step_by_hand():
    """One unit, one input, weights chosen by hand: the gates and the state are sums worked out on paper."""
    # Columns i, f, c, o. x = 1, h_0 = 0, c_0 = 0.5: preactivations are the kernel plus the bias.
    weights = {
        "kernel": tf.constant([[0.0, 2.0, 1.0, -1.0]], tf.float64),
        "recurrent_kernel": tf.zeros([1, 4], tf.float64),
        "bias": tf.constant([0.0, 0.0, 0.0, 1.0], tf.float64),
    }
    state = zero_state(1, 1, tf.float64)
    state = LSTMState(state.hidden, state.cell + 0.5)
    gates = lstm_step(
        project_input(tf.ones([1, 1], tf.float64), weights),
        state,
        weights,
        get_recurrent_activation("sigmoid").function,
    )
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    cell = sigmoid(2.0) * 0.5 + sigmoid(0.0) * np.tanh(1.0)
    np.testing.assert_allclose(gates.cell.numpy(), [[cell]], rtol=1e-15)
    np.testing.assert_allclose(gates.hidden.numpy(), [[sigmoid(0.0) * np.tanh(cell)]], rtol=1e-15)
    np.testing.assert_allclose(gates.forget_gate.numpy(), [[sigmoid(2.0)]], rtol=1e-15)


def test_the_one_tanh_step_is_the_step_with_the_logistic_sigma():
    """σ(z) = (1 + tanh(z / 2)) / 2: `lstm_step_one_tanh` against `lstm_step` and the equations in numpy."""
    from diy_lstm.cell import lstm_step_one_tanh

    rng = np.random.default_rng(11)
    projected, kernel = rng.normal(size=(3, 20)), rng.normal(size=(5, 20))
    state = LSTMState(tf.constant(rng.normal(size=(3, 5))), tf.constant(rng.normal(size=(3, 5))))
    weights = {"recurrent_kernel": tf.constant(kernel)}
    one_tanh = lstm_step_one_tanh(tf.constant(projected), state, weights)
    four = lstm_step(tf.constant(projected), state, weights)
    z = projected + state.hidden.numpy() @ kernel
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = sigmoid(z[:, :5]), sigmoid(z[:, 5:10]), np.tanh(z[:, 10:15]), sigmoid(z[:, 15:])
    c = f * state.cell.numpy() + i * g
    expected = (i, f, g, o, c, o * np.tanh(c), np.tanh(c))
    for ours, theirs, want in zip(one_tanh, four, expected):
        np.testing.assert_allclose(ours.numpy(), want, rtol=0, atol=1e-14)
        np.testing.assert_allclose(theirs.numpy(), want, rtol=0, atol=1e-14)
