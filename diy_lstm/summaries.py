"""TensorBoard output of a run: one event directory per split (`<run_dir>/train`, `<run_dir>/validation`).

Scalars (`error`, `mean_square_error`, ...), histograms of every gate variable and its gradient,
heat maps of the gates over example sequences, the traced graph, and the run's hyperparameters.

Events are held in memory and written to disk only by `flush()`, which training calls right after
each checkpoint. So the event files never run ahead of the last checkpoint: a run killed between
checkpoints and then resumed writes each step once, with no duplicated points.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import tensorflow as tf

# Large enough that nothing is written before an explicit flush().
_MAX_QUEUE = 1_000_000
_FLUSH_MILLIS = 10**9


class RunWriters:
    """One summary writer per split of a run directory: `writers["train"]`, `writers["validation"]`."""

    def __init__(self, run_dir: str, splits: tuple[str, ...]):
        self.run_dir = run_dir
        self._writers = {
            split: tf.summary.create_file_writer(
                os.path.join(run_dir, split), max_queue=_MAX_QUEUE, flush_millis=_FLUSH_MILLIS)
            for split in splits
        }

    def __getitem__(self, split: str):
        return self._writers[split]

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def write_scalars(writer, values: Mapping[str, float], step: int) -> None:
    """One scalar per entry of `values`, at `step`."""
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def variable_tag(variable: tf.Variable) -> str:
    """`lstm_model/layer_0/W_f:0` -> `layer_0/W_f`."""
    name = variable.name.split(":")[0]
    return name.split("/", 1)[1] if "/" in name else name


def write_histograms(writer, variables, gradients, step: int) -> None:
    """`weights/<layer>/<name>` and `gradients/<layer>/<name>` for every variable."""
    with writer.as_default(step=step):
        for variable, gradient in zip(variables, gradients):
            tag = variable_tag(variable)
            tf.summary.histogram(f"weights/{tag}", variable)
            tf.summary.histogram(f"gradients/{tag}", gradient)


def gate_heatmap(gates, characters: str, title: str) -> np.ndarray:
    """Renders one sequence's forget, input and output gates and cell state as heat maps.

    Args:
      gates: a `Gates` of one sequence, each field `[time, units]`.
      characters: one label per step for the time axis.
      title: the figure title.

    Returns:
      `[1, height, width, 4]` uint8 RGBA, ready for `tf.summary.image`. Rows are units, columns
      are steps; gates on a 0 (dark) .. 1 (yellow) scale, the cell state red (+) / blue (-).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cell = np.asarray(gates.cell)
    limit = max(float(np.max(np.abs(cell))), 1e-6)
    panels = [
        ("forget f", np.asarray(gates.forget_gate), "viridis", 0.0, 1.0),
        ("input i", np.asarray(gates.input_gate), "viridis", 0.0, 1.0),
        ("output o", np.asarray(gates.output_gate), "viridis", 0.0, 1.0),
        (f"cell c\n±{limit:.2g}", cell, "RdBu_r", -limit, limit),
    ]
    time = cell.shape[0]
    figure = Figure(figsize=(1.4 + 0.4 * time, 5.2), dpi=90)
    figure.subplots_adjust(left=0.2, right=0.97, top=0.93, bottom=0.07, hspace=0.12)
    axes = figure.subplots(len(panels), 1, sharex=True)
    for axis, (label, values, colormap, low, high) in zip(axes, panels):
        axis.imshow(values.T, aspect="auto", cmap=colormap, vmin=low, vmax=high, interpolation="nearest")
        axis.set_ylabel(label, fontsize=8)
        axis.set_yticks([])
    axes[-1].set_xticks(range(time))
    axes[-1].set_xticklabels(list(characters), fontsize=10, family="monospace")
    axes[0].set_title(title, fontsize=9)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()[np.newaxis]


def write_gate_images(writer, model, examples: Mapping[str, np.ndarray], step: int) -> None:
    """One heat-map image per example sequence (name -> encoded `[time, features]`), tag `gates/<name>`.

    Shows the last layer; the characters of the name label the time axis.
    """
    with writer.as_default(step=step):
        for name, encoded in examples.items():
            gates = model.gates(encoded[np.newaxis])[-1]
            one_sequence = type(gates)(*(np.asarray(field)[0] for field in gates))
            tf.summary.image(f"gates/{name}", gate_heatmap(one_sequence, name, f"{name} at epoch {step}"))


def write_hparams(run_dir: str, hparams: Mapping[str, object], trial_id: str) -> None:
    """Logs the run's hyperparameters for TensorBoard's HParams tab (the metrics come from the
    per-split scalars of the same run directory)."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        hp.hparams(dict(hparams), trial_id=trial_id)
    writer.close()
