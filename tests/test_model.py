"""The TensorFlow model against the numpy reference, and the loop's own guarantees."""

import numpy as np
import pytest
import tensorflow as tf

from diy_lstm import reference
from diy_lstm.cell import LSTMCell, LSTMState, get_recurrent_activation, lstm_step, project_input, zero_state
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.rnn import final_step, lstm_over_time


def loop_over(inputs, cell, lengths=None):
    """`h_t` at every step `[batch, time, units]` and each sequence's final `(h, c)`, by the While loop."""
    sequences = lstm_over_time(
        tf.transpose(tf.constant(inputs), [1, 0, 2]), cell.fused_weights(), cell.sigma, backprop="autodiff"
    )
    hidden, cells = (tf.transpose(t, [1, 0, 2]) for t in sequences)
    return hidden, LSTMState(final_step(hidden, lengths), final_step(cells, lengths))


def random_inputs(batch, time, features, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, time, features)).astype(np.float32)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("readout", ["hidden", "cell"])
def test_float32_forward_matches_numpy_loop(compiled, readout, measured):
    model = LSTMModel(ModelConfig(input_size=3, units=24, readout=readout, seed=1))
    inputs = random_inputs(16, 6, 3)
    call = tf.function(model.__call__) if compiled else model.__call__
    ours = call(inputs).numpy()
    expected, _ = reference.forward(inputs, reference.params_from_model(model), readout=readout)
    assert ours.shape == (16, 6, 1)
    assert measured("forward, float32 vs numpy float64, abs", np.max(np.abs(ours - expected))) <= 1e-5


def test_the_cell_stepped_by_hand_matches_the_while_loop():
    """Python steps of `LSTMCell` (each `lstm_step`) against the tf.while_loop with its TensorArrays."""
    cell = LSTMCell(input_size=3, units=5, seed=2, dtype=tf.float64)
    inputs = tf.constant(random_inputs(4, 7, 3).astype(np.float64))
    state = cell.zero_state(4)
    stepped = []
    for t in range(7):
        state = cell(inputs[:, t], state).state
        stepped.append(state.hidden)
    hidden, final = loop_over(inputs, cell)
    np.testing.assert_allclose(hidden.numpy(), tf.stack(stepped, 1).numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(final.cell.numpy(), state.cell.numpy(), rtol=0, atol=1e-14)


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


def test_forget_bias_changes_the_output():
    inputs = random_inputs(2, 5, 3)
    with_bias = LSTMModel(ModelConfig(input_size=3, units=4, forget_bias=1.0))(inputs).numpy()
    without = LSTMModel(ModelConfig(input_size=3, units=4, forget_bias=0.0))(inputs).numpy()
    assert np.max(np.abs(with_bias - without)) > 1e-3


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


def test_padding_does_not_change_real_steps_or_final_state():
    cell = LSTMCell(input_size=3, units=6, seed=1, dtype=tf.float64)
    inputs = random_inputs(3, 9, 3).astype(np.float64)
    lengths = np.array([9, 4, 1])
    padded = inputs.copy()
    for row, length in enumerate(lengths):
        padded[row, length:] = 99.0  # garbage after the end
    hidden, final = loop_over(padded, cell, lengths)
    for row, length in enumerate(lengths):
        alone_hidden, alone_final = loop_over(inputs[row : row + 1, :length], cell)
        np.testing.assert_allclose(hidden[row, :length], alone_hidden[0], atol=1e-14)
        np.testing.assert_allclose(final.hidden[row], alone_final.hidden[0], atol=1e-14)


def test_one_traced_function_serves_every_length():
    model = LSTMModel(ModelConfig(input_size=3, units=8, seed=2))
    call = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    params = reference.params_from_model(model)
    for time in (1, 6, 300):
        inputs = random_inputs(2, time, 3, seed=time)
        expected, _ = reference.forward(inputs, params)
        assert np.max(np.abs(call(inputs).numpy() - expected)) <= 1e-5
    assert len(call._list_all_concrete_functions()) == 1


def test_inlined_and_looped_agree():
    inputs = random_inputs(4, 6, 3)
    looped = LSTMModel(ModelConfig(input_size=3, units=8, seed=2), inline_loops=False)
    unrolled = LSTMModel(ModelConfig(input_size=3, units=8, seed=2), inline_loops=True)
    np.testing.assert_allclose(
        tf.function(looped.__call__)(inputs, training=True),
        tf.function(unrolled.__call__)(inputs, training=True),
        atol=1e-6,
    )


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


def test_bad_config_is_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="units must be >= 1"):
        ModelConfig(input_size=3, units=0)
    with pytest.raises(ValueError, match="readout"):
        ModelConfig(input_size=3, units=4, readout="gate")


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


@pytest.mark.parametrize("readout", ["hidden", "cell"])
def test_stepping_the_model_gives_what_run_and_numpy_give(readout):
    """`initial_state`, `step` and `readout` one character at a time, for ids and for vectors, against
    numpy float64 and against `run`'s whole-sequence path."""
    model = LSTMModel(
        ModelConfig(input_size=4, units=6, num_layers=2, output_size=3, readout=readout, seed=7, dtype="float64")
    )
    ids = np.random.default_rng(3).integers(0, 4, size=(2, 9))
    for inputs in (ids, np.eye(4)[ids]):
        states, stepped = model.initial_state(2), []
        for t in range(9):
            per_layer = model.step(tf.constant(inputs[:, t]), states)
            states = tuple(gates.state for gates in per_layer)
            stepped.append(model.readout(states[-1]))
        stepped = tf.stack(stepped, axis=1).numpy()  # [batch, time, output_size]
        expected, _ = reference.forward(np.eye(4)[ids], reference.params_from_model(model), readout=readout)
        np.testing.assert_allclose(stepped, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(model.run(tf.constant(inputs)).predictions.numpy(), stepped, rtol=0, atol=1e-13)


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
    expected = (i, f, g, o, c, np.tanh(c), o * np.tanh(c))
    for ours, theirs, want in zip(one_tanh, four, expected):
        np.testing.assert_allclose(ours.numpy(), want, rtol=0, atol=1e-14)
        np.testing.assert_allclose(theirs.numpy(), want, rtol=0, atol=1e-14)
