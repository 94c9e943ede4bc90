"""TensorBoard output of a run: one event directory per split (`<run_dir>/train`, `<run_dir>/validation`).

Scalars (`error`, `mean_square_error`, ...), histograms of every gate variable and its gradient,
heat maps of the gates over example sequences, the traced graph, and the run's hyperparameters.

Events are held in memory and written to disk by `flush()`, which training calls right after each
checkpoint. A run can still stop with events on disk past its last checkpoint (a writer closed on the
way out, a kill during a flush), so a run that starts again first calls `drop_events_after(run_dir,
step)`: every event file keeps only the events up to the step it resumes from, and TensorBoard never
shows a point twice.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

# Large enough that nothing is written before an explicit flush().
_MAX_QUEUE = 1_000_000
_FLUSH_MILLIS = 10**9


class RunWriters:
    """One summary writer per split of a run directory: `writers["train"]`, `writers["validation"]`, ..."""

    def __init__(self, run_dir: str, splits: tuple[str, ...]):
        self.run_dir = run_dir
        self._writers = {
            split: tf.summary.create_file_writer(
                os.path.join(run_dir, split), max_queue=_MAX_QUEUE, flush_millis=_FLUSH_MILLIS
            )
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


def drop_events_after(run_dir: str, step: int, splits: tuple[str, ...] = ("train", "validation")) -> int:
    """Rewrites the run's own event files (in `run_dir` and its `splits` directories, where the run
    writes them; nothing else, such as an evaluation's events beside them) without the events after
    `step` (a damaged last record, from a kill mid-write, is dropped too); each file is replaced
    atomically. Returns how many events were dropped."""
    dropped = 0
    for directory in (run_dir, *(os.path.join(run_dir, split) for split in splits)):
        names = os.listdir(directory) if os.path.isdir(directory) and not os.path.islink(directory) else []
        for name in names:
            if ".tfevents." not in name or name.endswith(".tmp"):
                continue
            path = os.path.join(directory, name)
            kept, later, damaged = [], 0, False
            try:
                for record in tf.data.TFRecordDataset(path):
                    if event_pb2.Event.FromString(record.numpy()).step <= step:
                        kept.append(record.numpy())
                    else:
                        later += 1
            except tf.errors.DataLossError:  # a record cut short by a kill
                damaged = True
            dropped += later
            if damaged or later:
                with tf.io.TFRecordWriter(path + ".tmp") as writer:
                    for record in kept:
                        writer.write(record)
                os.replace(path + ".tmp", path)
    return dropped


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


@functools.lru_cache(maxsize=1)
def _monospace_code_points() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(font_manager.FontProperties(family="monospace"))).get_charmap())


def drawable(labels: str) -> str:
    """`labels` with every character the plot's font has no glyph for (a control character, a script
    it lacks) shown as `?`: matplotlib would otherwise warn on stderr for each."""
    code_points = _monospace_code_points()
    return "".join(c if ord(c) in code_points and c.isprintable() else "?" for c in labels)


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
    axes[-1].set_xticklabels(list(drawable(characters)), fontsize=10, family="monospace")
    axes[0].set_title(title, fontsize=9)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()[np.newaxis]


def write_gate_images(writer, model, examples: Mapping[str, tuple[str, np.ndarray]], step: int) -> None:
    """One heat-map image per example (tag -> (one label per step, encoded `[time, features]`)), tag
    `gates/<tag>`. Shows the last layer; the labels mark the time axis."""
    with writer.as_default(step=step):
        for tag, (labels, encoded) in examples.items():
            gates = model.gates(encoded[np.newaxis])[-1]
            one_sequence = type(gates)(*(np.asarray(field)[0] for field in gates))
            tf.summary.image(f"gates/{tag}", gate_heatmap(one_sequence, labels, f"{tag} at epoch {step}"))


def write_texts(writer, texts: Mapping[str, str], step: int) -> None:
    """One text summary per entry (tag -> text), shown verbatim (indented as code) in the Text tab."""
    with writer.as_default(step=step):
        for tag, text in texts.items():
            tf.summary.text(tag, "\n".join("    " + line for line in text.split("\n")))


def write_hparams(run_dir: str, hparams: Mapping[str, object], trial_id: str) -> None:
    """Logs the run's hyperparameters for TensorBoard's HParams tab (the metrics come from the
    per-split scalars of the same run directory)."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        hp.hparams(dict(hparams), trial_id=trial_id)
    writer.close()
