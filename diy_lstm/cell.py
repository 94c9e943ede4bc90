"""The LSTM cell: its eight variables, and one step of its math.

With `x_t` the input at step t (`[batch, input_size]`) and `[x_t, h_{t-1}]` the input and the previous
hidden state side by side (`[batch, input_size + units]`):

    i_t = σ([x_t, h_{t-1}] · W_i + b_i)        input gate       [batch, units]
    f_t = σ([x_t, h_{t-1}] · W_f + b_f)        forget gate
    g_t = tanh([x_t, h_{t-1}] · W_g + b_g)     candidate
    o_t = σ([x_t, h_{t-1}] · W_o + b_o)        output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t            cell state
    h_t = o_t ⊙ tanh(c_t)                      hidden state (the cell's output)

Each `W_*` is `[input_size + units, units]`: its first `input_size` rows act on `x_t`, the rest on
`h_{t-1}`. σ is the recurrent activation: the logistic sigmoid by default, or a hard sigmoid.

`lstm_step` is these equations. For speed the four gates run as one matmul: `LSTMCell.fused_weights`
lays the variables side by side in `GATES` order and splits their rows into the part that acts on
`x_t` (`kernel`, `W_x`) and the part that acts on `h_{t-1}` (`recurrent_kernel`, `W_h`). The input's
part, `x_t · W_x + b`, does not depend on the previous step, so the time loop computes it for all
steps at once (`rnn.py`) and `lstm_step` adds only `h_{t-1} · W_h`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import tensorflow as tf

# The one gate order: the equations above, the fused columns (Keras's layout), every split and concatenation.
GATES = ("i", "f", "g", "o")
# The cell's parameters by name, one place for every list of them: per gate a weight `W_<gate>`
# `[input_size + units, units]` and a bias `b_<gate>` `[units]`.
WEIGHTS = {gate: f"W_{gate}" for gate in GATES}
BIASES = {gate: f"b_{gate}" for gate in GATES}
PARAMETERS = tuple(name for gate in GATES for name in (WEIGHTS[gate], BIASES[gate]))  # W_i, b_i, W_f, ...
_WEIGHT_SEEDS = {"f": 0, "i": 1, "g": 2, "o": 3}  # each weight drawn from its own seed, as ever


class LSTMState(NamedTuple):
    """The recurrent state: `hidden` and `cell`, each `[batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor


class Gates(NamedTuple):
    """Everything one step computes, each `[batch, units]`: the gates, then the new state."""

    input_gate: tf.Tensor
    forget_gate: tf.Tensor
    candidate: tf.Tensor
    output_gate: tf.Tensor
    cell: tf.Tensor
    hidden: tf.Tensor

    @property
    def state(self) -> LSTMState:
        return LSTMState(self.hidden, self.cell)


class FusedWeights(NamedTuple):
    """The four gates side by side, columns in `GATES` order.

    kernel: `W_x`, `[input_size, 4 * units]`, acts on `x_t`.
    recurrent_kernel: `W_h`, `[units, 4 * units]`, acts on `h_{t-1}`.
    bias: `b`, `[4 * units]`.
    """

    kernel: tf.Tensor
    recurrent_kernel: tf.Tensor
    bias: tf.Tensor


def lstm_step(
    projected_input: tf.Tensor,
    state: LSTMState,
    recurrent_kernel: tf.Tensor,
    sigma: Callable[[tf.Tensor], tf.Tensor] = tf.sigmoid,
) -> Gates:
    """One step of the equations in the module docstring: the step every path runs.

    Args:
      projected_input: the input's part of the preactivations, `x_t · W_x + b` (plus any training
        noise), `[batch, 4 * units]` in `GATES` order: the time loop computes it for every step at
        once (`rnn.project_inputs`), `project_input` for one.
      state: `(h_{t-1}, c_{t-1})`, each `[batch, units]`.
      recurrent_kernel: `W_h`, `[units, 4 * units]`.
      sigma: the recurrent activation σ (`RecurrentActivation.function`).

    Returns:
      The gates and the new state, each `[batch, units]`; `.state` is `(h_t, c_t)`.
    """
    z = projected_input + tf.matmul(state.hidden, recurrent_kernel)  # [batch, 4 * units]
    z_i, z_f, z_g, z_o = tf.split(z, 4, axis=-1)
    i = sigma(z_i)
    f = sigma(z_f)
    g = tf.tanh(z_g)
    o = sigma(z_o)
    c = f * state.cell + i * g
    h = o * tf.tanh(c)
    return Gates(i, f, g, o, c, h)


def lstm_step_one_tanh(projected_input: tf.Tensor, state: LSTMState, recurrent_kernel: tf.Tensor) -> Gates:
    """`lstm_step` with the logistic σ, its four nonlinearities as one tanh over all columns, using
    σ(z) = (1 + tanh(z / 2)) / 2: the same values to rounding, in one fused kernel instead of four
    under XLA, which is faster on CPU (without XLA, four are faster; docs/performance.md)."""
    z = projected_input + tf.matmul(state.hidden, recurrent_kernel)  # [batch, 4 * units]
    units = z.shape[-1] // 4
    half = tf.constant(0.5, z.dtype)
    # Per column (GATES order i, f, g, o): 1/2 for the sigmoid gates, 1 for the candidate's tanh.
    scale = tf.concat([tf.fill([2 * units], half), tf.ones([units], z.dtype), tf.fill([units], half)], 0)
    i, f, g, o = tf.split(tf.tanh(z * scale) * scale + (1.0 - scale), 4, axis=-1)
    c = f * state.cell + i * g
    h = o * tf.tanh(c)
    return Gates(i, f, g, o, c, h)


def project_input(inputs: tf.Tensor, weights: FusedWeights) -> tf.Tensor:
    """`x_t · W_x + b`, `[batch, 4 * units]`, for `x_t` `[batch, input_size]` or integer ids `[batch]`
    of one-hot inputs (rows of `W_x`)."""
    if inputs.dtype.is_integer:
        return tf.gather(weights.kernel, inputs) + weights.bias
    return tf.matmul(inputs, weights.kernel) + weights.bias


def zero_state(batch_size: int | tf.Tensor, units: int, dtype: tf.DType = tf.float32) -> LSTMState:
    """`(h_0, c_0)` = zeros, each `[batch_size, units]`: the state every sequence starts from."""
    zeros = tf.zeros(tf.stack([batch_size, units]), dtype=dtype)
    return LSTMState(zeros, zeros)


class RecurrentActivation(NamedTuple):
    """A gate activation σ, and `backward(y, dy) = dy ⊙ σ'(x)` written in terms of its output `y = σ(x)`
    (one op where TensorFlow has a fused kernel for it)."""

    function: Callable[[tf.Tensor], tf.Tensor]
    backward: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def tanh_backward(y: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """`dy ⊙ (1 - y²)` for `y = tanh(x)`, as TensorFlow's fused TanhGrad kernel."""
    return tf.raw_ops.TanhGrad(y=y, dy=dy)


def _hard_sigmoid(slope: float) -> RecurrentActivation:
    def function(x: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(slope * x + 0.5, 0.0, 1.0)

    def backward(y: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
        inside = tf.logical_and(y > 0.0, y < 1.0)
        return dy * tf.where(inside, tf.constant(slope, dtype=y.dtype), tf.zeros_like(y))

    return RecurrentActivation(function, backward)


RECURRENT_ACTIVATIONS = {
    "sigmoid": RecurrentActivation(tf.sigmoid, lambda y, dy: tf.raw_ops.SigmoidGrad(y=y, dy=dy)),  # dy ⊙ y(1 - y)
    # Keras 3 (the Keras that ships with TF 2.16+): relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1).
    "hard_sigmoid": _hard_sigmoid(1.0 / 6.0),
    # Keras 2 and earlier: clip(0.2 x + 0.5, 0, 1), found in many older saved models.
    "hard_sigmoid_keras2": _hard_sigmoid(0.2),
}


def get_recurrent_activation(name: str) -> RecurrentActivation:
    """Looks up a recurrent activation by name; the error lists the names there are."""
    try:
        return RECURRENT_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown recurrent activation {name!r}; choose one of {sorted(RECURRENT_ACTIVATIONS)}"
        ) from None


StepFunction = Callable[[tf.Tensor, LSTMState, tf.Tensor], Gates]


def step_function(sigma: RecurrentActivation, one_tanh: bool = False) -> StepFunction:
    """`lstm_step` with σ; with `one_tanh` and the logistic σ, `lstm_step_one_tanh` (any other σ keeps
    `lstm_step`): `(projected_input, state, recurrent_kernel) -> Gates`."""
    if one_tanh and sigma is RECURRENT_ACTIVATIONS["sigmoid"]:
        return lstm_step_one_tanh
    return functools.partial(lstm_step, sigma=sigma.function)


Initializer = Callable[[list, tf.Tensor, tf.DType], tf.Tensor]


def truncated_normal_initializer(mean: float = -0.2, stddev: float = 0.1) -> Initializer:
    """The reference notebook's weight initialiser, made stateless: same seed, same weights."""

    def initialize(shape: list, seed: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.random.stateless_truncated_normal(shape, seed, mean=mean, stddev=stddev, dtype=dtype)

    return initialize


def glorot_uniform_initializer() -> Initializer:
    """Glorot (Xavier) uniform: limit sqrt(6 / (fan_in + fan_out)), Keras's default kernel init."""

    def initialize(shape: list, seed: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        limit = (6.0 / (shape[0] + shape[1])) ** 0.5
        return tf.random.stateless_uniform(shape, seed, -limit, limit, dtype=dtype)

    return initialize


INITIALIZERS = {
    "reference": truncated_normal_initializer,
    "glorot_uniform": glorot_uniform_initializer,
}


def weight_seed(seed: int, *path: int) -> tf.Tensor:
    """A stateless-RNG seed for one variable, from the run seed and the variable's place in the model."""
    value = seed
    for part in path:
        value = value * 1_000_003 + part
    return tf.constant([value % (2**31), (value // (2**31)) % (2**31)], dtype=tf.int64)


class LSTMCell(tf.Module):
    """Owns one layer's eight variables: `W_i, W_f, W_g, W_o`, each `[input_size + units, units]`, and
    `b_i, b_f, b_g, b_o`, each `[units]`.

    Args:
      input_size: features of `x_t`.
      units: size of `h_t` and `c_t`.
      forget_bias: initial value of every entry of `b_f` (the other biases start at 0).
      recurrent_activation: a key of `RECURRENT_ACTIVATIONS`.
      initializer: how the `W_*` are drawn, e.g. `truncated_normal_initializer()`.
      seed: run seed; with `layer_index` it fixes the initial weights.
      dtype: `tf.float32` or `tf.float64`.
    """

    def __init__(
        self,
        input_size: int,
        units: int,
        forget_bias: float = 1.0,
        recurrent_activation: str = "sigmoid",
        initializer: Initializer | None = None,
        seed: int = 0,
        layer_index: int = 0,
        dtype: tf.DType = tf.float32,
        name: str | None = None,
    ):
        super().__init__(name=name)
        if input_size < 1 or units < 1:
            raise ValueError(f"input_size and units must be >= 1, got {input_size} and {units}")
        self.input_size = input_size
        self.units = units
        self.sigma = get_recurrent_activation(recurrent_activation)
        initializer = initializer or truncated_normal_initializer()

        def drawn(gate: str) -> tf.Tensor:
            return initializer([input_size + units, units], weight_seed(seed, layer_index, _WEIGHT_SEEDS[gate]), dtype)

        with self.name_scope:
            for gate in GATES:
                setattr(self, WEIGHTS[gate], tf.Variable(drawn(gate), name=WEIGHTS[gate]))
            for gate in GATES:
                start = forget_bias if gate == "f" else 0.0
                setattr(self, BIASES[gate], tf.Variable(tf.fill([units], tf.constant(start, dtype)), name=BIASES[gate]))

    def gate_variables(self) -> dict[str, tf.Variable]:
        """The eight variables by name (`PARAMETERS`): `{"W_i": ..., "b_i": ..., "W_f": ...}`."""
        return {name: getattr(self, name) for name in PARAMETERS}

    def fused_weights(self) -> FusedWeights:
        """The gate variables side by side in `GATES` order, rows split into input and recurrent parts."""
        stacked = tf.concat([getattr(self, WEIGHTS[gate]) for gate in GATES], axis=1)  # [input_size + units, 4 * units]
        bias = tf.concat([getattr(self, BIASES[gate]) for gate in GATES], axis=0)
        return FusedWeights(stacked[: self.input_size], stacked[self.input_size :], bias)

    def zero_state(self, batch_size: int | tf.Tensor) -> LSTMState:
        return zero_state(batch_size, self.units, getattr(self, BIASES["f"]).dtype)

    def __call__(self, inputs: tf.Tensor, state: LSTMState, weights: FusedWeights | None = None) -> Gates:
        """One step: `inputs` `[batch, input_size]` (or ids `[batch]`), `state` each `[batch, units]`;
        returns the gates and `(h_t, c_t)`. `weights`: `fused_weights()`, when made once for many steps."""
        if weights is None:
            weights = self.fused_weights()
        return lstm_step(project_input(inputs, weights), state, weights.recurrent_kernel, self.sigma.function)
