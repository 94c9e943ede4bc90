"""Sequences of any length run through a model window by window, the state carried, one window in
memory at a time: what a SavedModel's call holds then grows with `batch × window`, not with the
sequences' length (`budget.py` says how long a window may be)."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from diy_lstm.model import LSTMModel, ModelOutput
from diy_lstm.serving.strings import ERROR_PREFIX

MAX_WINDOW = 4096  # steps run at once, however few the sequences


def window_length(window_steps: int, batch: tf.Tensor) -> tf.Tensor:
    """Steps of `batch` sequences run at once, when `window_steps` (sequences × steps) fit in memory."""
    return tf.clip_by_value(window_steps // tf.maximum(batch, 1), 1, MAX_WINDOW)


def batch_check(count: tf.Tensor, window_steps: int, what: str) -> tf.Operation:
    """An assertion that a call's `count` sequences are at most `window_steps`: one step of each must
    fit in a window."""
    return tf.debugging.Assert(
        count <= window_steps,
        [
            tf.strings.join(
                [ERROR_PREFIX, tf.strings.as_string(count), f" {what}; at most {window_steps} a call for this model"]
            )
        ],
    )


def run_in_windows(
    model: LSTMModel,
    inputs: tf.Tensor,
    window: tf.Tensor,
    read: Callable[[ModelOutput, tf.Tensor, tf.Tensor], tf.Tensor],
) -> tf.Tensor:
    """`read(output, start, stop)`, float32 `[batch, stop - start]`, of each window `[start, stop)` of
    `inputs` (`[batch, time, features]`, or ids `[batch, time]`; time ≥ 1) run through `model` from the
    state the window before ended in; the windows joined, `[batch, time]`."""
    steps, states = tf.shape(inputs)[1], model.initial_state(tf.shape(inputs)[0])

    def body(start, states, written):
        stop = tf.minimum(start + window, steps)
        output = model.run(inputs[:, start:stop], initial_states=states, keep_states=True)
        return stop, output.final_states(), written.write(start // window, tf.transpose(read(output, start, stop)))

    written = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, None])
    _, _, written = tf.while_loop(
        lambda start, *_: start < steps, body, (tf.constant(0), states, written), parallel_iterations=1
    )  # one window in memory at a time
    return tf.transpose(written.concat())  # [batch, time]
