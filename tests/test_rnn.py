"""The time loop (diy_lstm/rnn.py): the While loop against the cell stepped by hand, any length from one
trace, padding, and every path of its `Schedule` against the plain path and numpy."""

import numpy as np
import pytest
import tensorflow as tf
from test_reference import randomized_model, relative_difference

from diy_lstm import reference
from diy_lstm.cell import LSTMCell, LSTMState
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


@pytest.mark.parametrize("ids", [False, True], ids=["features", "ids"])
@pytest.mark.parametrize("in_loop", [False, True], ids=["dW after the loop", "dW in the loop"])
def test_the_weight_gradients_summed_in_or_after_the_loop_match_autodiff(in_loop, ids, measured):
    """`Schedule.weight_gradient_in_loop`: both places give TensorFlow's own gradients (float64),
    of every weight and (for features) of the inputs."""
    from diy_lstm.cell import RECURRENT_ACTIVATIONS, zero_state
    from diy_lstm.rnn import LoopOptions, Schedule, bptt_scan_lstm, scan_lstm

    rng = np.random.default_rng(11)
    if ids:
        inputs = tf.constant(rng.integers(0, 3, size=(9, 5)), tf.int32)  # [time, batch] of 3 ids
    else:
        inputs = tf.constant(rng.normal(size=(9, 5, 3)))  # [time, batch, features]
    shapes = {"kernel": (3, 24), "recurrent_kernel": (6, 24), "bias": (24,)}
    weights = {name: tf.Variable(rng.normal(scale=0.5, size=shape)) for name, shape in shapes.items()}
    sigma, start = RECURRENT_ACTIVATIONS["sigmoid"], zero_state(5, 6, tf.float64)
    sources = list(weights.values()) if ids else [*weights.values(), inputs]
    options = LoopOptions(schedule=Schedule(weight_gradient_in_loop=in_loop))
    gradients = []
    for run in (
        lambda: bptt_scan_lstm(inputs, weights, start, sigma, options),
        lambda: scan_lstm(inputs, weights, start, sigma)[0],
    ):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            sequences = run()
            loss = tf.reduce_sum(tf.sin(sequences.hidden)) + tf.reduce_sum(sequences.cell**2)
        gradients.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, sources)])
    for ours, autodiff in zip(*gradients):
        difference = relative_difference(ours, autodiff)
        assert measured(f"dW, in the loop {in_loop}, {'ids' if ids else 'features'}, vs autodiff", difference) <= 1e-12


@pytest.mark.parametrize("ids", [False, True], ids=["features", "ids"])
@pytest.mark.parametrize("in_loop", [False, True], ids=["projected before the loop", "projected in the loop"])
def test_the_input_projection_made_before_or_in_the_loop_matches_numpy(in_loop, ids, measured):
    """`Schedule.input_projection_in_loop`: both places give numpy's forward pass (with training
    noise), and the hand-written gradients equal TensorFlow's autodiff (float64)."""
    from diy_lstm.cell import GATES, RECURRENT_ACTIVATIONS, zero_state
    from diy_lstm.rnn import LoopOptions, Schedule, bptt_scan_lstm, scan_lstm

    rng = np.random.default_rng(5)
    time, batch, features, units = 7, 4, 3, 6
    token_ids = rng.integers(0, features, size=(time, batch))
    dense = np.eye(features)[token_ids] if ids else rng.normal(size=(time, batch, features))
    inputs = tf.constant(token_ids, tf.int32) if ids else tf.constant(dense)
    shapes = {"kernel": (features, 4 * units), "recurrent_kernel": (units, 4 * units), "bias": (4 * units,)}
    weights = {name: tf.Variable(rng.normal(scale=0.5, size=shape)) for name, shape in shapes.items()}
    noise = rng.normal(size=(time, batch, 4 * units))
    sigma, start = RECURRENT_ACTIVATIONS["sigmoid"], zero_state(batch, units, tf.float64)
    options = LoopOptions(schedule=Schedule(input_projection_in_loop=in_loop))
    gradients = []
    for run in (bptt_scan_lstm, lambda *args, **noise: scan_lstm(*args, **noise)[0]):
        with tf.GradientTape() as tape:
            sequences = run(inputs, weights, start, sigma, options, preactivation_noise=tf.constant(noise))
            loss = tf.reduce_sum(tf.sin(sequences.hidden)) + tf.reduce_sum(sequences.cell**2)
        gradients.append(tape.gradient(loss, list(weights.values())))
    joined = np.concatenate([weights["kernel"].numpy(), weights["recurrent_kernel"].numpy()])
    columns = {gate: slice(index * units, (index + 1) * units) for index, gate in enumerate(GATES)}
    layer = reference.LayerParams(
        W={gate: joined[:, part] for gate, part in columns.items()},
        b={gate: weights["bias"].numpy()[part] for gate, part in columns.items()},
    )
    expected = reference.layer_forward(dense.transpose(1, 0, 2), layer, "sigmoid", noise.transpose(1, 0, 2))
    name = f"input projection {'in' if in_loop else 'before'} the loop ({'ids' if ids else 'features'})"
    hidden = tf.transpose(sequences.hidden, [1, 0, 2])
    assert measured(f"{name}: forward vs numpy, relative", relative_difference(hidden, expected["h"])) <= 1e-12
    for ours, autodiff in zip(*gradients):
        autodiff = tf.convert_to_tensor(autodiff)  # (a gather's gradient comes as IndexedSlices)
        assert measured(f"{name}: dW vs autodiff, relative", relative_difference(ours, autodiff)) <= 1e-12


def test_a_model_whose_shapes_sum_the_recurrent_gradient_in_the_loop_matches_numpy(measured):
    """H=128 with a batch of 256 is where `weight_gradient_in_loop` chooses the loop: numpy float64 BPTT agrees."""
    from diy_lstm.rnn import schedule

    assert schedule(3, 256, 3, 128, inline=False, xla=False).weight_gradient_in_loop  # (the shapes this test is for)
    model = randomized_model(2, units=128, output_size=1)
    rng = np.random.default_rng(2)
    inputs, targets = rng.normal(size=(256, 3, 3)), rng.normal(size=(256, 3, 1))
    with tf.GradientTape() as tape:
        predictions = model(tf.constant(inputs), training=True)
        loss = 0.5 * tf.reduce_sum((predictions - targets) ** 2)
    ours = dict(zip([v.name for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
    params = reference.params_from_model(model)
    numpy_predictions, records = reference.forward(inputs, params)
    for name, expected in reference.backward(inputs, params, records, numpy_predictions - targets).items():
        difference = relative_difference(ours[f"lstm_model/{name}:0"], expected)
        assert measured("gradient vs numpy BPTT, dW_h in the loop, relative", difference) <= 1e-8, name
