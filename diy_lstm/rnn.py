"""The time loop: runs the cell of `cell.py` over sequences of any length.

The loop is an explicit `tf.while_loop` over `t = 0 .. time - 1`, so one traced function serves every
length: the number of steps is read from the input's shape at run time, never baked into the graph.
Inside `tf.function` it compiles to a single While op; per-step inputs are read from a `TensorArray`
and per-step outputs written to one. For sequences of a length fixed at trace time and at most
`MAX_INLINED_STEPS` the same body can instead be written out as straight-line ops (inlined, or
"unrolled" in Keras's word; `--inline_loops`).

Training does not need TensorFlow to differentiate the loop. `backprop="bptt"` (the default) runs a
backward loop written out by hand (backpropagation through time, the same equations as
`reference.py`'s numpy version); `backprop="autodiff"` lets `tf.GradientTape` differentiate the
forward loop. Both give the same gradients (tested); the hand-written one records only what its
backward pass reads, uses TensorFlow's fused SigmoidGrad/TanhGrad kernels, and keeps the weight
gradients off the critical path of the backward recurrence.

Inputs of different lengths in one batch are padded at the end. No masking is needed inside the
loop: step t only depends on steps before it, so the outputs up to each sequence's length are exact;
`sequence_length` picks each sequence's final state from its own last step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import tensorflow as tf

from diy_lstm.cell import FusedWeights, Gating, LSTMState, lstm_step, tanh_backward, zero_state

BACKPROP_MODES = ("bptt", "autodiff")


class LayerSequences(NamedTuple):
    """Per-step states of one layer, time-major: `hidden` and `cell` each `[time, batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor | None


def dense_over_time(sequence: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """The same affine map at every step, as one matmul: `[time, batch, in]` -> `[time, batch, out]`."""
    shape = tf.shape(sequence)
    flat = tf.reshape(sequence, [-1, kernel.shape[0]])  # [time * batch, in]
    return tf.reshape(tf.matmul(flat, kernel) + bias, tf.concat([shape[:2], [kernel.shape[1]]], axis=0))


class PerStep:
    """The values of every step, read by index: a `TensorArray` inside a While loop, a list when
    inlined. The backward pass reads what the forward pass recorded without stacking it first."""

    def __init__(self, values: tf.TensorArray | list):
        self._values = values

    def read(self, t) -> tf.Tensor:
        return self._values[t] if isinstance(self._values, list) else self._values.read(t)

    def stack(self) -> tf.Tensor:
        """`[time, ...]`."""
        return tf.stack(self._values) if isinstance(self._values, list) else self._values.stack()


def scan(
    step: Callable,
    sequences: dict[str, tf.Tensor | PerStep],
    carry,
    output_dtypes: dict[str, tf.DType],
    num_steps: tf.Tensor,
    static_steps: int | None,
    inline: bool = False,
    reverse: bool = False,
) -> tuple[object, dict[str, PerStep]]:
    """`for t in range(num_steps): carry, outputs_t = step(inputs_t, carry)`, keeping every output.

    Args:
      step: `(inputs_t: dict, carry) -> (carry, outputs_t: dict)`.
      sequences: per-step inputs, each a `[time, ...]` tensor or a `PerStep`; step t sees entry t.
      carry: the loop state (a nest of tensors).
      output_dtypes: the names and dtypes of what `step` returns in `outputs_t`.
      num_steps: the number of steps (a scalar tensor); `static_steps` is its value if known at
        trace time.
      inline: write the loop out as straight-line ops when `static_steps` is known; otherwise the
        loop is a `tf.while_loop` reading and writing `TensorArray`s.
      reverse: visit t = time-1 .. 0 (outputs still land at their own t).

    Returns:
      The final carry and each output as a `PerStep`.
    """
    if inline and static_steps is not None:
        inputs = {
            name: value if isinstance(value, PerStep) else PerStep(tf.unstack(value, num=static_steps))
            for name, value in sequences.items()
        }
        collected = {name: [None] * static_steps for name in output_dtypes}
        for t in range(static_steps - 1, -1, -1) if reverse else range(static_steps):
            carry, outputs = step({name: value.read(t) for name, value in inputs.items()}, carry)
            for name, value in outputs.items():
                collected[name][t] = value
        return carry, {name: PerStep(values) for name, values in collected.items()}

    readers = {
        name: value if isinstance(value, PerStep) else PerStep(
            tf.TensorArray(value.dtype, size=num_steps).unstack(value))
        for name, value in sequences.items()
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
    return carry, {name: PerStep(writer) for name, writer in writers.items()}


RECORDED = ("input_gate", "forget_gate", "candidate", "output_gate", "tanh_cell", "previous_cell", "previous_hidden")
# Inlining trades graph size for per-step loop overhead; past this many steps the While op wins.
MAX_INLINED_STEPS = 16


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How the time loop runs and what it hands back; none of it changes the math.

    inline: write the loop out as straight-line ops when the number of steps is known at trace time
      and at most `MAX_INLINED_STEPS` (loop unrolling); otherwise a While op.
    keep_cell: return `c_t` as well as `h_t` (else `cell` is None).
    return_sequences: return every step; if False only the last (a time dimension of 1).
    input_gradient: the hand-written backward pass computes the inputs' gradient (False for data).
    """

    inline: bool = False
    keep_cell: bool = True
    return_sequences: bool = True
    input_gradient: bool = True

    def inlined(self, static_steps: int | None) -> bool:
        return self.inline and static_steps is not None and static_steps <= MAX_INLINED_STEPS


def scan_lstm(
    inputs: tf.Tensor,
    weights: FusedWeights,
    initial_state: LSTMState,
    gates: Gating,
    options: LoopOptions = LoopOptions(),
    record: bool = False,
    preactivation_noise: tf.Tensor | None = None,
) -> tuple[LayerSequences, dict[str, PerStep]]:
    """The forward recurrence: `lstm_step` at every step.

    Args:
      inputs: `[time, batch, features]`.
      weights: the fused gate weights.
      initial_state: `(h_0, c_0)`, each `[batch, units]`.
      gates: how the step's preactivations become gates (`cell.Gating`).
      options: see `LoopOptions`.
      record: also keep, per step, what the hand-written backward pass needs (`RECORDED`).
      preactivation_noise: if given, `[time, batch, 4 * units]` added to the gate preactivations
        (columns in `GATE_ORDER`) at each step before the nonlinearities: a training regulariser.

    Returns:
      `h_t` (and `c_t`), `[time, batch, units]` (time 1 without `return_sequences`), and the records
      (empty unless `record`).
    """
    output_dtypes = {}
    if options.return_sequences:
        output_dtypes["hidden"] = inputs.dtype
        if options.keep_cell:
            output_dtypes["cell"] = inputs.dtype
    if record:
        output_dtypes.update({name: inputs.dtype for name in RECORDED})

    def step(step_inputs, state):
        previous = LSTMState(*state)
        new = lstm_step(step_inputs["x"], previous, weights, gates, step_inputs.get("noise"))
        outputs = {"hidden": new.hidden, "cell": new.cell}
        if record:
            outputs.update(input_gate=new.input_gate, forget_gate=new.forget_gate, candidate=new.candidate,
                           output_gate=new.output_gate, tanh_cell=tf.tanh(new.cell), previous_cell=previous.cell,
                           previous_hidden=previous.hidden)
        return tuple(new.state), {name: outputs[name] for name in output_dtypes}

    static_steps = inputs.shape[0]
    per_step = {"x": inputs} if preactivation_noise is None else {"x": inputs, "noise": preactivation_noise}
    (last_hidden, last_cell), outputs = scan(step, per_step, tuple(initial_state), output_dtypes, tf.shape(inputs)[0],
                                             static_steps, options.inlined(static_steps))
    keep_cell = options.keep_cell
    if options.return_sequences:
        sequences = LayerSequences(outputs["hidden"].stack(), outputs["cell"].stack() if keep_cell else None)
    else:
        sequences = LayerSequences(last_hidden[tf.newaxis], last_cell[tf.newaxis] if keep_cell else None)
    return sequences, {name: outputs[name] for name in RECORDED if record}


class _Backward(NamedTuple):
    """What every step of the backward pass reads besides its own records: the weights, transposed."""

    kernel_t: tf.Tensor  # [4 * units, features]
    recurrent_kernel_t: tf.Tensor  # [4 * units, units]
    gate_backward: object  # (y, dy) -> dy ⊙ σ'(x), with y = σ(x)
    input_gradient: bool


def _backward_step(backward: _Backward, step_inputs: dict[str, tf.Tensor], carry: tuple) -> tuple[tuple, dict]:
    """One step t of the backward pass (`bptt_scan_lstm`'s equations): the gradients reaching h_{t-1}
    and c_{t-1}, this step's weight-gradient terms added to the sums, and dx_t."""
    dh_next, dc_next, d_kernel, d_recurrent_kernel, d_bias = carry
    input_gate, forget_gate = step_inputs["input_gate"], step_inputs["forget_gate"]
    candidate, output_gate, tanh_cell = step_inputs["candidate"], step_inputs["output_gate"], step_inputs["tanh_cell"]
    dh = dh_next + step_inputs["d_hidden"]
    dc = dc_next + tanh_backward(tanh_cell, dh * output_gate) + step_inputs["d_cell"]
    gate_backward = backward.gate_backward
    dz = tf.concat([gate_backward(input_gate, dc * candidate),
                    gate_backward(forget_gate, dc * step_inputs["previous_cell"]),
                    tanh_backward(candidate, dc * input_gate),
                    gate_backward(output_gate, dh * tanh_cell)], axis=-1)  # [batch, 4 * units], GATE_ORDER
    carry = (tf.matmul(dz, backward.recurrent_kernel_t), dc * forget_gate,
             d_kernel + tf.matmul(step_inputs["x"], dz, transpose_a=True),
             d_recurrent_kernel + tf.matmul(step_inputs["previous_hidden"], dz, transpose_a=True),
             d_bias + tf.reduce_sum(dz, axis=0))
    return carry, ({"dx": tf.matmul(dz, backward.kernel_t)} if backward.input_gradient else {})


def _gradient_sequences(d_hidden: tf.Tensor, d_cell: tf.Tensor | None, initial_hidden: tf.Tensor,
                        num_steps: tf.Tensor, options: LoopOptions) -> tuple[dict, tf.Tensor, tf.Tensor]:
    """The loss gradients as the backward loop reads them: per-step `d_hidden` and `d_cell`
    (`[time, batch, units]`, zeros where none reach: adding them changes no sum, bit for bit), and
    `(dh, dc)` entering at the last step."""
    zeros = tf.zeros_like(initial_hidden)
    if options.return_sequences:  # every step's h (and c) reached the loss
        return {"d_hidden": d_hidden, "d_cell": d_cell if d_cell is not None else tf.zeros_like(d_hidden)}, zeros, zeros
    none_reach = tf.zeros(tf.concat([[num_steps], tf.shape(initial_hidden)], 0), initial_hidden.dtype)
    dc_last = d_cell[0] if d_cell is not None else zeros  # only the last step's did
    return {"d_hidden": none_reach, "d_cell": none_reach}, d_hidden[0], dc_last


def bptt_scan_lstm(
    inputs: tf.Tensor,
    weights: FusedWeights,
    initial_state: LSTMState,
    gates: Gating,
    options: LoopOptions = LoopOptions(),
    preactivation_noise: tf.Tensor | None = None,
) -> LayerSequences:
    """`scan_lstm` with a hand-written gradient (backpropagation through time).

    Same arguments and forward values as `scan_lstm`. Noise added to the preactivations changes
    the recorded gate activations, not the form of the backward pass (it is additive, so
    ∂z_noisy/∂z = 1); it gets no gradient itself. The backward pass, for t = T-1 .. 0, with
    `dh`, `dc` the loss gradients reaching `h_t`, `c_t`:

        dc     += dh ⊙ o_t ⊙ (1 - tanh²(c_t))
        dz_i    = dc ⊙ g_t ⊙ σ'(i)        dz_f = dc ⊙ c_{t-1} ⊙ σ'(f)
        dz_g    = dc ⊙ i_t ⊙ (1 - g_t²)   dz_o = dh ⊙ tanh(c_t) ⊙ σ'(o)
        dW_x   += x_tᵀ · dz      dW_h += h_{t-1}ᵀ · dz      db += Σ_batch dz
        dx_t    = dz · W_xᵀ
        dh_{t-1} = dz · W_hᵀ (+ its own loss gradient)
        dc_{t-1} = dc ⊙ f_t (+ its own loss gradient)

    The backward loop reads the gate activations the forward loop recorded, step by step, without
    stacking them. Only `dh` and `dc` are on the critical path; the weight terms of one step run
    beside the next step's `dh` on another core. Nothing `4 * units` wide is kept across steps.
    """
    static_steps, num_steps = inputs.shape[0], tf.shape(inputs)[0]

    @tf.custom_gradient
    def forward(inputs, kernel, recurrent_kernel, bias, initial_hidden, initial_cell):
        sequences, records = scan_lstm(inputs, FusedWeights(kernel, recurrent_kernel, bias),
                                       LSTMState(initial_hidden, initial_cell), gates, options, record=True,
                                       preactivation_noise=preactivation_noise)

        def backward(d_hidden, d_cell=None):
            context = _Backward(tf.transpose(kernel), tf.transpose(recurrent_kernel), gates.activation.backward,
                                options.input_gradient)
            per_step, dh_last, dc_last = _gradient_sequences(d_hidden, d_cell, initial_hidden, num_steps, options)
            carry = (dh_last, dc_last, tf.zeros_like(kernel), tf.zeros_like(recurrent_kernel), tf.zeros_like(bias))
            (d_initial_hidden, d_initial_cell, d_kernel, d_recurrent_kernel, d_bias), outputs = scan(
                lambda step_inputs, carry: _backward_step(context, step_inputs, carry), dict(records, x=inputs, **per_step),
                carry, {"dx": inputs.dtype} if options.input_gradient else {}, num_steps, static_steps,
                options.inlined(static_steps), reverse=True)
            d_inputs = outputs["dx"].stack() if options.input_gradient else None
            return d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_initial_hidden, d_initial_cell

        if options.keep_cell:
            return (sequences.hidden, sequences.cell), backward
        return sequences.hidden, backward

    outputs = forward(inputs, weights.kernel, weights.recurrent_kernel, weights.bias, *initial_state)
    return LayerSequences(*outputs) if options.keep_cell else LayerSequences(outputs, None)


def lstm_over_time(
    inputs: tf.Tensor,
    weights: FusedWeights,
    gates: Gating,
    initial_state: LSTMState | None = None,
    backprop: str = "bptt",
    options: LoopOptions = LoopOptions(),
    preactivation_noise: tf.Tensor | None = None,
) -> LayerSequences:
    """One LSTM layer over time-major inputs.

    Args:
      inputs: `[time, batch, features]`.
      weights: the layer's fused gate weights.
      gates: how preactivations become gates (`cell.Gating`).
      initial_state: `(h_0, c_0)`, each `[batch, units]`; zeros when None.
      backprop: "bptt" (hand-written backward pass) or "autodiff" (TensorFlow differentiates the loop).
      options: see `LoopOptions`.
      preactivation_noise: optional `[time, batch, 4 * units]`, see `scan_lstm`.

    Returns:
      `h_t` and `c_t` at every step (or the last), each `[time, batch, units]`.
    """
    if backprop not in BACKPROP_MODES:
        raise ValueError(f"backprop must be one of {BACKPROP_MODES}, got {backprop!r}")
    if initial_state is None:
        initial_state = zero_state(tf.shape(inputs)[1], weights.recurrent_kernel.shape[0], inputs.dtype)
    if backprop == "bptt":
        return bptt_scan_lstm(inputs, weights, initial_state, gates, options, preactivation_noise)
    sequences, _ = scan_lstm(inputs, weights, initial_state, gates, options, False, preactivation_noise)
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
