"""The LSTM cell: its gate variables, and one step of its math.

With `x_t` the input at step t (`[batch, input_size]`) and `[x_t, h_{t-1}]` the input and the previous
hidden state side by side (`[batch, input_size + units]`):

    f_t = σ([x_t, h_{t-1}] · W_f + b_f)        forget gate      [batch, units]
    i_t = σ([x_t, h_{t-1}] · W_i + b_i)        input gate
    g_t = tanh([x_t, h_{t-1}] · W_g + b_g)     candidate
    o_t = σ([x_t, h_{t-1}] · W_o + b_o)        output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t            cell state
    h_t = o_t ⊙ tanh(c_t)                      hidden state (the cell's output)

Each `W_*` is `[input_size + units, units]`: its first `input_size` rows act on `x_t`, the rest on
`h_{t-1}`. σ is the recurrent activation: the logistic sigmoid by default, or a hard sigmoid.

For speed the four gates run as one matmul: `fused_weights` lays the gate variables side by side in
`GATE_ORDER` (input, forget, candidate, output: the order Keras uses) and splits their rows into the
part that acts on `x_t` (`kernel`) and the part that acts on `h_{t-1}` (`recurrent_kernel`). The
input's part, `x_t · W_x + b`, does not depend on the previous step, so the time loop computes it
for all steps at once and `lstm_step` adds only `h_{t-1} · W_h` (`rnn.py`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf

# The gates in the order of the equations above: the variables are made (and seeded) in this order.
GATES = ("f", "i", "g", "o")
# The order of the fused columns (Keras's layout): every split and concatenation of the four gates.
GATE_ORDER = ("i", "f", "g", "o")


class LSTMState(NamedTuple):
    """The recurrent state: `hidden` and `cell`, each `[batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor


class FusedWeights(NamedTuple):
    """The four gates side by side, columns in `GATE_ORDER`.

    kernel: `[input_size, 4 * units]`, acts on `x_t`.
    recurrent_kernel: `[units, 4 * units]`, acts on `h_{t-1}`.
    bias: `[4 * units]`.
    """

    kernel: tf.Tensor
    recurrent_kernel: tf.Tensor
    bias: tf.Tensor


class Gates(NamedTuple):
    """Everything one step computes, each `[batch, units]`."""

    input_gate: tf.Tensor
    forget_gate: tf.Tensor
    candidate: tf.Tensor
    output_gate: tf.Tensor
    cell: tf.Tensor
    hidden: tf.Tensor

    @property
    def state(self) -> LSTMState:
        return LSTMState(self.hidden, self.cell)


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


class Gating(NamedTuple):
    """How one step turns its preactivations into gates and the new state, and what the hand-written
    backward pass needs of it.

    activate: `(preactivations [batch, 4 * units] in GATE_ORDER, c_{t-1} [batch, units]) -> Gates`.
    activation: the recurrent activation σ (its `backward` is σ' from σ's output).
    """

    activate: Callable[[tf.Tensor, tf.Tensor], Gates]
    activation: RecurrentActivation


def _state_update(input_gate, forget_gate, candidate, output_gate, previous_cell) -> Gates:
    cell = forget_gate * previous_cell + input_gate * candidate
    return Gates(input_gate, forget_gate, candidate, output_gate, cell, output_gate * tf.tanh(cell))


def gating(activation: RecurrentActivation) -> Gating:
    """The equations of the module docstring: σ on three quarters of the columns, tanh on the candidate."""

    def activate(preactivations: tf.Tensor, previous_cell: tf.Tensor) -> Gates:
        i, f, g, o = tf.split(preactivations, 4, axis=-1)  # GATE_ORDER
        return _state_update(activation.function(i), activation.function(f), tf.tanh(g), activation.function(o),
                             previous_cell)

    return Gating(activate, activation)


def fused_tanh_gating(activation: RecurrentActivation) -> Gating:
    """The same values (to rounding) with one tanh over all four gates, σ(x) = (1 + tanh(x / 2)) / 2:
    one fused kernel instead of four under XLA, which is faster on CPU (without XLA, four are faster).
    Only for the logistic σ; any other activation keeps `gating(activation)`."""
    if activation is not RECURRENT_ACTIVATIONS["sigmoid"]:
        return gating(activation)

    def activate(preactivations: tf.Tensor, previous_cell: tf.Tensor) -> Gates:
        units = preactivations.shape[-1] // 4
        half = tf.constant(0.5, preactivations.dtype)
        # Per column (GATE_ORDER i, f, g, o): 1/2 for the sigmoid gates, 1 for the candidate's tanh.
        scale = tf.concat(
            [tf.fill([2 * units], half), tf.ones([units], preactivations.dtype), tf.fill([units], half)], 0)
        activations = tf.tanh(preactivations * scale) * scale + (1.0 - scale)  # [batch, 4 * units]
        return _state_update(*tf.split(activations, 4, axis=-1), previous_cell)

    return Gating(activate, activation)


def lstm_step(projected_input: tf.Tensor, state: LSTMState, recurrent_kernel: tf.Tensor, gates: Gating) -> Gates:
    """One step of the equations in the module docstring: the step every path runs (`LSTMCell`,
    the time loop of `rnn.py`, generation, the gate heat maps).

    Args:
      projected_input: the input's part of the preactivations, `x_t · W_x + b` (plus any training
        noise), `[batch, 4 * units]` in `GATE_ORDER`: the loop computes it for every step at once
        (`rnn.project_inputs`), `project_input` does it for one.
      state: `(h_{t-1}, c_{t-1})`, each `[batch, units]`.
      recurrent_kernel: `W_h`, `[units, 4 * units]`.
      gates: how preactivations become gates (`gating(σ)`, or a faster form of the same math).

    Returns:
      The gates and the new state, each `[batch, units]`; `gates.state` is `(h_t, c_t)`.
    """
    preactivations = projected_input + tf.matmul(state.hidden, recurrent_kernel)  # [batch, 4 * units]
    return gates.activate(preactivations, state.cell)


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
    """Owns one layer's gate variables `W_f, W_i, W_g, W_o` and `b_f, b_i, b_g, b_o`.

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
        self.recurrent_activation_name = recurrent_activation
        self.gating = gating(get_recurrent_activation(recurrent_activation))
        initializer = initializer or truncated_normal_initializer()
        shape = [input_size + units, units]
        with self.name_scope:
            for gate_index, gate in enumerate(GATES):
                weights = initializer(shape, weight_seed(seed, layer_index, gate_index), dtype)
                bias_value = forget_bias if gate == "f" else 0.0
                setattr(self, f"W_{gate}", tf.Variable(weights, name=f"W_{gate}"))
                bias = tf.fill([units], tf.constant(bias_value, dtype=dtype))
                setattr(self, f"b_{gate}", tf.Variable(bias, name=f"b_{gate}"))

    def gate_variables(self) -> dict[str, tf.Variable]:
        """The eight variables by name: `{"W_f": ..., "b_f": ..., ...}`."""
        return {name: getattr(self, name) for gate in GATES for name in (f"W_{gate}", f"b_{gate}")}

    def fused_weights(self) -> FusedWeights:
        """The gate variables side by side in `GATE_ORDER`, rows split into input and recurrent parts."""
        stacked = tf.concat([getattr(self, f"W_{gate}") for gate in GATE_ORDER], axis=1)
        bias = tf.concat([getattr(self, f"b_{gate}") for gate in GATE_ORDER], axis=0)
        return FusedWeights(stacked[: self.input_size], stacked[self.input_size :], bias)

    def zero_state(self, batch_size: int | tf.Tensor) -> LSTMState:
        return zero_state(batch_size, self.units, self.W_f.dtype)

    def __call__(self, inputs: tf.Tensor, state: LSTMState) -> tuple[tf.Tensor, LSTMState]:
        """One step: `inputs` `[batch, input_size]`, `state` each `[batch, units]`; returns `(h_t, (h_t, c_t))`."""
        weights = self.fused_weights()
        gates = lstm_step(project_input(inputs, weights), state, weights.recurrent_kernel, self.gating)
        return gates.hidden, gates.state

