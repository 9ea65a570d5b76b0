"""MobileNet v1 (Howard et al. 2017), width 1.0, from `keras.applications.MobileNet`.

The stride-2 depthwise convolutions pad 'SAME', as TF-slim's `nets/mobilenet_v1.py` (the net of
the published TF checkpoints) does. Keras pads them by a fixed one pixel bottom / right, the same
thing only where the map entering them is even (at 224 and every multiple of 32); elsewhere
Keras' maps come out one pixel smaller (6x6 instead of 7x7 at the end, at 200 px), so the padding
is set here from the map size.

Published checkpoints (`build_model("mobilenet_v1", 1000, weights=PATH)`):
- TF-slim's `mobilenet_v1_1.0_224.ckpt` (scope `MobilenetV1`, 1001-way, [-1, 1] input);
- Keras Applications' `mobilenet_1_0_224_tf.h5` (its classifier is a 1x1 conv `conv_preds`).
"""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, keras_h5_layout, slim_names
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register

# How often the map entering each of Keras' stride-2 depthwise blocks has been halved.
_HALVINGS = {"conv_pad_2": 1, "conv_pad_4": 2, "conv_pad_6": 3, "conv_pad_12": 4}


def same_padding(input_size: int):
    """An edit giving Keras' ZeroPadding2D layers the padding of 'SAME' for a 3x3 stride-2
    convolution at `input_size`: one pixel after, and one before where the map is odd."""

    def edit(layer_config: dict) -> bool:
        halvings = _HALVINGS.get(layer_config["config"]["name"])
        if layer_config["class_name"] != "ZeroPadding2D" or halvings is None:
            return False
        size = -(-input_size // 2**halvings)  # 'SAME' rounds up
        pad = ((size % 2, 1), (size % 2, 1))
        if tuple(map(tuple, layer_config["config"]["padding"])) == pad:
            return False
        layer_config["config"]["padding"] = pad
        return True

    return edit


def build_trunk(input_size, settings):
    base = keras_application(
        keras.applications.MobileNet,
        input_size,
        settings.bn_scale,
        same_padding(input_size),
        alpha=1.0,
    )
    return Trunk(base.input, base.output)


def slim_scope(layer: str) -> str:
    """TF-slim `nets/mobilenet_v1.py` scope of one of our (Keras) layers: `conv1` ->
    `MobilenetV1/Conv2d_0`, `conv_dw_3_bn` -> `MobilenetV1/Conv2d_3_depthwise`,
    `conv_pw_3` -> `MobilenetV1/Conv2d_3_pointwise`."""
    if layer == "logits":
        return "MobilenetV1/Logits/Conv2d_1c_1x1"
    base = layer.removesuffix("_bn")
    if base == "conv1":
        return "MobilenetV1/Conv2d_0"
    kind, block = base.split("_")[1:]  # conv_dw_3 -> dw, 3
    return f"MobilenetV1/Conv2d_{block}_{'depthwise' if kind == 'dw' else 'pointwise'}"


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    preprocessing="inception",
    head_bias="MobilenetV1/Logits/Conv2d_1c_1x1/biases",
    published="tensorflow/models research/slim/nets/mobilenet_v1.py",
)

KERAS_H5 = keras_h5_layout(
    "keras/src/applications/mobilenet.py (keras.applications.MobileNet, alpha 1.0)",
    head="conv_preds",
)


register(
    ModelSpec(
        name="mobilenet_v1",
        family="mobilenet_v1",
        input_size=224,
        preprocessing="inception",
        feature_dim=1024,
        imagenet_top1=0.709,
        top1_source=f"{sources.SLIM_README}: MobileNet_v1_1.0_224",
        published_params=4_200_000,
        params_source=sources.MOBILENET_V1_PAPER,
        params_counted="without_bn",
        min_input_size=32,
    ),
    build_trunk,
    checkpoints=(SLIM_CHECKPOINT, KERAS_H5),
)
