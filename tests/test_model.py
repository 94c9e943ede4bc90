"""The model (diy_lstm/model.py): layers and readout against the numpy reference, stepping, its config."""

import numpy as np
import pytest
import tensorflow as tf
from test_rnn import random_inputs

from diy_lstm import reference
from diy_lstm.model import LSTMModel, ModelConfig


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


def test_forget_bias_changes_the_output():
    inputs = random_inputs(2, 5, 3)
    with_bias = LSTMModel(ModelConfig(input_size=3, units=4, forget_bias=1.0))(inputs).numpy()
    without = LSTMModel(ModelConfig(input_size=3, units=4, forget_bias=0.0))(inputs).numpy()
    assert np.max(np.abs(with_bias - without)) > 1e-3


def test_bad_config_is_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="units must be >= 1"):
        ModelConfig(input_size=3, units=0)
    with pytest.raises(ValueError, match="readout"):
        ModelConfig(input_size=3, units=4, readout="gate")


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
