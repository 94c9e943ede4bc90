"""Adam (Kingma & Ba, 2015) as a checkpointable `tf.Module`.

For each variable θ with gradient g, at step t = 1, 2, ...:

    m ← β₁ m + (1 - β₁) g            v ← β₂ v + (1 - β₂) g²
    θ ← θ - α √(1 - β₂ᵗ) / (1 - β₁ᵗ) · m / (√v + ε)

(the form of TF1's `AdamOptimizer`, which the reference notebook used). Each update is one fused
`ResourceApplyAdam` kernel per variable. The moments, the step count and the learning rate are
variables, so a checkpoint of this module resumes training exactly.

Every update goes through the variables' handles. Under a `tf.distribute` strategy (made in its
scope, applied in a replica's step) a handle is the replica's own copy: each replica applies the
same all-reduced gradients to its copy, and the copies stay equal.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import tensorflow as tf


class Adam(tf.Module):
    """Adam with moment slots made up front for a fixed list of variables.

    Args:
      variables: what to train (e.g. `model.trainable_variables`); `apply_gradients` takes their
        gradients in this order. They are not tracked here, so a checkpoint names each variable
        by its place in the model (`model/layers/0/W_f`), not in the optimizer.
      learning_rate: α (a variable: assign to it to change it during training).
      beta_1, beta_2, epsilon: β₁, β₂, ε.
      weight_decay: λ of decoupled weight decay (AdamW): before each update θ ← θ - α λ θ.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.0,
        name: str | None = None,
    ):
        super().__init__(name=name)
        variables = list(variables)
        self._variable_refs = tuple(v.ref() for v in variables)  # refs are not tracked
        dtype = variables[0].dtype
        with self.name_scope:
            self.learning_rate = tf.Variable(learning_rate, dtype=dtype, trainable=False, name="learning_rate")
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            self.first_moments = [
                tf.Variable(tf.zeros_like(v), trainable=False, name=f"m_{v.name.split(':')[0].replace('/', '_')}")
                for v in variables
            ]
            self.second_moments = [
                tf.Variable(tf.zeros_like(v), trainable=False, name=f"v_{v.name.split(':')[0].replace('/', '_')}")
                for v in variables
            ]
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay = weight_decay

    def apply_gradients(self, gradients: Iterable[tf.Tensor]) -> None:
        """One update of every variable; `gradients` in the order of `variables`."""
        gradients = list(gradients)
        variables = [ref.deref() for ref in self._variable_refs]
        if len(gradients) != len(variables):
            raise ValueError(f"expected {len(variables)} gradients, got {len(gradients)}")
        step = tf.cast(self.iterations + 1, self.learning_rate.dtype)
        beta_1_power = tf.pow(tf.constant(self.beta_1, self.learning_rate.dtype), step)
        beta_2_power = tf.pow(tf.constant(self.beta_2, self.learning_rate.dtype), step)
        for variable, m, v, gradient in zip(variables, self.first_moments, self.second_moments, gradients):
            if self.weight_decay:
                tf.raw_ops.AssignSubVariableOp(
                    resource=variable.handle, value=self.learning_rate * self.weight_decay * variable
                )
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=self.learning_rate,
                beta1=tf.constant(self.beta_1, variable.dtype),
                beta2=tf.constant(self.beta_2, variable.dtype),
                epsilon=tf.constant(self.epsilon, variable.dtype),
                grad=gradient,
            )
        tf.raw_ops.AssignAddVariableOp(resource=self.iterations.handle, value=tf.constant(1, tf.int64))
