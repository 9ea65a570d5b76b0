"""ResNet-50 / 101 / 152 (He et al. 2016), version 1 with the stride in the 3x3 convolution.

Built from `keras.applications.ResNet{50,101,152}` (Caffe ResNet v1) and changed through its
config to the TF-slim `resnet_v1` / fb.resnet.torch layout the paper cites ([26], Gross &
Wilber): a block's stride moves from its first 1x1 convolution to its 3x3 convolution, and
convolutions followed by BatchNormalization lose their (redundant) bias. See
BUILD_NOTES.md (Model zoo) for why v1 and not v2.
"""

from __future__ import annotations

import re

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register

_STRIDED_STAGES = ("conv3", "conv4", "conv5")


def stride_in_3x3(layer_config: dict) -> bool:
    match = re.fullmatch(r"(conv\d)_block1_([12])_conv", layer_config["config"]["name"])
    if not match or match.group(1) not in _STRIDED_STAGES:
        return False
    layer_config["config"]["strides"] = [1, 1] if match.group(2) == "1" else [2, 2]
    return True


def no_bias_before_bn(layer_config: dict) -> bool:
    if layer_config["class_name"] != "Conv2D" or not layer_config["config"]["use_bias"]:
        return False
    layer_config["config"]["use_bias"] = False
    return True


def _trunk_builder(factory):
    def build(input_size, settings):
        base = keras_application(
            factory, input_size, settings.bn_scale, stride_in_3x3, no_bias_before_bn
        )
        return Trunk(base.input, base.output)

    return build


for _name, _factory, _top1, _params in (
    ("resnet_50", keras.applications.ResNet50, 0.752, 25_557_032),
    ("resnet_101", keras.applications.ResNet101, 0.764, 44_549_160),
    ("resnet_152", keras.applications.ResNet152, 0.768, 60_192_808),
):
    register(
        ModelSpec(
            name=_name,
            family="resnet",
            input_size=224,
            preprocessing="inception",
            feature_dim=2048,
            imagenet_top1=_top1,
            top1_source=f"{sources.SLIM_README}: ResNet V1 {_name.split('_')[1]}",
            published_params=_params,
            params_source=f"{sources.SLIM_PROFILE}: resnet_v1_{_name.split('_')[1]}",
            min_input_size=32,
        ),
        _trunk_builder(_factory),
    )
