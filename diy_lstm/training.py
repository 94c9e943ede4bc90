"""Losses, metrics and the compiled training step for per-step regression with integer targets.

Shapes: predictions and targets are `[batch, time]`, lengths `[batch]`; steps at or after a
sequence's length are padding and count nowhere.

    error                       share of sequences whose rounded final prediction misses the target
    mean_square_error           mean of (final prediction - final target)²
    error_per_step              share of real steps whose rounded prediction misses
    mean_square_error_per_step  mean of (prediction - target)² over real steps

The loss is `mean_square_error` (`target="final"`, the reference's choice) or
`mean_square_error_per_step` (`target="running"`: every step is supervised).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from diy_lstm.model import LSTMModel
from diy_lstm.optimizer import Adam, soft_threshold
from diy_lstm.rnn import final_step

TARGETS = ("final", "running")
METRIC_NAMES = ("error", "mean_square_error", "error_per_step", "mean_square_error_per_step")


def sequence_mask(lengths: tf.Tensor, max_time: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """`[batch, max_time]`: 1 for real steps, 0 for padding."""
    return tf.sequence_mask(lengths, max_time, dtype=dtype)


def loss_fn(predictions: tf.Tensor, targets: tf.Tensor, lengths: tf.Tensor, target: str) -> tf.Tensor:
    """The training loss (a scalar) for `target` "final" or "running"."""
    if target == "final":
        return tf.reduce_mean(tf.square(final_step(predictions, lengths) - final_step(targets, lengths)))
    mask = sequence_mask(lengths, tf.shape(predictions)[1], predictions.dtype)
    return tf.reduce_sum(mask * tf.square(predictions - targets)) / tf.reduce_sum(mask)


def metrics_fn(predictions: tf.Tensor, targets: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
    """The four metrics of the module docstring, each a scalar."""
    dtype = predictions.dtype
    final_prediction = final_step(predictions, lengths)
    final_target = final_step(targets, lengths)
    mask = sequence_mask(lengths, tf.shape(predictions)[1], dtype)
    real_steps = tf.reduce_sum(mask)
    misses = tf.cast(tf.not_equal(tf.round(predictions), targets), dtype)
    return {
        "error": tf.reduce_mean(tf.cast(tf.not_equal(tf.round(final_prediction), final_target), dtype)),
        "mean_square_error": tf.reduce_mean(tf.square(final_prediction - final_target)),
        "error_per_step": tf.reduce_sum(mask * misses) / real_steps,
        "mean_square_error_per_step": tf.reduce_sum(mask * tf.square(predictions - targets)) / real_steps,
    }


class Trainer:
    """The compiled training and evaluation steps of an `LSTMModel` with one output.

    Args:
      model: the model to train (`output_size` 1).
      optimizer: an `Adam` over `model.trainable_variables`.
      target: "final" or "running", see the module docstring.
      jit_compile: compile the training step with XLA.
      clip_norm: if set, gradients are scaled down to this global norm.
      full_length_batches: every training batch holds sequences of one length (no padding); with
        `target="final"` the model then computes the readout for the last step only.
      preactivation_noise: standard deviation of the Gaussian noise added to the gate
        preactivations in training steps (see `LSTMModel.run`); 0 for none. Evaluation never adds
        it, and neither does `noise_free_train_step` (the same update without it).
      seed: with the optimizer's step counter, fixes the noise of every training step (so a resumed
        run draws the same noise as an uninterrupted one).
      readout_l1: λ of an L1 penalty on the readout weights `W_out`, applied as a proximal step after
        each update (`soft_threshold` by learning rate × λ), so that readout weights the data does
        not call for end at exactly 0; 0 for none. When set, `self.readout_l1` holds λ as a
        variable: assign 0 to it to train some epochs without the penalty.
    """

    def __init__(
        self,
        model: LSTMModel,
        optimizer: Adam,
        target: str = "final",
        jit_compile: bool = False,
        clip_norm: float | None = None,
        full_length_batches: bool = False,
        preactivation_noise: float = 0.0,
        seed: int = 0,
        readout_l1: float = 0.0,
    ):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.model = model
        self.optimizer = optimizer
        self.target = target
        self.clip_norm = clip_norm
        if preactivation_noise < 0.0:
            raise ValueError(f"preactivation_noise must be >= 0, got {preactivation_noise}")
        self.preactivation_noise = preactivation_noise
        self.seed = seed
        if readout_l1 < 0.0:
            raise ValueError(f"readout_l1 must be >= 0, got {readout_l1}")
        self.readout_l1 = None
        if readout_l1 > 0.0:
            self.readout_l1 = tf.Variable(readout_l1, dtype=model.dtype, trainable=False, name="readout_l1")
        self.last_step_only = target == "final" and full_length_batches
        self.one_tanh = jit_compile  # one fused tanh for the four gates pays off under XLA only
        # Every loop and branch here is explicit (tf.while_loop, Python ifs on static values), so
        # AutoGraph has nothing to convert; skipping it saves seconds of tracing.
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile, autograph=False)
        # The same update without preactivation_noise; traced (and compiled) only when first called.
        self.noise_free_train_step = self.train_step if preactivation_noise == 0.0 else tf.function(
            functools.partial(self._train_step, noisy=False), jit_compile=jit_compile, autograph=False)
        signature = [
            tf.TensorSpec([None, None, model.config.input_size], model.dtype),
            tf.TensorSpec([None, None], model.dtype),
            tf.TensorSpec([None], tf.int32),
        ]
        self.evaluate = tf.function(self._evaluate, input_signature=signature, autograph=False)
        self.gradients = tf.function(self._gradients, input_signature=signature, autograph=False)

    def _loss(self, inputs, targets, lengths, training, noisy=True):
        targets = tf.cast(targets, self.model.dtype)
        noise = self.preactivation_noise if training and noisy else 0.0
        noise_seed = None
        if noise > 0.0:
            noise_seed = tf.stack([tf.constant(self.seed, tf.int64), self.optimizer.iterations])
        output = self.model.run(
            inputs, training, last_step_only=self.last_step_only, one_tanh=self.one_tanh,
            preactivation_noise=noise, noise_seed=noise_seed)
        if self.last_step_only:
            return tf.reduce_mean(tf.square(output.predictions[:, 0, 0] - targets[:, -1]))
        predictions = output.predictions[..., 0]  # [batch, time]
        return loss_fn(predictions, targets, lengths, self.target)

    def _gradients(self, inputs, targets, lengths, noisy=True):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss = self._loss(inputs, targets, lengths, training=True, noisy=noisy)
        gradients = tape.gradient(loss, variables)
        if self.clip_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return loss, gradients

    def _train_step(self, inputs, targets, lengths, noisy=True):
        """One update on a batch; returns the loss before the update."""
        loss, gradients = self._gradients(inputs, targets, lengths, noisy)
        self.optimizer.apply_gradients(gradients)
        if self.readout_l1 is not None:
            soft_threshold(self.model.W_out, self.optimizer.learning_rate * self.readout_l1)
        return loss

    def _evaluate(self, inputs, targets, lengths):
        predictions = self.model(inputs)[..., 0]
        return metrics_fn(predictions, targets, lengths)
