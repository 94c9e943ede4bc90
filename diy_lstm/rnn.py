"""The time loop: runs the cell of `cell.py` over sequences of any length, and its hand-written backward pass.

The loop is an explicit `tf.while_loop` over `t = 0 .. time - 1`, so one traced function serves every
length: the number of steps is read from the input's shape at run time, never baked into the graph.
Inside `tf.function` it compiles to a single While op; per-step inputs are read from a `TensorArray`
and per-step outputs written to one. For sequences of a length fixed at trace time and at most
`MAX_INLINED_STEPS` the same body can instead be written out as straight-line ops (inlined, or
"unrolled" in Keras's word; `--inline_loops`, decided once by `LoopOptions.inlined_steps`).

It is shaped like a fast RNN kernel (cuDNN's; Appleyard et al., "Optimizing performance of recurrent
neural networks on GPUs", 2016): only what must be sequential is inside the loop.

    forward    P = X · W_x + b           every step's input projection at once: one matmul, or for
                                         ids (one-hot inputs) a gather of rows of W_x
               for t:  z_t = P_t + h_{t-1} · W_h;  the gates;  c_t, h_t        (`cell.lstm_step`)
               (for inputs narrower than the state, P_t is made inside the loop instead, from x_t:
               `input_projection_in_loop`)
    backward   for t = T-1 .. 0:  dz_t from dh, dc (elementwise; `bptt_step`)
                                  dh_{t-1} = dz_t · W_hᵀ,  dc_{t-1} = dc ⊙ f_t
               dW_x = Xᵀ · dZ    dW_h = H_prevᵀ · dZ    db = Σ dZ    dX = dZ · W_xᵀ   one matmul each
               (at the shapes where it is faster, the weight gradients are summed inside the loop
               instead, and dZ is kept only for dX: `weight_gradient_in_loop`)

`backprop="bptt"` (the default) runs that backward pass; `backprop="autodiff"` lets
`tf.GradientTape` differentiate the forward loop. Both give the same gradients (tested against each
other and against `reference.py`'s numpy float64 BPTT).

Inputs of different lengths in one batch are padded at the end. No masking is needed inside the
loop: step t only depends on steps before it, so the outputs up to each sequence's length are exact;
`final_step` picks each sequence's value at its own last step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import tensorflow as tf

from diy_lstm.cell import (
    FusedWeights,
    LSTMState,
    RecurrentActivation,
    project_input,
    step_function,
    tanh_backward,
    zero_state,
)

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
    inlined_steps: int | None = None,
    reverse: bool = False,
) -> tuple[object, dict[str, PerStep]]:
    """`for t in range(num_steps): carry, outputs_t = step(inputs_t, carry)`, keeping every output.

    Args:
      step: `(inputs_t: dict, carry) -> (carry, outputs_t: dict)`.
      sequences: per-step inputs, each a `[time, ...]` tensor or a `PerStep`; step t sees entry t.
      carry: the loop state (a nest of tensors).
      output_dtypes: the names and dtypes of what `step` returns in `outputs_t`.
      num_steps: the number of steps (a scalar tensor).
      inlined_steps: if given (`LoopOptions.inlined_steps`), `num_steps` known at trace time: the loop
        is written out as that many straight-line steps; otherwise it is a `tf.while_loop` reading
        and writing `TensorArray`s.
      reverse: visit t = time-1 .. 0 (outputs still land at their own t).

    Returns:
      The final carry and each output as a `PerStep`.
    """
    if inlined_steps is not None:
        inputs = {
            name: value if isinstance(value, PerStep) else PerStep(tf.unstack(value, num=inlined_steps))
            for name, value in sequences.items()
        }
        collected = {name: [None] * inlined_steps for name in output_dtypes}
        for t in range(inlined_steps - 1, -1, -1) if reverse else range(inlined_steps):
            carry, outputs = step({name: value.read(t) for name, value in inputs.items()}, carry)
            for name, value in outputs.items():
                collected[name][t] = value
        return carry, {name: PerStep(values) for name, values in collected.items()}

    readers = {
        name: value
        if isinstance(value, PerStep)
        else PerStep(tf.TensorArray(value.dtype, size=num_steps).unstack(value))
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


def project_inputs(inputs: tf.Tensor, weights: FusedWeights) -> tf.Tensor:
    """`x_t · W_x + b` for every step at once, `[time, batch, 4 * units]`.

    `inputs` is `[time, batch, features]` floats (one matmul over `time × batch` rows), or
    `[time, batch]` integer ids of one-hot inputs (rows of `W_x` gathered: the same values, without
    the one-hot tensor or the multiplications by zero)."""
    if inputs.dtype.is_integer:
        return tf.gather(weights.kernel, inputs) + weights.bias
    return dense_over_time(inputs, weights.kernel, weights.bias)


# What the forward loop records for the backward pass, per step; `h_{t-1}` and `c_{t-1}` come from
# the hidden and cell sequences, shifted by one step.
RECORDED = ("input_gate", "forget_gate", "candidate", "output_gate", "tanh_cell")
# Inlining trades graph size for per-step loop overhead; past this many steps the While op wins.
MAX_INLINED_STEPS = 16
# The weight gradients, e.g. Σ_t h_{t-1}ᵀ · dz_t, are one matmul each after the backward loop, or are
# summed inside it, where each step's product runs beside the next step's dh on the second core and
# no `[time, batch, 4 * units]` dZ need be kept (unless for the input's gradient). Inside pays in an
# inlined loop, and in a While loop when each step's product (8 · units² · batch FLOP) is mid-sized:
# the measured bounds below (docs/performance.md, "dW_h summed in the backward loop where it pays").
IN_LOOP_STEP_FLOPS = (1e7, 1e8)


# The input projection is one matmul before the loop, or each step's own inside it, where no
# `[time, batch, 4 * units]` tensor is written before the loop and read back in it. Inside pays for
# inputs narrower than the state (docs/performance.md, "the input projection made inside the loop").


def input_projection_in_loop(features: int, units: int) -> bool:
    """Whether each step makes its own `x_t · W_x + b` inside the loop (`features`: the input width,
    or the vocabulary of ids) rather than every step's at once before it."""
    return features < units


def weight_gradient_in_loop(units: int, batch: int | None, inlined: bool = False) -> bool:
    """Whether the backward loop sums the weight gradients itself: always when it is inlined, else
    by `IN_LOOP_STEP_FLOPS` (after it when the batch is not known at trace time)."""
    if inlined:
        return True
    return batch is not None and IN_LOOP_STEP_FLOPS[0] <= 8 * units * units * batch <= IN_LOOP_STEP_FLOPS[1]


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How the time loop runs and what it hands back; none of it changes the math.

    inline: write the loop out as straight-line ops when the number of steps is known at trace time
      and at most `MAX_INLINED_STEPS` (loop unrolling); otherwise a While op.
    one_tanh: with the logistic σ, step with `cell.lstm_step_one_tanh` (faster under XLA).
    keep_cell: return `c_t` as well as `h_t` (else `cell` is None).
    return_sequences: return every step; if False only the last (a time dimension of 1).
    input_gradient: the hand-written backward pass computes the inputs' gradient (False for data).
    weight_gradient_in_loop: the backward loop sums the weight gradients step by step instead of one
      matmul each after it; None: as `weight_gradient_in_loop(units, batch, inlined)` decides.
    input_projection_in_loop: each step makes its own `x_t · W_x + b`; None: as
      `input_projection_in_loop(features, units)` decides.
    """

    inline: bool = False
    one_tanh: bool = False
    keep_cell: bool = True
    return_sequences: bool = True
    input_gradient: bool = True
    weight_gradient_in_loop: bool | None = None
    input_projection_in_loop: bool | None = None

    def inlined_steps(self, static_steps: int | None) -> int | None:
        """The steps to write out as straight-line ops, or None for a While op."""
        inlined = self.inline and static_steps is not None and static_steps <= MAX_INLINED_STEPS
        return static_steps if inlined else None


class Recorded(NamedTuple):
    """The forward pass of one layer as the backward pass reads it: each gate's activations and
    `tanh(c_t)` per step (`RECORDED`), and `h_t`, `c_t` at every step, `[time, batch, units]`."""

    steps: dict[str, PerStep]
    hidden: tf.Tensor
    cell: tf.Tensor


def scan_lstm(
    inputs: tf.Tensor,
    weights: FusedWeights,
    initial_state: LSTMState,
    sigma: RecurrentActivation,
    options: LoopOptions = LoopOptions(),
    record: bool = False,
    preactivation_noise: tf.Tensor | None = None,
) -> tuple[LayerSequences, Recorded | None]:
    """The forward recurrence: `cell.lstm_step` at every step, on each step's input projection.

    Args:
      inputs: `[time, batch, features]`, or `[time, batch]` integer ids (see `project_inputs`).
      weights: the fused gate weights.
      initial_state: `(h_0, c_0)`, each `[batch, units]`.
      sigma: the recurrent activation σ.
      options: see `LoopOptions`.
      record: also keep what the hand-written backward pass needs (`Recorded`).
      preactivation_noise: if given, `[time, batch, 4 * units]` added to the gate preactivations
        (columns in `GATES` order) at each step before the nonlinearities: a training regulariser.

    Returns:
      `h_t` (and `c_t`), `[time, batch, units]` (time 1 without `return_sequences`), and the records
      (None unless `record`).
    """
    inlined_steps = options.inlined_steps(inputs.shape[0])
    in_loop = options.input_projection_in_loop
    if in_loop is None:
        in_loop = input_projection_in_loop(weights.kernel.shape[0], weights.recurrent_kernel.shape[0])
    if in_loop:  # each step projects its own x_t
        per_step = {"inputs": inputs}
        if preactivation_noise is not None:
            per_step["noise"] = preactivation_noise
    else:
        projected = project_inputs(inputs, weights)  # [time, batch, 4 * units]
        if preactivation_noise is not None:
            projected += preactivation_noise
        per_step = {"projected": projected}
    every_step = options.return_sequences or record
    kept = (("hidden", "cell") if every_step else ()) + (RECORDED if record else ())
    one_step = step_function(sigma, options.one_tanh)  # cell.lstm_step (or its one-tanh form)

    def step(step_inputs, state):
        if in_loop:
            projected_input = project_input(step_inputs["inputs"], weights)
            if "noise" in step_inputs:
                projected_input += step_inputs["noise"]
        else:
            projected_input = step_inputs["projected"]
        new = one_step(projected_input, LSTMState(*state), weights.recurrent_kernel)
        outputs = new._asdict()
        if record:
            outputs["tanh_cell"] = tf.tanh(new.cell)
        return tuple(new.state), {name: outputs[name] for name in kept}

    last, outputs = scan(
        step,
        per_step,
        tuple(initial_state),
        {name: weights.bias.dtype for name in kept},
        tf.shape(inputs)[0],
        inlined_steps,
    )
    last = LSTMState(*last)
    if every_step:
        hidden, cell = outputs["hidden"].stack(), outputs["cell"].stack()
    if options.return_sequences:
        sequences = LayerSequences(hidden, cell if options.keep_cell else None)
    else:
        sequences = LayerSequences(last.hidden[tf.newaxis], last.cell[tf.newaxis] if options.keep_cell else None)
    return sequences, Recorded({name: outputs[name] for name in RECORDED}, hidden, cell) if record else None


class BackwardStep(NamedTuple):
    """One step t of the backward pass: what reaches `h_{t-1}` and `c_{t-1}` from step t, and `dz_t`
    (the gradient of step t's four preactivations, `[batch, 4 * units]`, `GATES` order)."""

    d_previous_hidden: tf.Tensor
    d_previous_cell: tf.Tensor
    dz: tf.Tensor


def bptt_step(
    step: dict[str, tf.Tensor], dh: tf.Tensor, dc: tf.Tensor, recurrent_kernel_t: tf.Tensor, gate_backward
) -> BackwardStep:
    """The backward pass through one step (`bptt_scan_lstm`'s equations).

    Args:
      step: step t's records (`RECORDED`) and `previous_cell` (`c_{t-1}`), each `[batch, units]`.
      dh, dc: the loss gradients reaching `h_t` and `c_t` (from later steps and from the loss).
      recurrent_kernel_t: `W_hᵀ`, `[4 * units, units]`.
      gate_backward: `(y, dy) -> dy ⊙ σ'(x)` with `y = σ(x)`.
    """
    input_gate, forget_gate, candidate = step["input_gate"], step["forget_gate"], step["candidate"]
    output_gate, tanh_cell = step["output_gate"], step["tanh_cell"]
    dc = dc + tanh_backward(tanh_cell, dh * output_gate)
    dz = tf.concat(
        [
            gate_backward(input_gate, dc * candidate),
            gate_backward(forget_gate, dc * step["previous_cell"]),
            tanh_backward(candidate, dc * input_gate),
            gate_backward(output_gate, dh * tanh_cell),
        ],
        axis=-1,
    )  # [batch, 4 * units]
    return BackwardStep(tf.matmul(dz, recurrent_kernel_t), dc * forget_gate, dz)


def _shifted(sequence: tf.Tensor, first: tf.Tensor) -> tf.Tensor:
    """`[first, sequence[0], ..., sequence[-2]]`: each step's previous value, `[time, batch, units]`."""
    return tf.concat([first[tf.newaxis], sequence[:-1]], axis=0)


def _flat(sequence: tf.Tensor) -> tf.Tensor:
    """`[time, batch, width]` -> `[time * batch, width]`."""
    return tf.reshape(sequence, [-1, sequence.shape[-1]])


def _gradient_sequences(
    d_hidden: tf.Tensor, d_cell: tf.Tensor | None, initial_hidden: tf.Tensor, num_steps: tf.Tensor, options: LoopOptions
) -> tuple[dict, tf.Tensor, tf.Tensor]:
    """The loss gradients as the backward loop reads them: per-step `d_hidden` and `d_cell`
    (`[time, batch, units]`, zeros where none reach), and `(dh, dc)` entering at the last step."""
    zeros = tf.zeros_like(initial_hidden)
    if options.return_sequences:  # every step's h (and c) reached the loss
        return {"d_hidden": d_hidden, "d_cell": d_cell if d_cell is not None else tf.zeros_like(d_hidden)}, zeros, zeros
    none_reach = tf.zeros(tf.concat([[num_steps], tf.shape(initial_hidden)], 0), initial_hidden.dtype)
    dc_last = d_cell[0] if d_cell is not None else zeros  # only the last step's did
    return {"d_hidden": none_reach, "d_cell": none_reach}, d_hidden[0], dc_last


class WeightGradients(NamedTuple):
    """The gradients of `FusedWeights`' three tensors, in their order."""

    kernel: tf.Tensor
    recurrent_kernel: tf.Tensor
    bias: tf.Tensor


def _add_weight_gradients(
    gradients: WeightGradients, inputs: tf.Tensor, previous_hidden: tf.Tensor, dz: tf.Tensor
) -> WeightGradients:
    """`gradients` plus `(Xᵀ · dZ, H_prevᵀ · dZ, Σ dZ)` over the rows of `inputs` `[rows, features]`
    (or ids `[rows]`, whose rows of W_x were gathered: each row of `dz` is added to its id's row),
    `previous_hidden` `[rows, units]` and `dz` `[rows, 4 * units]`: one step's, or every step's."""
    if inputs.dtype.is_integer:
        d_kernel = tf.tensor_scatter_nd_add(gradients.kernel, inputs[:, tf.newaxis], dz)
    else:
        d_kernel = gradients.kernel + tf.matmul(inputs, dz, transpose_a=True)
    return WeightGradients(
        d_kernel,
        gradients.recurrent_kernel + tf.matmul(previous_hidden, dz, transpose_a=True),
        gradients.bias + tf.reduce_sum(dz, axis=0),
    )


def _backward(
    inputs: tf.Tensor,
    weights: FusedWeights,
    initial_state: LSTMState,
    recorded: Recorded,
    sigma: RecurrentActivation,
    options: LoopOptions,
    d_hidden: tf.Tensor,
    d_cell: tf.Tensor | None,
) -> tuple:
    """The gradients of `bptt_scan_lstm`'s inputs: the loop produces `dz` of every step, then the
    weight gradients and the input gradient are one matmul each (module docstring); or, where
    `weight_gradient_in_loop`, the loop sums the weight gradients itself, and keeps every `dz` only
    for the input gradient."""
    num_steps = tf.shape(recorded.hidden)[0]
    per_step, dh_last, dc_last = _gradient_sequences(d_hidden, d_cell, initial_state.hidden, num_steps, options)
    recurrent_kernel_t = tf.transpose(weights.recurrent_kernel)  # [4 * units, units]

    inlined_steps = options.inlined_steps(recorded.hidden.shape[0])
    in_loop = options.weight_gradient_in_loop
    if in_loop is None:
        units, batch = weights.recurrent_kernel.shape[0], recorded.hidden.shape[1]
        in_loop = weight_gradient_in_loop(units, batch, inlined_steps is not None)
    input_gradient = options.input_gradient and not inputs.dtype.is_integer  # (ids are data)
    keep_dz = not in_loop or input_gradient  # what needs every step's dz after the loop
    previous_hidden = _shifted(recorded.hidden, initial_state.hidden)  # [time, batch, units]

    def step(step_inputs, carry):
        dh_next, dc_next = carry[:2]
        back = bptt_step(
            step_inputs,
            dh_next + step_inputs["d_hidden"],
            dc_next + step_inputs["d_cell"],
            recurrent_kernel_t,
            sigma.backward,
        )
        carried = (back.d_previous_hidden, back.d_previous_cell)
        if in_loop:  # carry[2:]: the weight gradients of the steps after this one
            summed = WeightGradients(*carry[2:])
            carried += _add_weight_gradients(summed, step_inputs["inputs"], step_inputs["previous_hidden"], back.dz)
        return carried, {"dz": back.dz} if keep_dz else {}

    sequences = dict(recorded.steps, previous_cell=_shifted(recorded.cell, initial_state.cell), **per_step)
    carry = (dh_last, dc_last)
    zeros = WeightGradients(*(tf.zeros_like(w) for w in (weights.kernel, weights.recurrent_kernel, weights.bias)))
    if in_loop:
        sequences.update(inputs=inputs, previous_hidden=previous_hidden)
        carry += tuple(zeros)
    carry, outputs = scan(
        step,
        sequences,
        carry,
        {"dz": recorded.hidden.dtype} if keep_dz else {},
        num_steps,
        inlined_steps,
        reverse=True,
    )
    d_initial_hidden, d_initial_cell = carry[:2]
    dz = _flat(outputs["dz"].stack()) if keep_dz else None  # [time * batch, 4 * units]
    if in_loop:
        gradients = WeightGradients(*carry[2:])
    else:
        rows = tf.reshape(inputs, [-1]) if inputs.dtype.is_integer else _flat(inputs)
        gradients = _add_weight_gradients(zeros, rows, _flat(previous_hidden), dz)
    d_inputs = None
    if input_gradient:
        d_inputs = tf.reshape(tf.matmul(dz, weights.kernel, transpose_b=True), tf.shape(inputs))
    return d_inputs, *gradients, d_initial_hidden, d_initial_cell


def bptt_scan_lstm(
    inputs: tf.Tensor,
    weights: FusedWeights,
    initial_state: LSTMState,
    sigma: RecurrentActivation,
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
        dh_{t-1} = dz_t · W_hᵀ (+ its own loss gradient)
        dc_{t-1} = dc ⊙ f_t (+ its own loss gradient)

    and then, over all steps at once (`dZ`: every `dz_t`, `[time · batch, 4 * units]`):

        dW_x = Xᵀ · dZ      dW_h = H_prevᵀ · dZ      db = Σ dZ      dX = dZ · W_xᵀ

    Only `dh` and `dc` are on the loop's critical path; the weight gradients are large matmuls after
    it, or at the sizes `weight_gradient_in_loop` picks, summed step by step beside it.
    """

    @tf.custom_gradient
    def forward(inputs, kernel, recurrent_kernel, bias, initial_hidden, initial_cell):
        fused, initial = FusedWeights(kernel, recurrent_kernel, bias), LSTMState(initial_hidden, initial_cell)
        sequences, recorded = scan_lstm(
            inputs, fused, initial, sigma, options, record=True, preactivation_noise=preactivation_noise
        )

        def backward(d_hidden, d_cell=None):
            return _backward(inputs, fused, initial, recorded, sigma, options, d_hidden, d_cell)

        if options.keep_cell:
            return (sequences.hidden, sequences.cell), backward
        return sequences.hidden, backward

    outputs = forward(inputs, weights.kernel, weights.recurrent_kernel, weights.bias, *initial_state)
    return LayerSequences(*outputs) if options.keep_cell else LayerSequences(outputs, None)


def lstm_over_time(
    inputs: tf.Tensor,
    weights: FusedWeights,
    sigma: RecurrentActivation,
    initial_state: LSTMState | None = None,
    backprop: str = "bptt",
    options: LoopOptions = LoopOptions(),
    preactivation_noise: tf.Tensor | None = None,
) -> LayerSequences:
    """One LSTM layer over time-major inputs.

    Args:
      inputs: `[time, batch, features]`.
      weights: the layer's fused gate weights.
      sigma: the recurrent activation σ.
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
        initial_state = zero_state(tf.shape(inputs)[1], weights.recurrent_kernel.shape[0], weights.kernel.dtype)
    if backprop == "bptt":
        return bptt_scan_lstm(inputs, weights, initial_state, sigma, options, preactivation_noise)
    sequences, _ = scan_lstm(inputs, weights, initial_state, sigma, options, False, preactivation_noise)
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
