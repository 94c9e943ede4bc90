"""A stack of LSTM layers with a linear readout to `output_size` numbers at every step.

    layer 1:   h¹_t, c¹_t = LSTM(x_t,      h¹_{t-1}, c¹_{t-1})
    layer l:   hˡ_t, cˡ_t = LSTM(hˡ⁻¹_t,   hˡ_{t-1}, cˡ_{t-1})
    readout:   y_t = r_t · W_out + b_out,  r_t = hᴸ_t (or cᴸ_t with readout="cell")

The model knows nothing of any task: inputs are `[batch, time, input_size]` floats (or integer ids
of one-hot inputs). `run` takes whole sequences, one layer over all steps after another (the fast
path: training, scoring); `initial_state`, `step` and `readout` take one step of every layer at a
time (generation, the gate heat maps), and give the same values.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import tensorflow as tf

from diy_lstm.cell import (
    INITIALIZERS,
    RECURRENT_ACTIVATIONS,
    Gates,
    LSTMCell,
    LSTMState,
    Weights,
    weight_seed,
    zero_state,
)
from diy_lstm.errors import ConfigError, check_field_types
from diy_lstm.rnn import BACKPROP_MODES, LayerSequences, LoopOptions, lstm_over_time, scan

READOUTS = ("hidden", "cell")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's variables (saved beside checkpoints and exports)."""

    input_size: int
    units: int
    num_layers: int = 1
    output_size: int = 1
    readout: str = "hidden"
    recurrent_activation: str = "sigmoid"
    forget_bias: float = 1.0
    initializer: str = "reference"
    seed: int = 0
    dtype: str = "float32"
    peephole: bool = False

    def __post_init__(self):
        check_field_types(self)
        for name in ("input_size", "units", "num_layers", "output_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        choices = {
            "readout": READOUTS,
            "recurrent_activation": tuple(RECURRENT_ACTIVATIONS),
            "initializer": tuple(INITIALIZERS),
            "dtype": ("float32", "float64"),
        }
        if not abs(self.forget_bias) <= 100:  # (NaN too)
            raise ConfigError(f"forget_bias (--forget_bias) must be in [-100, 100], got {self.forget_bias}")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# `gate_noise(layer_index, shape, dtype)`: noise `[time, batch, 4 * units]` for one layer's gate
# preactivations (`shape` is that, as a tensor), e.g. the trainer's Gaussian regulariser.
GateNoise = Callable[[int, tf.Tensor, tf.DType], tf.Tensor]


def time_major(inputs: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """`[batch, time, features]` floats -> `[time, batch, features]` in `dtype`; integer ids
    `[batch, time]` -> `[time, batch]`, kept as ids."""
    inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype.is_integer:
        return tf.transpose(tf.cast(inputs, tf.int32))
    return tf.transpose(tf.cast(inputs, dtype), [1, 0, 2])


class ModelOutput(NamedTuple):
    """predictions: `[batch, time, output_size]`; layers: each layer's per-step `h` (and `c` where
    the readout uses it or `keep_states` asked for it, else None), time-major (`[time, batch, units]`)."""

    predictions: tf.Tensor
    layers: tuple[LayerSequences, ...]

    def final_states(self) -> tuple[LSTMState, ...]:
        """Each layer's `(h, c)` after the last step, `[batch, units]` (needs `run(keep_states=True)`)."""
        return tuple(LSTMState(layer.hidden[-1], layer.cell[-1]) for layer in self.layers)


def pack_states(states: tuple[LSTMState, ...] | list[LSTMState]) -> tf.Tensor:
    """Each layer's `(hidden, cell)` as one tensor `[layers, 2, batch, units]`: the state a served model
    hands out and takes back (the text SavedModel's `start`/`more`, the LiteRT files)."""
    return tf.stack([tf.stack([state.hidden, state.cell]) for state in states])


def unpack_states(state: tf.Tensor) -> tuple[LSTMState, ...]:
    """`pack_states` undone: one `LSTMState` per layer."""
    return tuple(LSTMState(layer[0], layer[1]) for layer in tf.unstack(state))


class LSTMModel(tf.Module):
    """Stacked LSTM layers (`self.layers[l]` holds `W_f ... b_o`) and a readout (`W_out`, `b_out`).

    Args:
      config: sizes and options, see `ModelConfig`.
      backprop: how training computes gradients through time, "bptt" or "autodiff" (see `rnn.py`).
      inline_loops: write the time loop out as straight-line ops when the number of steps is fixed at
        trace time and small (`rnn.MAX_INLINED_STEPS`).
    """

    def __init__(
        self, config: ModelConfig, backprop: str = "bptt", inline_loops: bool = False, name: str | None = None
    ):
        super().__init__(name=name)
        if backprop not in BACKPROP_MODES:
            raise ValueError(f"backprop must be one of {BACKPROP_MODES}, got {backprop!r}")
        self.config = config
        self.backprop = backprop
        self.inline_loops = inline_loops
        dtype = tf.as_dtype(config.dtype)
        initializer = INITIALIZERS[config.initializer]()
        with self.name_scope:
            self.layers = [
                LSTMCell(
                    input_size=config.input_size if index == 0 else config.units,
                    units=config.units,
                    forget_bias=config.forget_bias,
                    recurrent_activation=config.recurrent_activation,
                    initializer=initializer,
                    seed=config.seed,
                    layer_index=index,
                    dtype=dtype,
                    name=f"layer_{index}",
                    peephole=config.peephole,
                )
                for index in range(config.num_layers)
            ]
            readout_seed = weight_seed(config.seed, config.num_layers, 0)
            self.W_out = tf.Variable(initializer([config.units, config.output_size], readout_seed, dtype), name="W_out")
            self.b_out = tf.Variable(tf.zeros([config.output_size], dtype=dtype), name="b_out")

    @property
    def dtype(self) -> tf.DType:
        return self.W_out.dtype

    def run(
        self,
        inputs: tf.Tensor,
        initial_states: tuple[LSTMState, ...] | None = None,
        *,
        training: bool = False,
        keep_states: bool = False,
        last_step_only: bool = False,
        xla: bool = False,
        gate_noise: GateNoise | None = None,
    ) -> ModelOutput:
        """All layers over `inputs` `[batch, time, input_size]` (or integer ids `[batch, time]` of
        one-hot inputs, which the first layer reads as rows of its `W_x`), then the readout at every step.

        `initial_states` (one `(h_0, c_0)` per layer, each `[batch, units]`; zeros when None) start
        the layers where an earlier window of the same sequences left them (truncated BPTT: no
        gradient flows into them from the hand-written backward pass). With `keep_states` every
        layer keeps `c` too, so `ModelOutput.final_states()` can hand the state to the next window.
        With `training=True` gradients go through `self.backprop`; otherwise through the plain
        forward loop (which keeps no gate activations, so long sequences need little memory). The
        hand-written backward pass treats `inputs` as data: it gives no gradient with respect to
        them (use `backprop="autodiff"` for that).
        With `last_step_only`, the last layer keeps and reads out only the last step (predictions
        `[batch, 1, output_size]`): less work when only the final prediction matters and every
        sequence fills all steps.
        `xla` says the run is compiled by XLA (the loop then takes its faster form there, see
        `rnn.schedule`); `gate_noise` adds noise to every layer's gate preactivations (see
        `GateNoise`). Both are the trainer's to choose.
        """
        layer_inputs = time_major(inputs, self.dtype)  # [time, batch, features] or [time, batch] ids
        backprop = self.backprop if training else "autodiff"
        layers = []
        for index, layer in enumerate(self.layers):
            is_last = index == len(self.layers) - 1
            options = LoopOptions(
                inline=self.inline_loops,
                xla=xla,
                keep_cell=keep_states or (is_last and self.config.readout == "cell"),
                return_sequences=not (is_last and last_step_only),
                input_gradient=index > 0,
            )
            noise = None
            if gate_noise is not None:
                noise = gate_noise(
                    index, tf.concat([tf.shape(layer_inputs)[:2], [4 * layer.units]], axis=0), self.dtype
                )
            initial_state = None if initial_states is None else LSTMState(*initial_states[index])
            sequences = lstm_over_time(
                layer_inputs, layer.fused_weights(), layer.sigma, initial_state, backprop, options, noise
            )
            layers.append(sequences)
            layer_inputs = sequences.hidden
        predictions = self.readout(layers[-1])  # [time, batch, output_size]
        return ModelOutput(tf.transpose(predictions, [1, 0, 2]), tuple(layers))

    def __call__(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Per-step predictions `[batch, time, output_size]` for inputs `[batch, time, input_size]`."""
        return self.run(inputs, training=training).predictions

    def initial_state(self, batch_size: int | tf.Tensor) -> tuple[LSTMState, ...]:
        """Every layer's `(h_0, c_0)` = zeros, each `[batch_size, units]`."""
        return tuple(zero_state(batch_size, layer.units, self.dtype) for layer in self.layers)

    def fused_weights(self) -> tuple[Weights, ...]:
        """Every layer's gate variables side by side (`LSTMCell.fused_weights`), for `step`."""
        return tuple(layer.fused_weights() for layer in self.layers)

    def step(
        self, inputs: tf.Tensor, states: tuple[LSTMState, ...], weights: tuple[Weights, ...] | None = None
    ) -> tuple[Gates, ...]:
        """One step of every layer: `inputs` `[batch, input_size]` (or ids `[batch]`), `states` one
        `(h, c)` per layer. Returns each layer's gates and new state (`Gates`; `.state` to carry on).
        `weights`: `fused_weights()`, made once for many steps."""
        if tf.TensorShape(inputs.shape).rank not in (None, 1, 2):
            raise ValueError(f"LSTMModel.step takes inputs [batch, input_size] or ids [batch], not {inputs.shape}")
        weights = self.fused_weights() if weights is None else weights
        per_layer = []
        for layer, layer_weights, state in zip(self.layers, weights, states):
            gates = layer(inputs, LSTMState(*state), layer_weights)
            per_layer.append(gates)
            inputs = gates.hidden
        return tuple(per_layer)

    def readout(self, state: LSTMState | LayerSequences) -> tf.Tensor:
        """`y = r · W_out + b_out` with `r` the last layer's `h` (or `c` for `readout="cell"`),
        `[..., units]` -> `[..., output_size]`."""
        source = state.cell if self.config.readout == "cell" else state.hidden
        flat = tf.reshape(source, [-1, self.config.units])  # [..., units] as one matmul
        shape = tf.concat([tf.shape(source)[:-1], [self.config.output_size]], axis=0)
        return tf.reshape(tf.matmul(flat, self.W_out) + self.b_out, shape)

    def gates(self, inputs: tf.Tensor) -> list[Gates]:
        """Every layer's gates and states at every step from the zero state (by `step`), each
        `[batch, time, units]`."""
        layer_inputs = time_major(inputs, self.dtype)  # [time, batch, features] or [time, batch] ids
        weights = self.fused_weights()
        names = [f"{index}/{field}" for index in range(len(self.layers)) for field in Gates._fields]

        def step(step_inputs, states):
            per_layer = self.step(step_inputs["x"], states, weights)
            values = {
                f"{index}/{field}": value
                for index, gates in enumerate(per_layer)
                for field, value in gates._asdict().items()
            }
            return tuple(tuple(gates.state) for gates in per_layer), values

        _, per_step = scan(
            step,
            {"x": layer_inputs},
            tuple(map(tuple, self.initial_state(tf.shape(layer_inputs)[1]))),
            {name: self.dtype for name in names},
            tf.shape(layer_inputs)[0],
        )
        batch_major = {name: tf.transpose(per_step[name].stack(), [1, 0, 2]) for name in names}
        return [
            Gates(*(batch_major[f"{index}/{field}"] for field in Gates._fields)) for index in range(len(self.layers))
        ]
