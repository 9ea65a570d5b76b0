"""The TensorFlow backend of the logistic-regression solver: its passes over the training set.

The solver (`transfer_tf.protocols.logreg.LogisticRegressionProblem`: rotation, preconditioning,
L-BFGS, the float32 / float64 phases) is the same for both backends; this module computes what
`logreg.NumpyPasses` computes, with TensorFlow, on a GPU when one is visible (TensorFlow's
default placement), else on the CPU. The features, the float32 rotated features Z and the
targets stay on the device; each evaluation moves only the weights [r, K] and the gradient.

Float32 where rounding does not matter (the float32 phase's two matrix products, as numpy's),
float64 where it does (logits' softmax and loss, the float64 phase, the precomputation).
TensorFloat-32 is switched off for the process: on Ampere and later GPUs TensorFlow otherwise
runs float32 matrix products with 10-bit mantissas, far too coarse for the float32 phase.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _loss_and_residual(logits, targets, binary: bool):
    """(summed loss, ∂loss/∂logits per example), as `logreg._loss_and_residual`."""
    if binary:
        loss = tf.reduce_sum(tf.nn.softplus(logits) - targets * logits)
        return loss, tf.sigmoid(logits) - targets
    loss = tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1)) - tf.reduce_sum(targets * logits)
    return loss, tf.nn.softmax(logits, axis=1) - targets


class TensorFlowPasses:
    """`logreg.NumpyPasses` with TensorFlow (see the module docstring); the same five methods."""

    name = "tensorflow"
    chunk_rows = 16384

    def __init__(self, features: np.ndarray):
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.num_examples = len(features)
        self.features = tf.constant(features)
        self._rows = [
            (start, min(start + self.chunk_rows, self.num_examples))
            for start in range(0, self.num_examples, self.chunk_rows)
        ]

    def _chunk64(self, start: int, stop: int):
        return tf.cast(self.features[start:stop], tf.float64)

    def mean_and_scatter(self) -> tuple[np.ndarray, np.ndarray]:
        mean = tf.add_n([tf.reduce_sum(self._chunk64(*rows), axis=0) for rows in self._rows])
        mean /= self.num_examples
        scatter = 0.0
        for rows in self._rows:
            x = self._chunk64(*rows) - mean
            scatter += tf.matmul(x, x, transpose_a=True)
        return mean.numpy(), scatter.numpy()

    def prepare(self, mean, basis, targets, binary: bool, num_outputs: int):
        self.binary = binary
        self.mean = tf.constant(mean, tf.float64)
        self.basis = tf.constant(basis, tf.float64)
        if binary:
            self.targets = tf.constant(targets, tf.float64)
        else:  # labels → one-hot [N, K] on the device
            self.targets = tf.one_hot(targets, num_outputs, dtype=tf.float64)
        self.z = tf.concat(
            [
                tf.cast(tf.matmul(self._chunk64(*rows) - self.mean, self.basis), tf.float32)
                for rows in self._rows
            ],
            axis=0,
        )
        self._forward32 = tf.function(self._forward32_eager)
        self._forward64 = tf.function(self._forward64_eager)
        self._backward32 = tf.function(self._backward32_eager)
        self._backward64 = tf.function(self._backward64_eager)
        self._along = tf.function(self._along_eager)

    def _forward32_eager(self, m, b):
        return tf.cast(tf.matmul(self.z, tf.cast(m, tf.float32)), tf.float64) + b

    def _forward64_eager(self, m, b):
        w = tf.matmul(self.basis, m)
        c = b - tf.linalg.matvec(w, self.mean, transpose_a=True)
        return tf.concat([tf.matmul(self._chunk64(*rows), w) for rows in self._rows], 0) + c

    def _backward32_eager(self, logits):
        loss, g = _loss_and_residual(logits, self.targets, self.binary)
        grad_m = tf.matmul(self.z, tf.cast(g, tf.float32), transpose_a=True)
        return loss, tf.cast(grad_m, tf.float64), tf.reduce_sum(g, axis=0)

    def _backward64_eager(self, logits):
        loss, g = _loss_and_residual(logits, self.targets, self.binary)
        grad_b = tf.reduce_sum(g, axis=0)
        grad_w = tf.add_n(
            [
                tf.matmul(self._chunk64(start, stop), g[start:stop], transpose_a=True)
                for start, stop in self._rows
            ]
        )
        grad_w -= self.mean[:, None] * grad_b[None, :]
        return loss, tf.matmul(self.basis, grad_w, transpose_a=True), grad_b

    def _along_eager(self, logits, direction, alpha):
        z = logits + alpha * direction
        loss, residual = _loss_and_residual(z, self.targets, self.binary)
        slope = tf.reduce_sum(residual * direction)
        p = residual + self.targets
        if self.binary:
            curvature = tf.reduce_sum(p * (1.0 - p) * direction**2)
        else:
            mean_t = tf.reduce_sum(p * direction, axis=1)
            curvature = tf.reduce_sum(p * direction**2) - tf.reduce_sum(mean_t**2)
        return loss, slope, curvature

    def forward(self, m: np.ndarray, b: np.ndarray, precision: int):
        fn = self._forward32 if precision == 32 else self._forward64
        return fn(tf.constant(m, tf.float64), tf.constant(b, tf.float64))

    def backward(self, logits, precision: int):
        fn = self._backward32 if precision == 32 else self._backward64
        loss, grad_m, grad_b = fn(logits)
        n = self.num_examples
        return float(loss) / n, grad_m.numpy() / n, grad_b.numpy() / n

    def along(self, logits, direction, alpha: float):
        values = self._along(logits, direction, tf.constant(alpha, tf.float64))
        return tuple(float(v) / self.num_examples for v in values)

    def step(self, logits, direction, alpha: float):
        return logits + alpha * direction

    def mean_loss(self, weights: np.ndarray, bias: np.ndarray) -> float:
        w, b = tf.constant(weights, tf.float64), tf.constant(bias, tf.float64)
        loss = 0.0
        for start, stop in self._rows:
            logits = tf.matmul(self._chunk64(start, stop), w) + b
            loss += float(_loss_and_residual(logits, self.targets[start:stop], self.binary)[0])
        return loss / self.num_examples
