"""BN-Inception (Ioffe & Szegedy 2015), layer for layer as TF-slim's `nets/inception_v2.py`
(slim calls it Inception v2): GoogLeNet with BN, its 5x5 convolutions replaced by two 3x3, and a
depthwise-separable 7x7 stem (depth multiplier 8) as in the slim definition.

The stem has a bias and no BN: slim's `inception_v2_arg_scope` gives its normaliser to `conv2d`
only, so the `separable_conv2d` stem is built with biases, and the published checkpoint holds
`Conv2d_1a_7x7/biases` and no `Conv2d_1a_7x7/BatchNorm` (tensorflow/models issue 4843)."""

from __future__ import annotations

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, slim_names
from transfer_tf.models.layers import conv_bn
from transfer_tf.models.registry import ModelSpec, Trunk, register

# name: (1x1, 3x3 reduce, 3x3, double-3x3 reduce, double-3x3, pool kind, pool projection)
_MODULES = {
    "Mixed_3b": (64, 64, 64, 64, 96, "avg", 32),
    "Mixed_3c": (64, 64, 96, 64, 96, "avg", 64),
    "Mixed_4b": (224, 64, 96, 96, 128, "avg", 128),
    "Mixed_4c": (192, 96, 128, 96, 128, "avg", 128),
    "Mixed_4d": (160, 128, 160, 128, 160, "avg", 96),
    "Mixed_4e": (96, 128, 192, 160, 192, "avg", 96),
    "Mixed_5b": (352, 192, 320, 160, 224, "avg", 128),
    "Mixed_5c": (352, 192, 320, 192, 224, "max", 128),
}
# Grid reductions: name: (3x3 reduce, 3x3 stride 2, double-3x3 reduce, double-3x3)
_REDUCTIONS = {
    "Mixed_4a": (128, 160, 64, 96),
    "Mixed_5a": (128, 192, 192, 256),
}


def inception_module(x, name, bn_scale):
    b0, b1_reduce, b1, b2_reduce, b2, pool, b3 = _MODULES[name]
    branch_0 = conv_bn(x, b0, 1, bn_scale, name=f"{name}_b0_1x1")
    branch_1 = conv_bn(x, b1_reduce, 1, bn_scale, name=f"{name}_b1_1x1")
    branch_1 = conv_bn(branch_1, b1, 3, bn_scale, name=f"{name}_b1_3x3")
    branch_2 = conv_bn(x, b2_reduce, 1, bn_scale, name=f"{name}_b2_1x1")
    branch_2 = conv_bn(branch_2, b2, 3, bn_scale, name=f"{name}_b2_3x3a")
    branch_2 = conv_bn(branch_2, b2, 3, bn_scale, name=f"{name}_b2_3x3b")
    pooling = layers.AveragePooling2D if pool == "avg" else layers.MaxPooling2D
    branch_3 = pooling(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    branch_3 = conv_bn(branch_3, b3, 1, bn_scale, name=f"{name}_b3_1x1")
    return layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


def reduction_module(x, name, bn_scale):
    b0_reduce, b0, b1_reduce, b1 = _REDUCTIONS[name]
    branch_0 = conv_bn(x, b0_reduce, 1, bn_scale, name=f"{name}_b0_1x1")
    branch_0 = conv_bn(branch_0, b0, 3, bn_scale, strides=2, name=f"{name}_b0_3x3")
    branch_1 = conv_bn(x, b1_reduce, 1, bn_scale, name=f"{name}_b1_1x1")
    branch_1 = conv_bn(branch_1, b1, 3, bn_scale, name=f"{name}_b1_3x3a")
    branch_1 = conv_bn(branch_1, b1, 3, bn_scale, strides=2, name=f"{name}_b1_3x3b")
    branch_2 = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_b2_pool")(x)
    return layers.Concatenate(name=name)([branch_0, branch_1, branch_2])


def build_trunk(input_size, settings):
    s = settings.bn_scale
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = layers.SeparableConv2D(
        64,
        7,
        strides=2,
        padding="same",
        depth_multiplier=8,
        name="Conv2d_1a_7x7_conv",
    )(inputs)
    x = layers.ReLU(name="Conv2d_1a_7x7_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_2a_3x3")(x)
    x = conv_bn(x, 64, 1, s, name="Conv2d_2b_1x1")
    x = conv_bn(x, 192, 3, s, name="Conv2d_2c_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_3a_3x3")(x)
    x = inception_module(x, "Mixed_3b", s)
    x = inception_module(x, "Mixed_3c", s)
    x = reduction_module(x, "Mixed_4a", s)
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e"):
        x = inception_module(x, name, s)
    x = reduction_module(x, "Mixed_5a", s)
    x = inception_module(x, "Mixed_5b", s)
    x = inception_module(x, "Mixed_5c", s)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return Trunk(inputs, features)


# Our branch layer -> slim's scope inside a Mixed block, for the Inception modules and for the
# grid reductions (Mixed_4a, Mixed_5a).
_SLIM_BRANCHES = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_3x3": "Branch_1/Conv2d_0b_3x3",
    "b2_1x1": "Branch_2/Conv2d_0a_1x1",
    "b2_3x3a": "Branch_2/Conv2d_0b_3x3",
    "b2_3x3b": "Branch_2/Conv2d_0c_3x3",
    "b3_1x1": "Branch_3/Conv2d_0b_1x1",
}
_SLIM_REDUCTION_BRANCHES = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b0_3x3": "Branch_0/Conv2d_1a_3x3",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_3x3a": "Branch_1/Conv2d_0b_3x3",
    "b1_3x3b": "Branch_1/Conv2d_1a_3x3",
}


def slim_scope(layer: str) -> str | None:
    """TF-slim `nets/inception_v2.py` scope of one of our layers (`Mixed_4a_b1_3x3b_conv` ->
    `InceptionV2/Mixed_4a/Branch_1/Conv2d_1a_3x3`)."""
    if layer == "logits":
        return "InceptionV2/Logits/Conv2d_1c_1x1"
    base = layer.rsplit("_", 1)[0]  # drop _conv / _bn
    if base.startswith("Mixed_"):
        block, branch = base[:8], base[9:]
        branches = _SLIM_REDUCTION_BRANCHES if block in _REDUCTIONS else _SLIM_BRANCHES
        return f"InceptionV2/{block}/{branches[branch]}"
    return f"InceptionV2/{base}"


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    preprocessing="inception",
    head_bias="InceptionV2/Logits/Conv2d_1c_1x1/biases",
    published="tensorflow/models research/slim/nets/inception_v2.py",
)


register(
    ModelSpec(
        name="bn_inception",
        family="inception",
        input_size=224,
        preprocessing="inception",
        feature_dim=1024,
        imagenet_top1=0.739,
        top1_source=f"{sources.SLIM_README}: Inception V2 (BN-Inception)",
        published_params=11_178_336,
        params_source=f"{sources.SLIM_PROFILE}: inception_v2",
        min_input_size=32,
    ),
    build_trunk,
    checkpoints=(SLIM_CHECKPOINT,),
)
