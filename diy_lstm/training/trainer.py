"""The compiled training step: any task's loss, the hand-written BPTT, clipping, Adam.

    loss      = task.loss(run_model, batch)          the task's, on a batch laid out as it likes
    gradients = ∂loss/∂θ                              through `model.backprop` ("bptt": rnn.py's)
    θ        <- Adam(θ, clip(gradients))

`run_model` is the model with the step's settings applied, both chosen here and handed to
`LSTMModel.run` as functions: Gaussian preactivation noise (`gaussian_gate_noise`, seeded by the run
seed and the optimizer's step counter, so a resumed run draws the same noise as an uninterrupted one)
and whether the step runs under XLA (where the loop takes its faster form, `rnn.schedule`).

Under a `tf.distribute` strategy with R replicas (distribute.py) each replica runs the step on its
slice r of the global batch, and the strategy's all-reduce joins them:

    loss      = Σ_r share_r · loss_r,      share_r = count_r / Σ_r' count_r'   (the task's terms)
    gradients = Σ_r share_r · ∂loss_r/∂θ                                        (then clipped)

which is the mean over the whole batch: the step of one device, up to the order of the sums. Each
replica draws the global batch's noise and keeps its own rows, so the noise is one device's too.
Every replica applies the same Adam update to its own copy of the variables.
"""

from __future__ import annotations

import functools
from typing import Callable

import tensorflow as tf

from diy_lstm.model import GateNoise, LSTMModel, ModelOutput
from diy_lstm.training.optimizer import Adam
from diy_lstm.training.task import BatchLoss, RunModel

TaskLoss = Callable[[RunModel, tuple[tf.Tensor, ...]], BatchLoss]  # e.g. `Task.loss`


NOISE_DISTRIBUTIONS = ("normal", "table")
NOISE_TABLE_SIZE = 2**22  # Gaussian values drawn once per run: 16 MB in float32


def noise_table(seed: int, dtype: tf.DType, size: int = NOISE_TABLE_SIZE) -> tf.Tensor:
    """`size` standard Gaussian values `[size]`, fixed by the run seed: what `table_noise` reads."""
    return tf.random.stateless_normal([size], tf.constant([seed, 0x7AB1E], tf.int64), dtype=dtype, alg="philox")


def table_noise(table: tf.Tensor, shape: tf.Tensor, seed: tf.Tensor, stddev: float) -> tf.Tensor:
    """Gaussian noise `shape` read from `table` `[size]` at a random offset (wrapping around): the
    values within one draw are distinct independent Gaussians, and each draw starts elsewhere.
    The shared noise table of evolution strategies (Salimans et al., 2017): a gather instead of a
    Gaussian draw per value, a tenth of its cost on CPU."""
    size = tf.shape(table)[0]
    offset = tf.random.stateless_uniform([], seed, minval=0, maxval=size, dtype=tf.int32, alg="philox")
    index = (offset + tf.range(tf.reduce_prod(shape))) % size
    return stddev * tf.reshape(tf.gather(table, index), shape)


def gaussian_gate_noise(
    stddev: float,
    seed: tf.Tensor,
    rows: tuple[tf.Tensor, tf.Tensor] | None = None,
    distribution: str = "normal",
    table: tf.Tensor | None = None,
) -> GateNoise:
    """Gaussian noise of standard deviation `stddev` for the gate preactivations, `[time, batch,
    4 * units]`: drawn value by value, or (`distribution="table"`) read from `table` (`noise_table`,
    drawn once) at a random offset, a tenth of the cost (`table_noise`).

    `seed` is a stateless-RNG seed (`[2]` int64); each layer draws from its own stream. With `rows`
    `(first, global_batch)` the noise of a global batch is drawn and rows `first : first + batch`
    kept: a replica's share of the noise one device draws for the whole batch.
    """
    seed = tf.convert_to_tensor(seed, tf.int64)

    def noise(layer_index: int, shape: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        layer_seed = seed + tf.constant([0, layer_index * 2**32], tf.int64)
        time, batch, width = shape[0], shape[1], shape[2]
        drawn = batch if rows is None else tf.cast(rows[1], tf.int32)
        shape = tf.stack([time, drawn, width])
        # Philox explicitly: XLA's default generator on CPU is some 30x slower.
        if distribution == "table":
            values = table_noise(table, shape, layer_seed, stddev)
        else:
            values = stddev * tf.random.stateless_normal(shape, layer_seed, dtype=dtype, alg="philox")
        if rows is None:
            return values
        first = tf.cast(rows[0], tf.int32)
        return values[:, first : first + batch]

    return noise


class Trainer:
    """The compiled training step of a model on a task's loss.

    Args:
      model: the model to train.
      optimizer: an `Adam` over `model.trainable_variables`.
      task_loss: `(run_model, batch) -> BatchLoss`, e.g. `Task.loss`.
      jit_compile: compile the training step with XLA (with replicas: each replica's loss and
        gradients; the all-reduce and the update run outside XLA).
      clip_norm: if set, gradients are scaled down to this global norm.
      preactivation_noise: standard deviation of the noise added to the gate preactivations in
        `train_step` (see `LSTMModel.run`); 0 for none. `noise_free_train_step` is the same update
        without it.
      seed: with the optimizer's step counter, fixes the noise of every step.
      strategy: a `tf.distribute` strategy whose scope made the model and optimizer; the steps then
        take per-replica batches (`distribute.distribute_batches`). None: one device.
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
        strategy: tf.distribute.Strategy | None = None,
        noise_distribution: str = "normal",
    ):
        if preactivation_noise < 0.0:
            raise ValueError(f"preactivation_noise must be >= 0, got {preactivation_noise}")
        self.model = model
        self.optimizer = optimizer
        self.task_loss = task_loss
        self.clip_norm = clip_norm
        self.preactivation_noise = preactivation_noise
        self.noise_distribution = noise_distribution
        self.seed = seed
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = strategy is not None
        self.xla = jit_compile
        # Every loop and branch here is explicit (tf.while_loop, Python ifs on static values), so
        # AutoGraph has nothing to convert; skipping it saves seconds of tracing. XLA compiles the
        # whole step on one device; with replicas, each replica's part before the all-reduce.
        step_jit = jit_compile and not self.distributed
        self._local_gradients = (
            tf.function(self._loss_and_gradients, jit_compile=True, autograph=False)
            if jit_compile and self.distributed
            else self._loss_and_gradients
        )
        self.train_step = tf.function(self._train_step, jit_compile=step_jit, autograph=False)
        # The same update without the noise; traced (and compiled) only when first called.
        self.noise_free_train_step = (
            self.train_step
            if preactivation_noise == 0.0
            else tf.function(functools.partial(self._train_step, noisy=False), jit_compile=step_jit, autograph=False)
        )
        self.gradients = tf.function(self._gradients, autograph=False)
        self.noise_table = None
        if noise_distribution == "table" and preactivation_noise > 0.0:
            with self.strategy.scope():
                self.noise_table = tf.Variable(noise_table(seed, model.dtype), trainable=False, name="noise_table")

    def _run_model(self, noisy: bool, noise_rows: tuple[tf.Tensor, tf.Tensor] | None) -> Callable[..., ModelOutput]:
        noise = None
        if noisy and self.preactivation_noise > 0.0:
            seed = tf.stack([tf.constant(self.seed, tf.int64), self.optimizer.iterations])
            noise = gaussian_gate_noise(
                self.preactivation_noise, seed, noise_rows, self.noise_distribution, self.noise_table
            )
        return functools.partial(self.model.run, training=True, xla=self.xla, gate_noise=noise)

    def _loss_and_gradients(self, batch: tuple, noise_rows, noisy: bool) -> tuple[BatchLoss, list[tf.Tensor]]:
        """This replica's loss terms and the gradients of its mean, in the order of `model.trainable_variables`."""
        with tf.GradientTape() as tape:
            loss = self.task_loss(self._run_model(noisy, noise_rows), batch)
        return loss, tape.gradient(loss.mean, self.model.trainable_variables)

    def _replica_gradients(self, *batch, noisy: bool = True) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The global batch's loss and gradients (clipped), joined over the replicas (module docstring)."""
        context = tf.distribute.get_replica_context()
        noise_rows = None
        if self.distributed and noisy and self.preactivation_noise > 0.0:
            rows = tf.shape(batch[0], out_type=tf.int64)[:1]
            every_replica = context.all_gather(rows, axis=0)  # [replicas]
            noise_rows = (
                tf.reduce_sum(every_replica[: context.replica_id_in_sync_group]),
                tf.reduce_sum(every_replica),
            )
        loss, gradients = self._local_gradients(batch, noise_rows, noisy)
        share = tf.math.divide_no_nan(loss.count, context.all_reduce(tf.distribute.ReduceOp.SUM, loss.count))
        values = {"loss": loss.mean} if loss.error is None else {"loss": loss.mean, "error": loss.error}
        values, gradients = context.all_reduce(
            tf.distribute.ReduceOp.SUM,
            ({name: value * share for name, value in values.items()}, [gradient * share for gradient in gradients]),
        )
        if self.clip_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return values, gradients

    def _gradients(self, *batch) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The loss of `batch` and its clipped gradients."""
        values, gradients = self.strategy.run(self._replica_gradients, args=batch)
        local = self.strategy.experimental_local_results
        return local(values["loss"])[0], [local(gradient)[0] for gradient in gradients]

    def _replica_step(self, *batch, noisy: bool) -> dict[str, tf.Tensor]:
        values, gradients = self._replica_gradients(*batch, noisy=noisy)
        self.optimizer.apply_gradients(gradients)
        return values

    def _train_step(self, *batch, noisy: bool = True) -> dict[str, tf.Tensor]:
        """One update on a batch; returns the batch's `loss` before the update, and its `error` if
        the task's `BatchLoss` has one (noise included, as the update saw it)."""
        values = self.strategy.run(self._replica_step, args=batch, kwargs={"noisy": noisy})
        local = self.strategy.experimental_local_results
        return {name: local(value)[0] for name, value in values.items()}
