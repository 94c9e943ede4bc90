"""The time loop: runs the cell of `cell.py` over sequences of any length.

The loop is an explicit `tf.while_loop` over `t = 0 .. time - 1`, so one traced function serves every
length: the number of steps is read from the input's shape at run time, never baked into the graph.
Inside `tf.function` it compiles to a single While op; per-step inputs are read from a `TensorArray`
and per-step outputs written to one. For short sequences of a length fixed at trace time the same
body can instead be unrolled into straight-line ops (`unroll=True`).

Training does not need TensorFlow to differentiate the loop. `backprop="bptt"` (the default) runs a
backward loop written out by hand (backpropagation through time, the same equations as
`reference.py`'s numpy version); `backprop="autodiff"` lets `tf.GradientTape` differentiate the
forward loop. Both give the same gradients (tested); the hand-written one is faster because it
keeps what the backward pass needs (the gate activations) and computes the recurrent kernel's
gradient as one large matmul after the loop instead of one small matmul per step.

Inputs of different lengths in one batch are padded at the end. No masking is needed inside the
loop: step t only depends on steps before it, so the outputs up to each sequence's length are exact;
`sequence_length` picks each sequence's final state from its own last step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf

from diy_lstm.cell import FusedWeights, LSTMState, RecurrentActivation, gates_from_preactivations

BACKPROP_MODES = ("bptt", "autodiff")


class LayerSequences(NamedTuple):
    """Per-step states of one layer, time-major: `hidden` and `cell` each `[time, batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor


class LSTMOutput(NamedTuple):
    """What `dynamic_lstm` returns.

    hidden: `h_t` at every step, `[batch, time, units]`.
    cell: `c_t` at every step, `[batch, time, units]`.
    final_state: `(h, c)` at each sequence's last step, each `[batch, units]`.
    """

    hidden: tf.Tensor
    cell: tf.Tensor
    final_state: LSTMState


def project_inputs(inputs: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """`x_t · W_x + b` for all steps at once: one matmul instead of one per step.

    Args:
      inputs: `[time, batch, features]`.
      kernel: `[features, 4 * units]`.
      bias: `[4 * units]`.

    Returns:
      `[time, batch, 4 * units]`.
    """
    shape = tf.shape(inputs)
    flat = tf.reshape(inputs, [-1, kernel.shape[0]])  # [time * batch, features]
    projected = tf.matmul(flat, kernel) + bias  # [time * batch, 4 * units]
    return tf.reshape(projected, tf.concat([shape[:2], [kernel.shape[1]]], axis=0))


def scan(
    step: Callable,
    sequences: dict[str, tf.Tensor],
    carry,
    output_dtypes: dict[str, tf.DType],
    unroll: bool = False,
    reverse: bool = False,
):
    """`for t in range(time): carry, outputs_t = step(inputs_t, carry)`, stacking each output.

    Args:
      step: `(inputs_t: dict, carry) -> (carry, outputs_t: dict)`.
      sequences: per-step inputs, each `[time, ...]`; step t sees the slice at t.
      carry: the loop state (a nest of tensors).
      output_dtypes: the names and dtypes of what `step` returns in `outputs_t`.
      unroll: unroll into straight-line ops when the number of steps is known at trace time;
        otherwise the loop is a `tf.while_loop` that reads and writes `TensorArray`s.
      reverse: visit t = time-1 .. 0.

    Returns:
      The final carry and the outputs stacked to `[time, ...]` (in time order either way).
    """
    first = next(iter(sequences.values()))
    static_steps = first.shape[0]
    if unroll and static_steps is not None:
        inputs = {name: tf.unstack(value, num=static_steps) for name, value in sequences.items()}
        collected = {name: [None] * static_steps for name in output_dtypes}
        for t in (range(static_steps - 1, -1, -1) if reverse else range(static_steps)):
            carry, outputs = step({name: value[t] for name, value in inputs.items()}, carry)
            for name, value in outputs.items():
                collected[name][t] = value
        return carry, {name: tf.stack(values) for name, values in collected.items()}

    num_steps = tf.shape(first)[0]
    readers = {
        name: tf.TensorArray(value.dtype, size=num_steps).unstack(value) for name, value in sequences.items()
    }
    writers = {name: tf.TensorArray(dtype, size=num_steps) for name, dtype in output_dtypes.items()}

    def body(t, carry, writers):
        carry, outputs = step({name: reader.read(t) for name, reader in readers.items()}, carry)
        return t + (-1 if reverse else 1), carry, {name: writers[name].write(t, outputs[name]) for name in writers}

    _, carry, writers = tf.while_loop(
        lambda t, *_: tf.logical_and(t >= 0, t < num_steps),
        body,
        (num_steps - 1 if reverse else tf.constant(0), carry, writers),
        maximum_iterations=num_steps,  # lets XLA and autodiff size their per-step buffers
    )
    return carry, {name: writer.stack() for name, writer in writers.items()}


def scan_lstm(
    projection: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    initial_state: LSTMState,
    activation: RecurrentActivation,
    unroll: bool = False,
    record_gates: bool = False,
) -> tuple[LayerSequences, tf.Tensor | None]:
    """The forward recurrence over precomputed input projections.

    Args:
      projection: `x_t · W_x + b` for every step, `[time, batch, 4 * units]`.
      recurrent_kernel: `W_h`, `[units, 4 * units]`.
      initial_state: `(h_0, c_0)`, each `[batch, units]`.
      activation: the recurrent activation σ.
      unroll: unroll into straight-line ops when the number of steps is known at trace time.
      record_gates: also return the gate activations (what the hand-written backward pass needs).

    Returns:
      The per-step states, and (if `record_gates`) the activations `[i, f, g, o]` side by side,
      `[time, batch, 4 * units]`; else None.
    """
    dtype = projection.dtype

    def step(inputs, state):
        hidden, cell = state
        preactivations = inputs["projection"] + tf.matmul(hidden, recurrent_kernel)  # [batch, 4 * units]
        gates = gates_from_preactivations(preactivations, cell, activation)
        outputs = {"hidden": gates.hidden, "cell": gates.cell}
        if record_gates:
            outputs["gates"] = tf.concat(
                [gates.input_gate, gates.forget_gate, gates.candidate, gates.output_gate], axis=-1
            )
        return (gates.hidden, gates.cell), outputs

    output_dtypes = {"hidden": dtype, "cell": dtype}
    if record_gates:
        output_dtypes["gates"] = dtype
    _, outputs = scan(step, {"projection": projection}, tuple(initial_state), output_dtypes, unroll)
    sequences = LayerSequences(outputs["hidden"], outputs["cell"])
    return sequences, outputs.get("gates")


def bptt_scan_lstm(
    projection: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    initial_state: LSTMState,
    activation: RecurrentActivation,
    unroll: bool = False,
) -> LayerSequences:
    """`scan_lstm` with a hand-written gradient (backpropagation through time).

    Same arguments and forward values as `scan_lstm`. The backward pass, for t = T-1 .. 0, with
    `dh`, `dc` the loss gradients reaching `h_t`, `c_t`:

        dc     += dh ⊙ o_t ⊙ (1 - tanh²(c_t))
        dz_i    = dc ⊙ g_t ⊙ σ'(i)        dz_f = dc ⊙ c_{t-1} ⊙ σ'(f)
        dz_g    = dc ⊙ i_t ⊙ (1 - g_t²)   dz_o = dh ⊙ tanh(c_t) ⊙ σ'(o)
        dh_{t-1} = dz · W_hᵀ (+ its own loss gradient)
        dc_{t-1} = dc ⊙ f_t (+ its own loss gradient)

    then `dW_h = Σ_t h_{t-1}ᵀ · dz_t` as one matmul over all steps, and `dz` itself is the gradient
    of the projection (autodiff carries it on to `W_x`, `b` and the inputs).
    """

    @tf.custom_gradient
    def forward(projection, recurrent_kernel, initial_hidden, initial_cell):
        initial = LSTMState(initial_hidden, initial_cell)
        sequences, gate_activations = scan_lstm(
            projection, recurrent_kernel, initial, activation, unroll, record_gates=True
        )
        units = recurrent_kernel.shape[0]

        def backward(d_hidden, d_cell):
            if d_hidden is None:
                d_hidden = tf.zeros_like(sequences.hidden)
            if d_cell is None:
                d_cell = tf.zeros_like(sequences.cell)
            recurrent_kernel_t = tf.transpose(recurrent_kernel)  # [4 * units, units]

            def step(inputs, carry):
                dh_next, dc_next = carry
                input_gate, forget_gate, candidate, output_gate = tf.split(inputs["gates"], 4, axis=-1)
                tanh_cell = tf.tanh(inputs["cell"])
                dh = inputs["d_hidden"] + dh_next
                dc = inputs["d_cell"] + dc_next + dh * output_gate * (1.0 - tanh_cell * tanh_cell)
                dz = tf.concat(
                    [
                        dc * candidate * activation.derivative_from_output(input_gate),
                        dc * inputs["previous_cell"] * activation.derivative_from_output(forget_gate),
                        dc * input_gate * (1.0 - candidate * candidate),
                        dh * tanh_cell * activation.derivative_from_output(output_gate),
                    ],
                    axis=-1,
                )  # [batch, 4 * units]
                return (tf.matmul(dz, recurrent_kernel_t), dc * forget_gate), {"dz": dz}

            per_step = {
                "gates": gate_activations,
                "cell": sequences.cell,
                "previous_cell": tf.concat([initial_cell[tf.newaxis], sequences.cell[:-1]], axis=0),
                "d_hidden": d_hidden,
                "d_cell": d_cell,
            }
            zeros = tf.zeros_like(initial_hidden)
            (d_initial_hidden, d_initial_cell), outputs = scan(
                step, per_step, (zeros, zeros), {"dz": projection.dtype}, unroll, reverse=True
            )
            d_projection = outputs["dz"]  # [time, batch, 4 * units]
            previous_hidden = tf.concat([initial_hidden[tf.newaxis], sequences.hidden[:-1]], axis=0)
            d_recurrent_kernel = tf.matmul(
                tf.reshape(previous_hidden, [-1, units]),
                tf.reshape(d_projection, [-1, 4 * units]),
                transpose_a=True,
            )  # [units, 4 * units]
            return d_projection, d_recurrent_kernel, d_initial_hidden, d_initial_cell

        return (sequences.hidden, sequences.cell), backward

    hidden, cell = forward(projection, recurrent_kernel, initial_state.hidden, initial_state.cell)
    return LayerSequences(hidden, cell)


def lstm_over_time(
    inputs: tf.Tensor,
    weights: FusedWeights,
    activation: RecurrentActivation,
    initial_state: LSTMState | None = None,
    backprop: str = "bptt",
    unroll: bool = False,
) -> LayerSequences:
    """One LSTM layer over time-major inputs.

    Args:
      inputs: `[time, batch, features]`.
      weights: the layer's fused gate weights.
      activation: the recurrent activation σ.
      initial_state: `(h_0, c_0)`, each `[batch, units]`; zeros when None.
      backprop: "bptt" (hand-written backward pass) or "autodiff" (TensorFlow differentiates the loop).
      unroll: unroll the loop when the number of steps is known at trace time.

    Returns:
      `h_t` and `c_t` at every step, each `[time, batch, units]`.
    """
    if backprop not in BACKPROP_MODES:
        raise ValueError(f"backprop must be one of {BACKPROP_MODES}, got {backprop!r}")
    units = weights.recurrent_kernel.shape[0]
    if initial_state is None:
        zeros = tf.zeros(tf.stack([tf.shape(inputs)[1], units]), dtype=inputs.dtype)
        initial_state = LSTMState(zeros, zeros)
    projection = project_inputs(inputs, weights.kernel, weights.bias)  # [time, batch, 4 * units]
    if backprop == "bptt":
        return bptt_scan_lstm(projection, weights.recurrent_kernel, initial_state, activation, unroll)
    sequences, _ = scan_lstm(projection, weights.recurrent_kernel, initial_state, activation, unroll)
    return sequences


def final_step(per_step: tf.Tensor, sequence_length: tf.Tensor | None = None) -> tf.Tensor:
    """Each sequence's value at its last real step.

    Args:
      per_step: `[batch, time, ...]`.
      sequence_length: `[batch]` ints, or None when every sequence fills all steps.

    Returns:
      `[batch, ...]`.
    """
    if sequence_length is None:
        return per_step[:, -1]
    return tf.gather(per_step, tf.cast(sequence_length, tf.int32) - 1, batch_dims=1)


def dynamic_lstm(
    inputs: tf.Tensor,
    weights: FusedWeights,
    activation: RecurrentActivation,
    initial_state: LSTMState | None = None,
    sequence_length: tf.Tensor | None = None,
    backprop: str = "bptt",
    unroll: bool = False,
) -> LSTMOutput:
    """One LSTM layer over batch-major inputs `[batch, time, features]`, any number of steps.

    Returns per-step `hidden` and `cell` (`[batch, time, units]`) and each sequence's final state.
    See `lstm_over_time` for the other arguments.
    """
    time_major = tf.transpose(inputs, [1, 0, 2])  # [time, batch, features]
    sequences = lstm_over_time(time_major, weights, activation, initial_state, backprop, unroll)
    hidden = tf.transpose(sequences.hidden, [1, 0, 2])  # [batch, time, units]
    cell = tf.transpose(sequences.cell, [1, 0, 2])
    final_state = LSTMState(final_step(hidden, sequence_length), final_step(cell, sequence_length))
    return LSTMOutput(hidden, cell, final_state)
