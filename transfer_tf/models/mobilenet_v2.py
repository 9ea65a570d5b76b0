"""MobileNet v2 (Sandler et al. 2018), widths 1.0 and 1.4, from `keras.applications.MobileNetV2`.
At width 1.4 the last 1x1 convolution widens to 1792 channels (1280 x 1.4).

Keras' network is TF-slim's `nets/mobilenet/mobilenet_v2.py` layer for layer: the same channel
rounding, BN epsilon 0.001, and stride-2 paddings (`correct_pad` + VALID) equal to slim's 'SAME'
at every input size.

Published checkpoints (`build_model("mobilenet_v2", 1000, weights=PATH)`):
- TF-slim's `mobilenet_v2_1.0_224.ckpt` / `mobilenet_v2_1.4_224.ckpt` (scope `MobilenetV2`,
  1001-way, [-1, 1] input);
- Keras Applications' `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5` / `_1.4_224`.
"""

from __future__ import annotations

import re

import keras

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, keras_h5_layout, slim_names
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _trunk_builder(alpha):
    def build(input_size, settings):
        base = keras_application(
            keras.applications.MobileNetV2, input_size, settings.bn_scale, alpha=alpha
        )
        return Trunk(base.input, base.output)

    return build


# Keras' layer -> slim's scope (Keras numbers blocks 1-16 as slim's expanded_conv_1..16; block 0,
# without an expansion, is Keras' `expanded_conv_*` and slim's `expanded_conv`).
_BLOCK = re.compile(r"^block_(?P<n>\d+)_(?P<op>expand|depthwise|project)(_BN)?$")
_FIRST_BLOCK = re.compile(r"^expanded_conv_(?P<op>depthwise|project)(_BN)?$")
_SLIM_SCOPES = {
    "Conv1": "Conv",
    "bn_Conv1": "Conv",
    "Conv_1": "Conv_1",
    "Conv_1_bn": "Conv_1",
    "logits": "Logits/Conv2d_1c_1x1",
}


def slim_scope(layer: str) -> str:
    """TF-slim `nets/mobilenet/mobilenet_v2.py` scope of one of our (Keras) layers:
    `block_3_expand_BN` -> `MobilenetV2/expanded_conv_3/expand`, `Conv_1` -> `MobilenetV2/Conv_1`.
    """
    if layer in _SLIM_SCOPES:
        return f"MobilenetV2/{_SLIM_SCOPES[layer]}"
    match = _BLOCK.match(layer)
    if match:
        return f"MobilenetV2/expanded_conv_{match['n']}/{match['op']}"
    match = _FIRST_BLOCK.match(layer)
    if match:
        return f"MobilenetV2/expanded_conv/{match['op']}"
    raise ValueError(f"mobilenet_v2: no TF-slim scope for layer {layer!r}")


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    preprocessing="inception",
    head_bias="MobilenetV2/Logits/Conv2d_1c_1x1/biases",
    published="tensorflow/models research/slim/nets/mobilenet/mobilenet_v2.py",
)

KERAS_H5 = keras_h5_layout(
    "keras/src/applications/mobilenet_v2.py (keras.applications.MobileNetV2)"
)


for _name, _alpha, _dim, _top1, _params in (
    ("mobilenet_v2", 1.0, 1280, 0.719, 3_470_000),
    ("mobilenet_v2_140", 1.4, 1792, 0.749, 6_060_000),
):
    register(
        ModelSpec(
            name=_name,
            family="mobilenet_v2",
            input_size=224,
            preprocessing="inception",
            feature_dim=_dim,
            imagenet_top1=_top1,
            top1_source=f"{sources.SLIM_README}: MobileNet_v2_{_alpha:.1f}_224",
            published_params=_params,
            params_source=f"{sources.SLIM_MOBILENET_V2}: mobilenet_v2_{_alpha:.1f}_224",
            params_counted="without_bn",
            min_input_size=32,
        ),
        _trunk_builder(_alpha),
        checkpoints=(SLIM_CHECKPOINT, KERAS_H5),
    )
