"""MobileNet v1 (Howard et al. 2017), width 1.0, from `keras.applications.MobileNet`."""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.MobileNet, input_size, settings.bn_scale, alpha=1.0)
    return Trunk(base.input, base.output)


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
)
