"""The compiled training step: any task's loss, the hand-written BPTT, clipping, Adam.

    loss      = task.loss(run_model, batch)          the task's, on a batch laid out as it likes
    gradients = ∂loss/∂θ                              through `model.backprop` ("bptt": rnn.py's)
    θ        <- Adam(θ, clip(gradients))

`run_model` is the model with the step's settings applied: Gaussian preactivation noise (seeded by
the run seed and the optimizer's step counter, so a resumed run draws the same noise as an
uninterrupted one) and, under XLA, the one-tanh gate kernel.
"""

from __future__ import annotations

import functools
from typing import Callable

import tensorflow as tf

from diy_lstm.model import LSTMModel, ModelOutput
from diy_lstm.optimizer import Adam

TaskLoss = Callable[[Callable[..., ModelOutput], tuple], tf.Tensor]


class Trainer:
    """The compiled training step of a model on a task's loss.

    Args:
      model: the model to train.
      optimizer: an `Adam` over `model.trainable_variables`.
      task_loss: `(run_model, batch) -> scalar loss`, e.g. `Task.loss`.
      jit_compile: compile the training step with XLA.
      clip_norm: if set, gradients are scaled down to this global norm.
      preactivation_noise: standard deviation of the noise added to the gate preactivations in
        `train_step` (see `LSTMModel.run`); 0 for none. `noise_free_train_step` is the same update
        without it.
      seed: with the optimizer's step counter, fixes the noise of every step.
    """

    def __init__(
        self,
        model: LSTMModel,
        optimizer: Adam,
        task_loss: TaskLoss,
        jit_compile: bool = False,
        clip_norm: float | None = None,
        preactivation_noise: float = 0.0,
        seed: int = 0,
    ):
        if preactivation_noise < 0.0:
            raise ValueError(f"preactivation_noise must be >= 0, got {preactivation_noise}")
        self.model = model
        self.optimizer = optimizer
        self.task_loss = task_loss
        self.clip_norm = clip_norm
        self.preactivation_noise = preactivation_noise
        self.seed = seed
        self.one_tanh = jit_compile  # one fused tanh for the four gates pays off under XLA only
        # Every loop and branch here is explicit (tf.while_loop, Python ifs on static values), so
        # AutoGraph has nothing to convert; skipping it saves seconds of tracing.
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile, autograph=False)
        # The same update without the noise; traced (and compiled) only when first called.
        self.noise_free_train_step = self.train_step if preactivation_noise == 0.0 else tf.function(
            functools.partial(self._train_step, noisy=False), jit_compile=jit_compile, autograph=False)
        self.gradients = tf.function(self._gradients, autograph=False)

    def _run_model(self, noisy: bool) -> Callable[..., ModelOutput]:
        noise = self.preactivation_noise if noisy else 0.0
        noise_seed = None
        if noise > 0.0:
            noise_seed = tf.stack([tf.constant(self.seed, tf.int64), self.optimizer.iterations])
        return functools.partial(
            self.model.run, training=True, one_tanh=self.one_tanh, preactivation_noise=noise, noise_seed=noise_seed)

    def _gradients(self, *batch, noisy: bool = True) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The loss of `batch` and its gradients (clipped), in the order of `model.trainable_variables`."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.task_loss(self._run_model(noisy), batch)
        gradients = tape.gradient(loss, variables)
        if self.clip_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return loss, gradients

    def _train_step(self, *batch, noisy: bool = True) -> tf.Tensor:
        """One update on a batch; returns the loss before the update."""
        loss, gradients = self._gradients(*batch, noisy=noisy)
        self.optimizer.apply_gradients(gradients)
        return loss
