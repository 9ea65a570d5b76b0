"""Inception v1 / GoogLeNet (Szegedy et al. 2015), layer for layer as TF-slim's
`nets/inception_v1.py`: BN after every convolution, and 3x3 convolutions where the paper's
"5x5" branches are (slim's choice; 6.6M instead of 6.8M parameters). GoogLeNet's two auxiliary
classifiers are not offered (slim does not define them either)."""

from __future__ import annotations

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, slim_names
from transfer_tf.models.layers import conv_bn
from transfer_tf.models.registry import ModelSpec, Trunk, register

# (name, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 in slim), pool projection)
_MODULES = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def inception_module(x, name, bn_scale):
    b0, b1_reduce, b1, b2_reduce, b2, b3 = _MODULES[name]
    branch_0 = conv_bn(x, b0, 1, bn_scale, name=f"{name}_b0_1x1")
    branch_1 = conv_bn(x, b1_reduce, 1, bn_scale, name=f"{name}_b1_1x1")
    branch_1 = conv_bn(branch_1, b1, 3, bn_scale, name=f"{name}_b1_3x3")
    branch_2 = conv_bn(x, b2_reduce, 1, bn_scale, name=f"{name}_b2_1x1")
    branch_2 = conv_bn(branch_2, b2, 3, bn_scale, name=f"{name}_b2_3x3")
    branch_3 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    branch_3 = conv_bn(branch_3, b3, 1, bn_scale, name=f"{name}_b3_1x1")
    return layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


def build_trunk(input_size, settings):
    s = settings.bn_scale
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = conv_bn(inputs, 64, 7, s, strides=2, name="Conv2d_1a_7x7")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_2a_3x3")(x)
    x = conv_bn(x, 64, 1, s, name="Conv2d_2b_1x1")
    x = conv_bn(x, 192, 3, s, name="Conv2d_2c_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_3a_3x3")(x)
    x = inception_module(x, "Mixed_3b", s)
    x = inception_module(x, "Mixed_3c", s)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_4a_3x3")(x)
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = inception_module(x, name, s)
    x = layers.MaxPooling2D(2, strides=2, padding="same", name="MaxPool_5a_2x2")(x)
    x = inception_module(x, "Mixed_5b", s)
    x = inception_module(x, "Mixed_5c", s)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return Trunk(inputs, features)


# Our branch layer -> slim's scope inside a Mixed block (slim names Mixed_5b's 3x3 "0a").
_SLIM_BRANCHES = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_3x3": "Branch_1/Conv2d_0b_3x3",
    "b2_1x1": "Branch_2/Conv2d_0a_1x1",
    "b2_3x3": "Branch_2/Conv2d_0b_3x3",
    "b3_1x1": "Branch_3/Conv2d_0b_1x1",
}


def slim_scope(layer: str) -> str | None:
    """TF-slim `nets/inception_v1.py` scope of one of our layers (`Mixed_4b_b1_3x3_conv` ->
    `InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3`)."""
    if layer == "logits":
        return "InceptionV1/Logits/Conv2d_0c_1x1"
    base = layer.rsplit("_", 1)[0]  # drop _conv / _bn
    if base.startswith("Mixed_"):
        block, branch = base[:8], base[9:]
        scope = _SLIM_BRANCHES[branch]
        if block == "Mixed_5b" and branch == "b2_3x3":
            scope = "Branch_2/Conv2d_0a_3x3"
        return f"InceptionV1/{block}/{scope}"
    return f"InceptionV1/{base}"


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    preprocessing="inception",
    head_bias="InceptionV1/Logits/Conv2d_0c_1x1/biases",
    published="tensorflow/models research/slim/nets/inception_v1.py",
)


register(
    ModelSpec(
        name="inception_v1",
        family="inception",
        input_size=224,
        preprocessing="inception",
        feature_dim=1024,
        imagenet_top1=0.698,
        top1_source=f"{sources.SLIM_README}: Inception V1",
        published_params=6_617_624,
        params_source=f"{sources.SLIM_PROFILE}: inception_v1",
        min_input_size=32,
    ),
    build_trunk,
    checkpoints=(SLIM_CHECKPOINT,),
)
