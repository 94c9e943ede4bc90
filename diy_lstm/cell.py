"""The LSTM cell: its parameters, one step of its math, and that step's backward pass.

With `x_t` the input at step t (`[batch, input_size]`) and `[x_t, h_{t-1}]` the input and the previous
hidden state side by side (`[batch, input_size + units]`):

    i_t = σ([x_t, h_{t-1}] · W_i + b_i  (+ p_i ⊙ c_{t-1}))    input gate       [batch, units]
    f_t = σ([x_t, h_{t-1}] · W_f + b_f  (+ p_f ⊙ c_{t-1}))    forget gate
    g_t = tanh([x_t, h_{t-1}] · W_g + b_g)                    candidate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                           cell state
    o_t = σ([x_t, h_{t-1}] · W_o + b_o  (+ p_o ⊙ c_t))        output gate
    h_t = o_t ⊙ tanh(c_t)                                     hidden state (the cell's output)

Each `W_*` is `[input_size + units, units]`: its first `input_size` rows act on `x_t`, the rest on
`h_{t-1}`. σ is the recurrent activation: the logistic sigmoid by default, or a hard sigmoid. The
terms in parentheses are peephole connections (Gers & Schmidhuber 2000), each `p_*` `[units]`:
the gates see the cell state. They are there only in a cell made with `peephole=True`.

`lstm_step` is these equations, and `lstm_step_backward` beside it runs them backwards. For speed the
four gates run as one matmul: `LSTMCell.fused_weights` lays the variables side by side in `GATES`
order and splits their rows into the part that acts on `x_t` (`kernel`, `W_x`) and the part that
acts on `h_{t-1}` (`recurrent_kernel`, `W_h`). The input's part, `x_t · W_x + b` (`project_input`),
does not depend on the previous step, so the time loop (`rnn.py`) may compute it for all steps at
once, and `lstm_step` adds only `h_{t-1} · W_h`. Everything the loop needs of the cell is in this
module: it handles the weights only as a structure of tensors, and their gradients as one of the
same shape.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import tensorflow as tf

# The one gate order: the equations above, the fused columns (Keras's layout), every split and concatenation.
GATES = ("i", "f", "g", "o")
# The cell's parameters by name, one place for every list of them: per gate a weight `W_<gate>`
# `[input_size + units, units]` and a bias `b_<gate>` `[units]`; with peepholes a `p_<gate>` `[units]`
# for the three sigmoid gates.
WEIGHTS = {gate: f"W_{gate}" for gate in GATES}
BIASES = {gate: f"b_{gate}" for gate in GATES}
PEEPHOLES = {gate: f"p_{gate}" for gate in ("i", "f", "o")}
_WEIGHT_SEEDS = {"f": 0, "i": 1, "g": 2, "o": 3}  # each weight drawn from its own seed, as ever


def parameter_shapes(input_size: int, units: int, peephole: bool = False) -> dict[str, tuple[int, ...]]:
    """Every parameter of one cell by name, in checkpoint order: `W_i, b_i, W_f, ...` (`p_i, p_f, p_o`)."""
    shapes = {}
    for gate in GATES:
        shapes[WEIGHTS[gate]] = (input_size + units, units)
        shapes[BIASES[gate]] = (units,)
    if peephole:
        shapes.update({name: (units,) for name in PEEPHOLES.values()})
    return shapes


def parameter_names(peephole: bool = False) -> tuple[str, ...]:
    """The names of `parameter_shapes`."""
    return tuple(parameter_shapes(1, 1, peephole))


class LSTMState(NamedTuple):
    """The recurrent state: `hidden` and `cell`, each `[batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor


class Gates(NamedTuple):
    """Everything one step computes, each `[batch, units]`: the gates, the new state, and last
    `tanh(c_t)`, which the backward step reads."""

    input_gate: tf.Tensor
    forget_gate: tf.Tensor
    candidate: tf.Tensor
    output_gate: tf.Tensor
    cell: tf.Tensor
    hidden: tf.Tensor
    tanh_cell: tf.Tensor

    @property
    def state(self) -> LSTMState:
        return LSTMState(self.hidden, self.cell)


# One cell's weights as the loop sees them: a structure of tensors by name, the four gates fused
# (`LSTMCell.fused_weights`). Its gradients are the same structure.
#   kernel            W_x  [input_size, 4 * units]   acts on x_t, columns in `GATES` order
#   recurrent_kernel  W_h  [units, 4 * units]        acts on h_{t-1}
#   bias              b    [4 * units]
#   p_i, p_f, p_o          [units]                   the peepholes, if the cell has them
Weights = dict[str, tf.Tensor]


def input_and_units(weights: Weights) -> tuple[int, int]:
    """The input width (or the vocabulary of ids) and the units of a cell with these weights."""
    return weights["kernel"].shape[0], weights["recurrent_kernel"].shape[0]


def _peepholes(weights: Weights) -> dict[str, tf.Tensor] | None:
    """The peephole weights by gate, or None for a cell without them."""
    if PEEPHOLES["i"] not in weights:
        return None
    return {gate: weights[name] for gate, name in PEEPHOLES.items()}


def lstm_step(
    projected_input: tf.Tensor,
    state: LSTMState,
    weights: Weights,
    sigma: Callable[[tf.Tensor], tf.Tensor] = tf.sigmoid,
) -> Gates:
    """One step of the equations in the module docstring: the step every path runs.

    Args:
      projected_input: the input's part of the preactivations, `x_t · W_x + b` (plus any training
        noise), `[batch, 4 * units]` in `GATES` order (`project_input`).
      state: `(h_{t-1}, c_{t-1})`, each `[batch, units]`.
      weights: the cell's `Weights`; the step reads `recurrent_kernel` and the peepholes.
      sigma: the recurrent activation σ (`RecurrentActivation.function`).

    Returns:
      The gates and the new state, each `[batch, units]`; `.state` is `(h_t, c_t)`.
    """
    z = projected_input + tf.matmul(state.hidden, weights["recurrent_kernel"])  # [batch, 4 * units]
    z_i, z_f, z_g, z_o = tf.split(z, 4, axis=-1)
    peep = _peepholes(weights)
    if peep is not None:
        z_i += peep["i"] * state.cell
        z_f += peep["f"] * state.cell
    i = sigma(z_i)
    f = sigma(z_f)
    g = tf.tanh(z_g)
    c = f * state.cell + i * g
    if peep is not None:
        z_o += peep["o"] * c
    o = sigma(z_o)
    tanh_c = tf.tanh(c)
    return Gates(i, f, g, o, c, o * tanh_c, tanh_c)


def lstm_step_one_tanh(projected_input: tf.Tensor, state: LSTMState, weights: Weights) -> Gates:
    """`lstm_step` with the logistic σ, its four nonlinearities as one tanh over all columns, using
    σ(z) = (1 + tanh(z / 2)) / 2: the same values to rounding, in one fused kernel instead of four
    under XLA, which is faster on CPU (without XLA, four are faster; docs/performance.md). A cell
    with peepholes steps with `lstm_step` (its output gate waits for `c_t`)."""
    if _peepholes(weights) is not None:
        return lstm_step(projected_input, state, weights)
    z = projected_input + tf.matmul(state.hidden, weights["recurrent_kernel"])  # [batch, 4 * units]
    units = z.shape[-1] // 4
    half = tf.constant(0.5, z.dtype)
    # Per column (GATES order i, f, g, o): 1/2 for the sigmoid gates, 1 for the candidate's tanh.
    scale = tf.concat([tf.fill([2 * units], half), tf.ones([units], z.dtype), tf.fill([units], half)], 0)
    i, f, g, o = tf.split(tf.tanh(z * scale) * scale + (1.0 - scale), 4, axis=-1)
    c = f * state.cell + i * g
    tanh_c = tf.tanh(c)
    return Gates(i, f, g, o, c, o * tanh_c, tanh_c)


class StepGradients(NamedTuple):
    """The backward pass through one step: the loss gradients reaching `(h_{t-1}, c_{t-1})` from
    step t, and `dz_t`, the gradient of the step's four preactivations, `[batch, 4 * units]`
    (`GATES` order), from which `add_weight_gradients` and `project_input_backward` take the rest."""

    d_previous: LSTMState
    dz: tf.Tensor


def backward_weights(weights: Weights) -> Weights:
    """The weights as `lstm_step_backward` reads them, made once for every step: with `W_hᵀ`
    (`recurrent_kernel_t`, `[4 * units, units]`) beside them."""
    return dict(weights, recurrent_kernel_t=tf.transpose(weights["recurrent_kernel"]))


def lstm_step_backward(
    d_state: LSTMState, gates: Gates, previous: LSTMState, weights: Weights, sigma: RecurrentActivation
) -> StepGradients:
    """`lstm_step` backwards, equation for equation (σ' and tanh' written in terms of their outputs).

    Args:
      d_state: `(dh, dc)`, the loss gradients reaching `h_t` and `c_t` (from later steps and the loss).
      gates: what `lstm_step` computed at step t.
      previous: `(h_{t-1}, c_{t-1})`.
      weights: `backward_weights(weights)`.
      sigma: the recurrent activation σ.

    With `dh`, `dc` as given:

        dz_o     = σ'(o_t) ⊙ dh ⊙ tanh(c_t)
        dc      += dh ⊙ o_t ⊙ (1 - tanh²(c_t))   (+ dz_o ⊙ p_o)
        dz_i     = σ'(i_t) ⊙ dc ⊙ g_t          dz_f = σ'(f_t) ⊙ dc ⊙ c_{t-1}
        dz_g     = (1 - g_t²) ⊙ dc ⊙ i_t
        dh_{t-1} = dz_t · W_hᵀ                  dc_{t-1} = dc ⊙ f_t   (+ dz_i ⊙ p_i + dz_f ⊙ p_f)
    """
    dh, dc = d_state
    peep = _peepholes(weights)
    dz_o = sigma.backward(gates.output_gate, dh * gates.tanh_cell)
    dc = dc + tanh_backward(gates.tanh_cell, dh * gates.output_gate)
    if peep is not None:
        dc += dz_o * peep["o"]
    dz_i = sigma.backward(gates.input_gate, dc * gates.candidate)
    dz_f = sigma.backward(gates.forget_gate, dc * previous.cell)
    dz_g = tanh_backward(gates.candidate, dc * gates.input_gate)
    dz = tf.concat([dz_i, dz_f, dz_g, dz_o], axis=-1)  # [batch, 4 * units]
    d_previous_cell = dc * gates.forget_gate
    if peep is not None:
        d_previous_cell += dz_i * peep["i"] + dz_f * peep["f"]
    d_previous_hidden = tf.matmul(dz, weights["recurrent_kernel_t"])
    return StepGradients(LSTMState(d_previous_hidden, d_previous_cell), dz)


def add_weight_gradients(
    gradients: Weights, inputs: tf.Tensor, previous: LSTMState, cell: tf.Tensor, dz: tf.Tensor
) -> Weights:
    """`gradients` plus the weight gradients of some rows: one step's `[batch, ...]`, or every
    step's `[time * batch, ...]` (the gradients are sums over rows, so either gives the same).

        dW_x = Xᵀ · dZ    dW_h = H_prevᵀ · dZ    db = Σ dZ    (dp_i = Σ dz_i ⊙ c_prev,  dp_f = Σ dz_f ⊙ c_prev,
                                                                dp_o = Σ dz_o ⊙ c)

    Args:
      gradients: the sums so far (zeros at first), a `Weights` structure.
      inputs: `x` `[rows, features]`, or ids `[rows]` of one-hot inputs, whose rows of W_x were
        gathered: each row of `dz` is added to its id's row.
      previous: `(h_{t-1}, c_{t-1})` of each row, each `[rows, units]`.
      cell: `c_t` of each row, `[rows, units]`.
      dz: `[rows, 4 * units]` (`StepGradients.dz`).
    """
    if inputs.dtype.is_integer:
        d_kernel = tf.tensor_scatter_nd_add(gradients["kernel"], inputs[:, tf.newaxis], dz)
    else:
        d_kernel = gradients["kernel"] + tf.matmul(inputs, dz, transpose_a=True)
    summed = {
        "kernel": d_kernel,
        "recurrent_kernel": gradients["recurrent_kernel"] + tf.matmul(previous.hidden, dz, transpose_a=True),
        "bias": gradients["bias"] + tf.reduce_sum(dz, axis=0),
    }
    if _peepholes(gradients) is not None:
        dz_i, dz_f, _, dz_o = tf.split(dz, 4, axis=-1)
        for gate, dz_gate, seen in (("i", dz_i, previous.cell), ("f", dz_f, previous.cell), ("o", dz_o, cell)):
            summed[PEEPHOLES[gate]] = gradients[PEEPHOLES[gate]] + tf.reduce_sum(dz_gate * seen, axis=0)
    return summed


def project_input(inputs: tf.Tensor, weights: Weights) -> tf.Tensor:
    """`x · W_x + b`, `[..., 4 * units]`, for `x` `[..., input_size]` (one step's `[batch, ...]`, or
    every step's `[time, batch, ...]` as one matmul) or integer ids `[...]` of one-hot inputs (rows
    of `W_x` gathered: the same values, without the one-hot tensor or the multiplications by zero)."""
    kernel, bias = weights["kernel"], weights["bias"]
    if inputs.dtype.is_integer:
        return tf.gather(kernel, inputs) + bias
    if inputs.shape.rank == 2:
        return tf.matmul(inputs, kernel) + bias
    flat = tf.reshape(inputs, [-1, kernel.shape[0]])  # [time * batch, input_size]
    shape = tf.concat([tf.shape(inputs)[:-1], [kernel.shape[1]]], axis=0)
    return tf.reshape(tf.matmul(flat, kernel) + bias, shape)


def project_input_backward(dz: tf.Tensor, weights: Weights) -> tf.Tensor:
    """The gradient reaching float inputs `x` `[rows, input_size]` from `dz` `[rows, 4 * units]`: `dz · W_xᵀ`."""
    return tf.matmul(dz, weights["kernel"], transpose_b=True)


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


StepFunction = Callable[[tf.Tensor, LSTMState, Weights], Gates]


def step_function(sigma: RecurrentActivation, one_tanh: bool = False) -> StepFunction:
    """`lstm_step` with σ; with `one_tanh` and the logistic σ, `lstm_step_one_tanh` (any other σ keeps
    `lstm_step`): `(projected_input, state, weights) -> Gates`."""
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
    """Owns one layer's variables (`parameter_shapes`): `W_i, W_f, W_g, W_o`, each
    `[input_size + units, units]`, `b_i, b_f, b_g, b_o`, each `[units]`, and with `peephole`
    `p_i, p_f, p_o`, each `[units]`.

    Args:
      input_size: features of `x_t`.
      units: size of `h_t` and `c_t`.
      forget_bias: initial value of every entry of `b_f` (the other biases start at 0).
      recurrent_activation: a key of `RECURRENT_ACTIVATIONS`.
      initializer: how the `W_*` are drawn, e.g. `truncated_normal_initializer()`.
      seed: run seed; with `layer_index` it fixes the initial weights.
      dtype: `tf.float32` or `tf.float64`.
      peephole: the gates also see the cell state (module docstring); the `p_*` start at 0, so the
        cell starts as the one without them.
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
        peephole: bool = False,
    ):
        super().__init__(name=name)
        if input_size < 1 or units < 1:
            raise ValueError(f"input_size and units must be >= 1, got {input_size} and {units}")
        self.input_size = input_size
        self.units = units
        self.peephole = peephole
        self.sigma = get_recurrent_activation(recurrent_activation)
        initializer = initializer or truncated_normal_initializer()
        gate_of_weight = {name: gate for gate, name in WEIGHTS.items()}
        with self.name_scope:
            for name, shape in parameter_shapes(input_size, units, peephole).items():
                if name in gate_of_weight:
                    seed_of_weight = weight_seed(seed, layer_index, _WEIGHT_SEEDS[gate_of_weight[name]])
                    value = initializer(list(shape), seed_of_weight, dtype)
                else:  # biases and peepholes
                    value = tf.fill(shape, tf.constant(forget_bias if name == BIASES["f"] else 0.0, dtype))
                setattr(self, name, tf.Variable(value, name=name))

    def gate_variables(self) -> dict[str, tf.Variable]:
        """The variables by name (`parameter_names`): `{"W_i": ..., "b_i": ..., "W_f": ...}`."""
        return {name: getattr(self, name) for name in parameter_names(self.peephole)}

    def fused_weights(self) -> Weights:
        """The variables as the loop reads them (`Weights`): the gates side by side in `GATES` order,
        rows split into input and recurrent parts, and the peepholes as they are."""
        stacked = tf.concat([getattr(self, WEIGHTS[gate]) for gate in GATES], axis=1)  # [input_size + units, 4 * units]
        bias = tf.concat([getattr(self, BIASES[gate]) for gate in GATES], axis=0)
        weights = {"kernel": stacked[: self.input_size], "recurrent_kernel": stacked[self.input_size :], "bias": bias}
        if self.peephole:
            weights.update({name: tf.convert_to_tensor(getattr(self, name)) for name in PEEPHOLES.values()})
        return weights

    def zero_state(self, batch_size: int | tf.Tensor) -> LSTMState:
        return zero_state(batch_size, self.units, getattr(self, BIASES["f"]).dtype)

    def __call__(self, inputs: tf.Tensor, state: LSTMState, weights: Weights | None = None) -> Gates:
        """One step: `inputs` `[batch, input_size]` (or ids `[batch]`), `state` each `[batch, units]`;
        returns the gates and `(h_t, c_t)`. `weights`: `fused_weights()`, when made once for many steps."""
        if weights is None:
            weights = self.fused_weights()
        return lstm_step(project_input(inputs, weights), state, weights, self.sigma.function)
