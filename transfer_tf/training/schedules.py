"""Learning-rate schedules (Keras 3) and the step arithmetic of the recipes.

Inception-style pretraining (Supp. A.2): linear warmup from 0, then × 0.94 every 2 epochs
(staircase) or cosine decay. Fine-tuning / scratch (Sec. 4.2, SimCLR B.8): cosine decay to 0 over
all steps, no warmup. The decay clock starts after the warmup, so the first decayed value equals
the peak (EfficientNet's TPU code decays on the global step instead; the difference is a shift
by the warmup length).
"""

from __future__ import annotations

import math

import keras
from keras import ops


class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """0 → `peak` linearly over `warmup_steps`, then `peak · rate^floor((t − warmup) / every)`."""

    def __init__(self, peak, warmup_steps, decay_steps, decay_rate, name="WarmupExponentialDecay"):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = max(1, int(decay_steps))
        self.decay_rate = float(decay_rate)
        self.name = name
        self._decay = keras.optimizers.schedules.ExponentialDecay(
            self.peak, self.decay_steps, self.decay_rate, staircase=True
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = self._decay(ops.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warm = self.peak * step / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "name": self.name,
        }


class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """0 → `peak` linearly over `warmup_steps`, then `peak`."""

    def __init__(self, peak, warmup_steps=0, name="Constant"):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return ops.convert_to_tensor(self.peak, "float32") + 0.0 * step
        return self.peak * ops.minimum(step / float(self.warmup_steps), 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "name": self.name}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Optimizer steps that see `num_examples` images once (at least 1)."""
    return max(1, math.ceil(int(num_examples) / int(batch_size)))


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
    return int(round(float(epochs) * int(num_examples) / int(batch_size)))


def learning_rate_schedule(
    kind: str,
    peak: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    decay_steps: int = 1,
    decay_rate: float = 0.94,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's schedule: `kind` is "exponential", "cosine" or "constant"."""
    warmup_steps = int(min(max(warmup_steps, 0), max(total_steps - 1, 0)))
    if kind == "exponential":
        return WarmupExponentialDecay(peak, warmup_steps, decay_steps, decay_rate)
    if kind == "cosine":
        decay = max(1, int(total_steps) - warmup_steps)
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(peak, decay)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay, warmup_target=peak, warmup_steps=warmup_steps
        )
    if kind == "constant":
        return Constant(peak, warmup_steps)
    raise ValueError(
        f"unknown learning-rate schedule {kind!r}; use exponential, cosine or constant"
    )


def finetune_bn_momentum(steps_per_epoch_: int) -> float:
    """BN moving-average momentum max(1 − 10/s, 0.9), s = steps per epoch (SimCLR B.8).

    The moving statistics then average over about a tenth of an epoch (1 / (1 − m) = s / 10
    steps) and never over fewer than 10 steps, so they track the fine-tuned weights on small
    datasets instead of keeping their ImageNet values.
    """
    return max(1.0 - 10.0 / float(steps_per_epoch_), 0.9)
