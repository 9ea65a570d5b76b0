"""Exponential moving average of the weights, used for evaluation and export (Inception recipe).

The averages cover the trainable weights and the BatchNormalization moving statistics (every
floating-point weight of the model, as TF-slim's `get_model_variables()` and EfficientNet's
`get_ema_vars()` do). The decay follows `tf.train.ExponentialMovingAverage(num_updates=step)`:
min(decay, (1 + step) / (10 + step)), so short runs are not dominated by the initial weights.
The averages live in their own tf.Variables, so they are checkpointed beside the model.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


def averaged_weights(model: keras.Model) -> list:
    """The model's floating-point weights (trainable and BN statistics), in a fixed order."""
    return [w for w in model.weights if keras.backend.is_float_dtype(w.dtype)]


def _tf_var(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


class ExponentialMovingAverage(tf.Module):
    """Shadow copies of `averaged_weights(model)`; create it inside the strategy's scope."""

    def __init__(self, model: keras.Model, decay: float, name: str = "ema"):
        super().__init__(name=name)
        self.decay = float(decay)
        weights = averaged_weights(model)
        # A plain tuple in a lambda keeps the model's variables out of this module's checkpoint
        # dependencies (they are saved once, under the model).
        self._weights = lambda: weights
        self.averages = [
            tf.Variable(
                _tf_var(w).read_value(),
                trainable=False,
                name=w.path.replace("/", "_") + "_ema",
            )
            for w in weights
        ]

    def decay_at(self, step) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        return tf.minimum(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, step, strategy: tf.distribute.Strategy | None = None) -> None:
        """average ← average − (1 − decay) · (average − weight); call in cross-replica context.

        Under a strategy each replica updates its own copy from its own (identical) weights, so
        no communication is needed.
        """
        one_minus = 1.0 - self.decay_at(step)
        strategy = strategy or tf.distribute.get_strategy()
        for average, weight in zip(self.averages, self._weights(), strict=True):
            strategy.extended.update(
                average,
                lambda a, w: a.assign_sub(one_minus * (a - tf.cast(w, a.dtype))),
                args=(_tf_var(weight),),
                group=False,
            )

    def copy_to_model(self) -> None:
        """Overwrites the model's weights with the averages (export, fine-tuning init)."""
        for average, weight in zip(self.averages, self._weights(), strict=True):
            weight.assign(average.read_value())

    @contextlib.contextmanager
    def swapped(self):
        """Inside the block the model holds the averages; afterwards its own weights again."""
        backup = [tf.identity(_tf_var(w).read_value()) for w in self._weights()]
        self.copy_to_model()
        try:
            yield
        finally:
            for weight, value in zip(self._weights(), backup, strict=True):
                weight.assign(value)
