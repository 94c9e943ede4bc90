"""The time loop: runs the cell of `cell.py` over sequences of any length, and its hand-written backward pass.

The loop is an explicit `tf.while_loop` over `t = 0 .. time - 1`, so one traced function serves every
length: the number of steps is read from the input's shape at run time, never baked into the graph.
Inside `tf.function` it compiles to a single While op; per-step inputs are read from a `TensorArray`
and per-step outputs written to one. For sequences of a length fixed at trace time and at most
`MAX_INLINED_STEPS` the same body can instead be written out as straight-line ops (inlined, or
"unrolled" in Keras's word; `--inline_loops`).

The loop only loops: the math of a step, forwards and backwards, and every parameter are the cell's
(`cell.py`). The loop holds the weights as a structure of tensors, hands them to the cell's
functions, and returns their gradients as a structure of the same shape. It is shaped like a fast
RNN kernel (cuDNN's; Appleyard et al., "Optimizing performance of recurrent neural networks on
GPUs", 2016): only what must be sequential is inside the loop.

    forward    P = X · W_x + b           every step's input projection at once (`cell.project_input`)
               for t:  the step                                        (`cell.lstm_step`)
    backward   for t = T-1 .. 0:  dz_t and the gradients reaching h_{t-1}, c_{t-1}
                                                                      (`cell.lstm_step_backward`)
               the weight gradients from every step's rows at once  (`cell.add_weight_gradients`)
               dX = dZ · W_xᵀ                                        (`cell.project_input_backward`)

Where it is faster, the input projection is made inside the loop, or the weight gradients are
summed inside the backward loop: `Schedule`, decided in one place (`schedule`).

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
    Gates,
    LSTMState,
    RecurrentActivation,
    Weights,
    add_weight_gradients,
    backward_weights,
    input_and_units,
    lstm_step_backward,
    project_input,
    project_input_backward,
    step_function,
    zero_state,
)

BACKPROP_MODES = ("bptt", "autodiff")


class LayerSequences(NamedTuple):
    """Per-step states of one layer, time-major: `hidden` and `cell` each `[time, batch, units]`."""

    hidden: tf.Tensor
    cell: tf.Tensor | None


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


# Inlining trades graph size for per-step loop overhead; past this many steps the While op wins.
MAX_INLINED_STEPS = 16
# Each weight gradient summed inside a While loop pays when each step's product of dW_h (8 · units² · batch
# FLOP) is between these bounds (docs/performance.md, "dW_h summed in the backward loop where it pays").
IN_LOOP_STEP_FLOPS = (1e7, 1e8)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How the loops run. Each choice is a speed choice only: every path gives the plain path's values
    (tests/test_reference.py), and `schedule` picks the fast one.

    inlined_steps: write the loop out as this many straight-line steps (loop unrolling); None: a While op.
    one_tanh: step with `cell.lstm_step_one_tanh` (the four nonlinearities as one tanh).
    input_projection_in_loop: each step makes its own `x_t · W_x + b`, rather than every step's at once
      before the loop (no `[time, batch, 4 * units]` tensor written before the loop and read back).
    weight_gradient_in_loop: the backward loop sums the weight gradients step by step (each step's
      product runs beside the next step's on the second core), rather than one matmul each after it.
    """

    inlined_steps: int | None = None
    one_tanh: bool = False
    input_projection_in_loop: bool = False
    weight_gradient_in_loop: bool = False


def schedule(
    static_steps: int | None, batch: int | None, features: int, units: int, inline: bool, xla: bool
) -> Schedule:
    """The one place the speed choices are made, by the rules measured in docs/performance.md.

    Args:
      static_steps, batch: the number of steps and the batch, if known at trace time.
      features: the input width (or the vocabulary of ids); units: the cell's.
      inline: the caller allows inlining (`LoopOptions.inline`); xla: the loop is compiled by XLA.
    """
    inlined = inline and static_steps is not None and static_steps <= MAX_INLINED_STEPS
    step_flops = 8 * units * units * batch if batch is not None else None
    return Schedule(
        inlined_steps=static_steps if inlined else None,
        one_tanh=xla,  # one fused tanh pays under XLA; without it, four kernels are faster
        input_projection_in_loop=features < units,
        weight_gradient_in_loop=inlined
        or (step_flops is not None and IN_LOOP_STEP_FLOPS[0] <= step_flops <= IN_LOOP_STEP_FLOPS[1]),
    )


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """What a caller asks of the time loop; none of it changes the math.

    inline: write the loop out as straight-line ops when `schedule` finds it short enough.
    xla: the loop runs under XLA (`schedule` then steps with one tanh).
    keep_cell: return `c_t` as well as `h_t` (else `cell` is None).
    return_sequences: return every step; if False only the last (a time dimension of 1).
    input_gradient: the hand-written backward pass computes the inputs' gradient (False for data).
    schedule: a `Schedule` to run instead of the one `schedule` picks (tests and benchmarks).
    """

    inline: bool = False
    xla: bool = False
    keep_cell: bool = True
    return_sequences: bool = True
    input_gradient: bool = True
    schedule: Schedule | None = None

    def schedule_for(self, inputs: tf.Tensor, weights: Weights) -> Schedule:
        """The forced schedule, or `schedule`'s for inputs `[time, batch, ...]` and the cell's weights."""
        if self.schedule is not None:
            return self.schedule
        features, units = input_and_units(weights)
        return schedule(inputs.shape[0], inputs.shape[1], features, units, self.inline, self.xla)


class Recorded(NamedTuple):
    """The forward pass of one layer as the backward pass reads it: every field of `cell.Gates` at
    every step (`PerStep`), and `h_t`, `c_t` stacked, `[time, batch, units]`."""

    steps: dict[str, PerStep]
    hidden: tf.Tensor
    cell: tf.Tensor


def scan_lstm(
    inputs: tf.Tensor,
    weights: Weights,
    initial_state: LSTMState,
    sigma: RecurrentActivation,
    options: LoopOptions = LoopOptions(),
    record: bool = False,
    preactivation_noise: tf.Tensor | None = None,
) -> tuple[LayerSequences, Recorded | None]:
    """The forward recurrence: `cell.lstm_step` at every step, on each step's input projection.

    Args:
      inputs: `[time, batch, features]`, or `[time, batch]` integer ids (see `cell.project_input`).
      weights: the cell's weights (`cell.Weights`), passed to the cell as they are.
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
    plan = options.schedule_for(inputs, weights)
    if plan.input_projection_in_loop:  # each step projects its own x_t
        per_step = {"inputs": inputs}
        if preactivation_noise is not None:
            per_step["noise"] = preactivation_noise
    else:
        projected = project_input(inputs, weights)  # [time, batch, 4 * units]
        if preactivation_noise is not None:
            projected += preactivation_noise
        per_step = {"projected": projected}
    every_step = options.return_sequences or record
    kept = Gates._fields if record else (("hidden", "cell") if every_step else ())
    one_step = step_function(sigma, plan.one_tanh)  # cell.lstm_step (or its one-tanh form)

    def step(step_inputs, state):
        if plan.input_projection_in_loop:
            projected_input = project_input(step_inputs["inputs"], weights)
            if "noise" in step_inputs:
                projected_input += step_inputs["noise"]
        else:
            projected_input = step_inputs["projected"]
        new = one_step(projected_input, LSTMState(*state), weights)
        outputs = new._asdict()
        return tuple(new.state), {name: outputs[name] for name in kept}

    dtype = initial_state.hidden.dtype
    last, outputs = scan(
        step, per_step, tuple(initial_state), {name: dtype for name in kept}, tf.shape(inputs)[0], plan.inlined_steps
    )
    last = LSTMState(*last)
    if every_step:
        hidden, cell = outputs["hidden"].stack(), outputs["cell"].stack()
    if options.return_sequences:
        sequences = LayerSequences(hidden, cell if options.keep_cell else None)
    else:
        sequences = LayerSequences(last.hidden[tf.newaxis], last.cell[tf.newaxis] if options.keep_cell else None)
    return sequences, Recorded(outputs, hidden, cell) if record else None


def _shifted(sequence: tf.Tensor, first: tf.Tensor) -> tf.Tensor:
    """`[first, sequence[0], ..., sequence[-2]]`: each step's previous value, `[time, batch, units]`."""
    return tf.concat([first[tf.newaxis], sequence[:-1]], axis=0)


def _flat(sequence: tf.Tensor) -> tf.Tensor:
    """`[time, batch, width]` -> `[time * batch, width]`."""
    return tf.reshape(sequence, [-1, sequence.shape[-1]])


def _gradient_sequences(
    d_hidden: tf.Tensor, d_cell: tf.Tensor | None, initial_hidden: tf.Tensor, num_steps: tf.Tensor, options: LoopOptions
) -> tuple[dict, LSTMState]:
    """The loss gradients as the backward loop reads them: per-step `d_hidden` and `d_cell`
    (`[time, batch, units]`, zeros where none reach), and `(dh, dc)` entering at the last step."""
    zeros = tf.zeros_like(initial_hidden)
    if options.return_sequences:  # every step's h (and c) reached the loss
        d_cell = d_cell if d_cell is not None else tf.zeros_like(d_hidden)
        return {"d_hidden": d_hidden, "d_cell": d_cell}, LSTMState(zeros, zeros)
    none_reach = tf.zeros(tf.concat([[num_steps], tf.shape(initial_hidden)], 0), initial_hidden.dtype)
    dc_last = d_cell[0] if d_cell is not None else zeros  # only the last step's did
    return {"d_hidden": none_reach, "d_cell": none_reach}, LSTMState(d_hidden[0], dc_last)


class LayerGradients(NamedTuple):
    """The gradients of `bptt_scan_lstm`'s inputs: `inputs` (None for ids, or when not asked for),
    `initial_state`, and `weights` (the same structure as the weights)."""

    inputs: tf.Tensor | None
    initial_state: LSTMState
    weights: Weights


def _backward(
    inputs: tf.Tensor,
    weights: Weights,
    initial_state: LSTMState,
    recorded: Recorded,
    sigma: RecurrentActivation,
    options: LoopOptions,
    d_outputs: tuple[tf.Tensor, tf.Tensor | None],
) -> LayerGradients:
    """Backpropagation through time: `cell.lstm_step_backward` at t = T-1 .. 0, then the weight and
    input gradients from every step's `dz` at once (module docstring); or, as `Schedule` says,
    the weight gradients summed in the loop, keeping every `dz` only for the input gradient.
    `d_outputs`: the loss gradients reaching the returned `h` and `c` (None if none)."""
    num_steps = tf.shape(recorded.hidden)[0]
    per_step, d_last = _gradient_sequences(*d_outputs, initial_state.hidden, num_steps, options)
    plan = options.schedule_for(inputs, weights)
    in_loop = plan.weight_gradient_in_loop
    input_gradient = options.input_gradient and not inputs.dtype.is_integer  # (ids are data)
    keep_dz = not in_loop or input_gradient  # what needs every step's dz after the loop
    previous = LSTMState(_shifted(recorded.hidden, initial_state.hidden), _shifted(recorded.cell, initial_state.cell))
    zeros = tf.nest.map_structure(tf.zeros_like, weights)
    weights_read_back = backward_weights(weights)

    def step(step_inputs, carry):
        d_next, summed = carry
        gates = Gates(*(step_inputs[name] for name in Gates._fields))
        previous_t = LSTMState(step_inputs["previous_hidden"], step_inputs["previous_cell"])
        d_state = LSTMState(d_next[0] + step_inputs["d_hidden"], d_next[1] + step_inputs["d_cell"])
        back = lstm_step_backward(d_state, gates, previous_t, weights_read_back, sigma)
        if in_loop:  # summed: the weight gradients of the steps after this one
            summed = add_weight_gradients(summed, step_inputs["inputs"], previous_t, gates.cell, back.dz)
        return (tuple(back.d_previous), summed), {"dz": back.dz} if keep_dz else {}

    sequences = dict(recorded.steps, previous_hidden=previous.hidden, previous_cell=previous.cell, **per_step)
    if in_loop:
        sequences["inputs"] = inputs
    dtypes = {"dz": recorded.hidden.dtype} if keep_dz else {}
    carry = (tuple(d_last), zeros if in_loop else ())
    ((d_initial_hidden, d_initial_cell), summed), outputs = scan(
        step, sequences, carry, dtypes, num_steps, plan.inlined_steps, reverse=True
    )
    dz = _flat(outputs["dz"].stack()) if keep_dz else None  # [time * batch, 4 * units]
    if not in_loop:
        rows = tf.reshape(inputs, [-1]) if inputs.dtype.is_integer else _flat(inputs)
        flat_previous = LSTMState(_flat(previous.hidden), _flat(previous.cell))
        summed = add_weight_gradients(zeros, rows, flat_previous, _flat(recorded.cell), dz)
    d_inputs = None
    if input_gradient:
        d_inputs = tf.reshape(project_input_backward(dz, weights), tf.shape(inputs))
    return LayerGradients(d_inputs, LSTMState(d_initial_hidden, d_initial_cell), summed)


def bptt_scan_lstm(
    inputs: tf.Tensor,
    weights: Weights,
    initial_state: LSTMState,
    sigma: RecurrentActivation,
    options: LoopOptions = LoopOptions(),
    preactivation_noise: tf.Tensor | None = None,
) -> LayerSequences:
    """`scan_lstm` with a hand-written gradient (backpropagation through time, `_backward`).

    Same arguments and forward values as `scan_lstm`. Noise added to the preactivations changes
    the recorded gate activations, not the form of the backward pass (it is additive, so
    ∂z_noisy/∂z = 1); it gets no gradient itself. The weights reach the gradient function as one
    flat list of tensors and their gradients leave it as one, both in `tf.nest` order of the same
    structure, so a gradient cannot land on another parameter.
    """
    flat_weights = tf.nest.flatten(weights)

    @tf.custom_gradient
    def forward(inputs, initial_hidden, initial_cell, *flat):
        fused, initial = tf.nest.pack_sequence_as(weights, flat), LSTMState(initial_hidden, initial_cell)
        sequences, recorded = scan_lstm(
            inputs, fused, initial, sigma, options, record=True, preactivation_noise=preactivation_noise
        )

        def backward(d_hidden, d_cell=None):
            gradients = _backward(inputs, fused, initial, recorded, sigma, options, (d_hidden, d_cell))
            tf.nest.assert_same_structure(fused, gradients.weights)
            return (gradients.inputs, *gradients.initial_state, *tf.nest.flatten(gradients.weights))

        if options.keep_cell:
            return (sequences.hidden, sequences.cell), backward
        return sequences.hidden, backward

    outputs = forward(inputs, *initial_state, *flat_weights)
    return LayerSequences(*outputs) if options.keep_cell else LayerSequences(outputs, None)


def lstm_over_time(
    inputs: tf.Tensor,
    weights: Weights,
    sigma: RecurrentActivation,
    initial_state: LSTMState | None = None,
    backprop: str = "bptt",
    options: LoopOptions = LoopOptions(),
    preactivation_noise: tf.Tensor | None = None,
) -> LayerSequences:
    """One LSTM layer over time-major inputs.

    Args:
      inputs: `[time, batch, features]`.
      weights: the layer's weights (`cell.Weights`).
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
        dtype = tf.nest.flatten(weights)[0].dtype
        initial_state = zero_state(tf.shape(inputs)[1], input_and_units(weights)[1], dtype)
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
