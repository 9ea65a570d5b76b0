"""Mixed precision for training (`--mixed_precision`): Keras 3 dtype policies and loss scaling.

- "none": float32 everywhere (the paper's setting and the default).
- "mixed_bfloat16": layers compute in bfloat16, variables stay float32 (TPU / Ampere+ GPUs).
  bfloat16 has float32's exponent range, so no loss scaling is needed.
- "mixed_float16": layers compute in float16, variables float32; float16's range (~6e-8 to
  65504) lets small gradients underflow, so the loss is scaled (`LossScaleOptimizer`, dynamic:
  halved after a step with inf / NaN gradients, which is skipped, doubled after 2,000 finite
  steps). Its scale and counter are optimizer variables, so checkpoints hold them.

What stays float32 whatever the policy: the variables; the loss (the loop casts logits to
float32 before softmax / sigmoid cross-entropy); BatchNormalization's statistics (Keras 3 BN
upcasts float16 / bfloat16 inputs to float32); the EMA averages; weight decay. The policy is
applied only while the training network is built, so networks built elsewhere (export, the
source of fine-tuning's initialisation) are float32, and a SavedModel of a mixed-precision run
takes and returns float32 like any other.
"""

from __future__ import annotations

import contextlib

import keras

from transfer_tf.training.config import MIXED_PRECISION


def check_mixed_precision(value: str) -> str:
    if value not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision={value!r} (use one of {MIXED_PRECISION})")
    return value


def keras_policy(mixed_precision: str) -> str:
    """The Keras dtype policy name of a `--mixed_precision` value."""
    check_mixed_precision(mixed_precision)
    return "float32" if mixed_precision == "none" else mixed_precision


@contextlib.contextmanager
def dtype_policy(mixed_precision: str):
    """Inside the block, layers are created under the policy; afterwards the previous one holds
    again (Keras' policy is process-global)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(keras_policy(mixed_precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def needs_loss_scaling(mixed_precision: str) -> bool:
    return check_mixed_precision(mixed_precision) == "mixed_float16"


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras 3's dynamic loss scaling, with one change: a skipped step (inf / NaN gradients)
    still counts in `iterations`, as Keras 2's did. The loop's step, its learning-rate schedule
    and its checkpoints count the batches drawn, so a skipped step must advance them too."""

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)
