"""ResNet-50 / 101 / 152 (He et al. 2016), version 1, layer for layer as TF-slim's
`nets/resnet_v1.py` (the layout the paper's ResNets come from; see BUILD_NOTES.md, Model zoo, for
why v1 and not v2).

Where slim differs from Caffe ResNet v1 (and Keras' `ResNet50`), slim is followed:
- a block subsamples in its LAST unit: the 3x3 convolution has the stride, and the identity
  shortcut is subsampled by a 1x1 max-pool; the first unit's projection shortcut has stride 1;
- a strided convolution pads explicitly (`conv2d_same`: pad (k-1)//2 before and the rest after,
  then VALID), so its output does not depend on whether the input size is even;
- the max-pooling after conv1 is SAME-padded;
- BN epsilon 1e-5, BN γ on (`resnet_arg_scope`); no convolution bias before a BN.
"""

from __future__ import annotations

import re

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, slim_names
from transfer_tf.models.layers import batch_norm
from transfer_tf.models.registry import ModelSpec, Trunk, register

# slim's resnet_arg_scope (the value of the published Caffe-converted and slim-trained nets).
BN_EPSILON = 1e-5
# Units per block (block1..block4: bottleneck depth 64, 128, 256, 512; output 4x that).
DEPTHS = {"resnet_50": (3, 4, 6, 3), "resnet_101": (3, 4, 23, 3), "resnet_152": (3, 8, 36, 3)}
_BLOCK_STRIDES = (2, 2, 2, 1)


def conv_bn(x, filters, kernel, stride, bn_scale, name, relu=True):
    """slim's `conv2d_same` under resnet_arg_scope: conv (explicitly padded when strided), BN,
    ReLU unless `relu` is False."""
    padding = "same"
    if stride > 1 and kernel > 1:
        before = (kernel - 1) // 2
        x = layers.ZeroPadding2D(((before, kernel - 1 - before),) * 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv"
    )(x)
    x = batch_norm(x, bn_scale, name=f"{name}_bn", epsilon=BN_EPSILON)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def bottleneck(x, depth, stride, bn_scale, name):
    """slim's `bottleneck` (v1): ReLU(shortcut + 1x1 -> 3x3 (strided) -> 1x1)."""
    if x.shape[-1] == depth:
        shortcut = x
        if stride > 1:
            shortcut = layers.MaxPooling2D(
                1, strides=stride, padding="same", name=f"{name}_shortcut"
            )(x)
    else:
        shortcut = conv_bn(x, depth, 1, stride, bn_scale, f"{name}_shortcut", relu=False)
    residual = conv_bn(x, depth // 4, 1, 1, bn_scale, f"{name}_conv1")
    residual = conv_bn(residual, depth // 4, 3, stride, bn_scale, f"{name}_conv2")
    residual = conv_bn(residual, depth, 1, 1, bn_scale, f"{name}_conv3", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, residual])
    return layers.ReLU(name=f"{name}_out")(x)


def _trunk_builder(units_per_block):
    def build(input_size, settings):
        s = settings.bn_scale
        inputs = keras.Input((input_size, input_size, 3), name="images")
        x = conv_bn(inputs, 64, 7, 2, s, "conv1")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        for b, (units, stride) in enumerate(zip(units_per_block, _BLOCK_STRIDES, strict=True)):
            for u in range(units):
                last = u == units - 1
                x = bottleneck(x, 256 * 2**b, stride if last else 1, s, f"block{b + 1}_unit{u + 1}")
        features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return Trunk(inputs, features)

    return build


_UNIT_LAYER = re.compile(r"^(block\d)_unit(\d+)_(conv\d|shortcut)_(conv|bn)$")


def slim_scope_of(scope: str):
    """Our layer -> its scope in slim's `resnet_v1_<depth>` (`block3_unit2_conv2_bn` ->
    `resnet_v1_50/block3/unit_2/bottleneck_v1/conv2`)."""

    def scope_of(layer: str) -> str | None:
        if layer == "logits":
            return f"{scope}/logits"
        if layer in ("conv1_conv", "conv1_bn"):
            return f"{scope}/conv1"
        match = _UNIT_LAYER.match(layer)
        if match:
            block, unit, part, _ = match.groups()
            return f"{scope}/{block}/unit_{unit}/bottleneck_v1/{part}"
        return None

    return scope_of


def slim_checkpoint(name: str) -> CheckpointLayout:
    """The layout of slim's `resnet_v1_<depth>.ckpt`: 1000 classes (no background), trained on
    RGB images minus the ImageNet means ("vgg" scaling)."""
    scope = f"resnet_v1_{name.split('_')[1]}"
    return CheckpointLayout(
        format="tf_checkpoint",
        names=lambda model, checkpoint: slim_names(model, slim_scope_of(scope)),
        preprocessing="vgg",
        head_bias=f"{scope}/logits/biases",
        published="tensorflow/models research/slim/nets/resnet_v1.py",
    )


for _name, _top1, _params in (
    ("resnet_50", 0.752, 25_557_032),
    ("resnet_101", 0.764, 44_549_160),
    ("resnet_152", 0.768, 60_192_808),
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
        _trunk_builder(DEPTHS[_name]),
        checkpoints=(slim_checkpoint(_name),),
    )
