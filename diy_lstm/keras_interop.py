"""Copy weights between `tf.keras.layers.LSTM` (+ `Dense`) and our explicit gate variables.

Keras keeps one LSTM layer's weights fused, gate columns in the order input, forget, candidate
(Keras calls it c), output:

    kernel            [input_dim, 4 * units]   acts on x_t       columns [ i | f | c | o ]
    recurrent_kernel  [units,     4 * units]   acts on h_{t-1}   columns [ i | f | c | o ]
    bias              [4 * units]                                [ i | f | c | o ]

Ours keeps each gate apart and acts on `[x_t, h_{t-1}]`, so for gate k with Keras columns
`s_k = k * units : (k + 1) * units`:

    W_k = [ kernel[:, s_k]           ]   [input_dim + units, units]
          [ recurrent_kernel[:, s_k] ]
    b_k = bias[s_k]

A `Dense(n)` after the last layer is our readout: `W_out = dense.kernel` `[units, n]`,
`b_out = dense.bias`. Keras's `unit_forget_bias=True` only initialises `bias[f]` to 1; once copied
it is our `b_f`. Keras 3's "hard_sigmoid" is our "hard_sigmoid" (relu6(x + 3) / 6); older Keras's
clip(0.2 x + 0.5, 0, 1) is our "hard_sigmoid_keras2".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from diy_lstm.cell import BIASES, GATES, WEIGHTS  # Keras lays its gates out in this order too
from diy_lstm.model import LSTMModel, ModelConfig

_KERAS_ACTIVATION_NAMES = {"sigmoid": "sigmoid", "hard_sigmoid": "hard_sigmoid"}


def _expect_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {list(array.shape)}, expected {list(shape)}")


def _cell_of(keras_lstm):
    return getattr(keras_lstm, "cell", keras_lstm)


def recurrent_activation_name(keras_lstm) -> str:
    """Our name for a Keras LSTM's recurrent activation; custom callables must be named by the caller."""
    function = _cell_of(keras_lstm).recurrent_activation
    name = getattr(function, "__name__", "")
    if name not in _KERAS_ACTIVATION_NAMES:
        raise ValueError(
            f"Keras recurrent activation {name or function!r} has no counterpart here; pass "
            "recurrent_activation= explicitly (e.g. 'hard_sigmoid_keras2' for clip(0.2x + 0.5, 0, 1))"
        )
    return _KERAS_ACTIVATION_NAMES[name]


def gate_weights_from_keras(
    kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> dict[str, np.ndarray]:
    """Keras's fused arrays -> `{"W_f": ..., "b_f": ..., ...}` in our layout."""
    input_dim, four_units = kernel.shape
    units = four_units // 4
    _expect_shape("kernel", kernel, (input_dim, 4 * units))
    _expect_shape("recurrent_kernel", recurrent_kernel, (units, 4 * units))
    _expect_shape("bias", bias, (4 * units,))
    weights = {}
    for index, gate in enumerate(GATES):
        columns = slice(index * units, (index + 1) * units)
        weights[WEIGHTS[gate]] = np.concatenate([kernel[:, columns], recurrent_kernel[:, columns]], axis=0)
        weights[BIASES[gate]] = bias[columns]
    return weights


def keras_weights_from_gates(weights: dict[str, np.ndarray], input_dim: int) -> tuple[np.ndarray, ...]:
    """Our `{"W_f": ..., "b_f": ...}` -> Keras's `(kernel, recurrent_kernel, bias)`."""
    units = weights[BIASES["f"]].shape[0]
    for gate in GATES:
        _expect_shape(WEIGHTS[gate], weights[WEIGHTS[gate]], (input_dim + units, units))
        _expect_shape(BIASES[gate], weights[BIASES[gate]], (units,))
    stacked = np.concatenate([weights[WEIGHTS[gate]] for gate in GATES], axis=1)
    bias = np.concatenate([weights[BIASES[gate]] for gate in GATES], axis=0)
    return stacked[:input_dim], stacked[input_dim:], bias


def _check_layers(model: LSTMModel, keras_lstms: Sequence) -> None:
    """The model's layers map one to one onto Keras LSTMs: as many, and without peepholes (Keras has none)."""
    if model.config.peephole:
        raise ValueError("the model has peephole connections (--peephole); Keras's LSTM has none to map them to")
    if len(keras_lstms) != len(model.layers):
        raise ValueError(f"model has {len(model.layers)} layers, got {len(keras_lstms)} Keras LSTM layers")


def load_from_keras(model: LSTMModel, keras_lstms: Sequence, keras_dense=None) -> None:
    """Copies a stack of Keras LSTM layers (and optionally the Dense after it) into `model`."""
    _check_layers(model, keras_lstms)
    for index, (layer, keras_lstm) in enumerate(zip(model.layers, keras_lstms)):
        cell = _cell_of(keras_lstm)
        kernel, recurrent_kernel, bias = (np.asarray(v) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
        _expect_shape(f"layer {index} kernel", kernel, (layer.input_size, 4 * layer.units))
        for name, value in gate_weights_from_keras(kernel, recurrent_kernel, bias).items():
            getattr(layer, name).assign(value)
    if keras_dense is not None:
        kernel, bias = np.asarray(keras_dense.kernel), np.asarray(keras_dense.bias)
        _expect_shape("Dense kernel", kernel, tuple(model.W_out.shape))
        _expect_shape("Dense bias", bias, tuple(model.b_out.shape))
        model.W_out.assign(kernel)
        model.b_out.assign(bias)


def save_to_keras(model: LSTMModel, keras_lstms: Sequence, keras_dense=None) -> None:
    """Copies `model`'s weights into a built stack of Keras LSTM layers (and Dense)."""
    _check_layers(model, keras_lstms)
    for index, (layer, keras_lstm) in enumerate(zip(model.layers, keras_lstms)):
        cell = _cell_of(keras_lstm)
        weights = {name: variable.numpy() for name, variable in layer.gate_variables().items()}
        kernel, recurrent_kernel, bias = keras_weights_from_gates(weights, layer.input_size)
        _expect_shape(f"Keras layer {index} kernel", np.asarray(cell.kernel), kernel.shape)
        cell.kernel.assign(kernel)
        cell.recurrent_kernel.assign(recurrent_kernel)
        cell.bias.assign(bias)
    if keras_dense is not None:
        _expect_shape("Keras Dense kernel", np.asarray(keras_dense.kernel), tuple(model.W_out.shape))
        keras_dense.kernel.assign(model.W_out.numpy())
        keras_dense.bias.assign(model.b_out.numpy())


def model_from_keras(
    keras_lstms: Sequence, keras_dense=None, recurrent_activation: str | None = None, **model_kwargs
) -> LSTMModel:
    """A new `LSTMModel` with the sizes and weights of the given Keras layers."""
    first = _cell_of(keras_lstms[0])
    units = first.units
    if any(_cell_of(layer).units != units for layer in keras_lstms):
        raise ValueError("every Keras LSTM layer must have the same number of units")
    for layer in keras_lstms:
        cell = _cell_of(layer)
        if getattr(cell.activation, "__name__", "") != "tanh" or not cell.use_bias:
            raise ValueError("only Keras LSTMs with activation='tanh' and use_bias=True map onto this model")
    config = ModelConfig(
        input_size=int(np.asarray(first.kernel).shape[0]),
        units=units,
        num_layers=len(keras_lstms),
        output_size=int(np.asarray(keras_dense.kernel).shape[1]) if keras_dense is not None else 1,
        recurrent_activation=recurrent_activation or recurrent_activation_name(keras_lstms[0]),
        dtype=str(np.asarray(first.kernel).dtype),
    )
    model = LSTMModel(config, **model_kwargs)
    load_from_keras(model, keras_lstms, keras_dense)
    return model
