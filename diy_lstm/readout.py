"""Refitting the linear readout by least squares, every LSTM weight held fixed.

The readout `y_t = r_t · W_out + b_out` (`r_t` the last layer's `h_t`, or `c_t` with readout="cell")
is linear in `(W_out, b_out)`, so for fixed LSTM weights the squared error over any set of steps
has one minimum, found in closed form (in float64):

    [W_out; b_out] = argmin ‖[R 1] · [W; b] − Y‖² + λ‖W‖²,   R: r_t of every real step, [steps, units]
                                                            Y: the targets of those steps, [steps, output_size]

A small λ (`ridge`) decides between units that carry the same thing (two cells that count alike):
without it the fit may read them as +4.1 and −5.1 where −0.5 and −0.5 fit as well, and in float32
the large pair loses to rounding what the small pair keeps.

Training fits the readout only to what the training lengths show; refitted on longer sequences it
reads the state where the state has gone further (e.g. a count far beyond any training length).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from diy_lstm.model import LSTMModel

MAX_FIT_VALUES = 50_000_000  # steps × (units + 1) float64 values held by one fit: 400 MB


class ReadoutFit(NamedTuple):
    """The fitted readout and how well it fits: `W_out` `[units, output_size]`, `b_out`
    `[output_size]`, and the largest absolute error over the fitted steps before and after."""

    W_out: np.ndarray
    b_out: np.ndarray
    steps: int
    max_error_before: float
    max_error_after: float


def readout_sources(model: LSTMModel, inputs: tf.Tensor) -> tf.Tensor:
    """What the readout reads at every step, `[batch, time, units]`, for `inputs` `[batch, time, features]`."""
    layer = model.run(inputs, keep_states=True).layers[-1]
    source = layer.cell if model.config.readout == "cell" else layer.hidden  # [time, batch, units]
    return tf.transpose(source, [1, 0, 2])


def source_function(model: LSTMModel) -> Callable[[tf.Tensor], tf.Tensor]:
    """`readout_sources` of `model` as one traced function, for fits made again and again."""
    return tf.function(lambda batch: readout_sources(model, batch), reduce_retracing=True, autograph=False)


def fit_readout(
    model: LSTMModel,
    inputs: np.ndarray,
    targets: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = 256,
    sources: Callable[[tf.Tensor], tf.Tensor] | None = None,
    more_rows: tuple[np.ndarray, np.ndarray] | None = None,
    ridge: float = 0.0,
) -> ReadoutFit:
    """Least-squares `(W_out, b_out)` for `inputs` `[batch, time, features]` and `targets`
    `[batch, time, output_size]`, over the real steps (`lengths` `[batch]`); the model is unchanged
    (`assign_readout` puts the fit in). `sources`: `source_function(model)`, if one is at hand.
    `more_rows`: readout sources `[rows, units]` and their targets `[rows, output_size]` fitted
    too (states sampled from sequences too long to keep whole); `ridge`: λ of the module docstring."""
    extra = 0 if more_rows is None else len(more_rows[0])
    steps = int(np.sum(lengths)) + extra
    if steps * (model.config.units + 1) > MAX_FIT_VALUES:
        raise ValueError(
            f"a readout fit over {steps:,} steps would hold more than {MAX_FIT_VALUES:,} values; "
            "fit on fewer or shorter sequences"
        )
    sources = sources or source_function(model)
    rows, wanted = [], []
    for start in range(0, len(inputs), batch_size):
        batch = tf.constant(inputs[start : start + batch_size], model.dtype)
        real = np.arange(inputs.shape[1])[None, :] < lengths[start : start + batch_size, None]  # [batch, time]
        rows.append(sources(batch).numpy().astype(np.float64)[real])  # [real steps, units]
        wanted.append(targets[start : start + batch_size][real].astype(np.float64))
    if more_rows is not None:
        rows.append(np.asarray(more_rows[0], np.float64))
        wanted.append(np.asarray(more_rows[1], np.float64))
    design = np.concatenate([np.concatenate(rows), np.ones([steps, 1])], axis=1)  # [steps, units + 1]
    wanted = np.concatenate(wanted)  # [steps, output_size]
    solution = _least_squares(design, wanted, ridge)
    current = np.concatenate([model.W_out.numpy(), model.b_out.numpy()[None, :]]).astype(np.float64)
    return ReadoutFit(
        solution[:-1],
        solution[-1],
        steps,
        float(np.abs(design @ current - wanted).max()),
        float(np.abs(design @ solution - wanted).max()),
    )


def _least_squares(design: np.ndarray, wanted: np.ndarray, ridge: float) -> np.ndarray:
    """argmin ‖design · w − wanted‖² + ridge · ‖w without its last row (the bias)‖²."""
    if ridge == 0.0:
        return np.linalg.lstsq(design, wanted, rcond=None)[0]
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(design.T @ design + penalty, design.T @ wanted)


def assign_readout(model: LSTMModel, W_out: np.ndarray, b_out: np.ndarray) -> None:
    """Puts a readout (`W_out` `[units, output_size]`, `b_out` `[output_size]`) into the model."""
    model.W_out.assign(tf.cast(W_out, model.dtype))
    model.b_out.assign(tf.cast(b_out, model.dtype))
