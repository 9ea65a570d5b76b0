"""MobileNet v2 (Sandler et al. 2018), widths 1.0 and 1.4, from `keras.applications.MobileNetV2`.
At width 1.4 the last 1x1 convolution widens to 1792 channels (1280 x 1.4)."""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _trunk_builder(alpha):
    def build(input_size, settings):
        base = keras_application(
            keras.applications.MobileNetV2, input_size, settings.bn_scale, alpha=alpha
        )
        return Trunk(base.input, base.output)

    return build


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
    )
