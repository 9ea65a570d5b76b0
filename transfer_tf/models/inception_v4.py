"""Inception v4 (Szegedy et al. 2017), layer for layer as TF-slim's `nets/inception_v4.py`, with
the auxiliary head at slim's position (after `Mixed_6h`, the last 17x17 Inception-B block).

Published checkpoint: TF-slim's `inception_v4.ckpt` (`SLIM_CHECKPOINT`, with the AuxLogits head);
`slim_scope` names the slim scope of each of our layers."""

from __future__ import annotations

import re

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, slim_names
from transfer_tf.models.layers import conv_bn
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _concat(name, branches):
    return layers.Concatenate(name=name)(branches)


def stem(x, s):
    x = conv_bn(x, 32, 3, s, strides=2, padding="valid", name="Conv2d_1a_3x3")
    x = conv_bn(x, 32, 3, s, padding="valid", name="Conv2d_2a_3x3")
    x = conv_bn(x, 64, 3, s, name="Conv2d_2b_3x3")
    x = _concat(
        "Mixed_3a",
        [
            layers.MaxPooling2D(3, strides=2, padding="valid", name="Mixed_3a_b0_pool")(x),
            conv_bn(x, 96, 3, s, strides=2, padding="valid", name="Mixed_3a_b1_3x3"),
        ],
    )
    b0 = conv_bn(x, 64, 1, s, name="Mixed_4a_b0_1x1")
    b0 = conv_bn(b0, 96, 3, s, padding="valid", name="Mixed_4a_b0_3x3")
    b1 = conv_bn(x, 64, 1, s, name="Mixed_4a_b1_1x1")
    b1 = conv_bn(b1, 64, (1, 7), s, name="Mixed_4a_b1_1x7")
    b1 = conv_bn(b1, 64, (7, 1), s, name="Mixed_4a_b1_7x1")
    b1 = conv_bn(b1, 96, 3, s, padding="valid", name="Mixed_4a_b1_3x3")
    x = _concat("Mixed_4a", [b0, b1])
    return _concat(
        "Mixed_5a",
        [
            conv_bn(x, 192, 3, s, strides=2, padding="valid", name="Mixed_5a_b0_3x3"),
            layers.MaxPooling2D(3, strides=2, padding="valid", name="Mixed_5a_b1_pool")(x),
        ],
    )


def inception_a(x, name, s):
    b0 = conv_bn(x, 96, 1, s, name=f"{name}_b0_1x1")
    b1 = conv_bn(x, 64, 1, s, name=f"{name}_b1_1x1")
    b1 = conv_bn(b1, 96, 3, s, name=f"{name}_b1_3x3")
    b2 = conv_bn(x, 64, 1, s, name=f"{name}_b2_1x1")
    b2 = conv_bn(b2, 96, 3, s, name=f"{name}_b2_3x3a")
    b2 = conv_bn(b2, 96, 3, s, name=f"{name}_b2_3x3b")
    b3 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = conv_bn(b3, 96, 1, s, name=f"{name}_b3_1x1")
    return _concat(name, [b0, b1, b2, b3])


def reduction_a(x, name, s):
    b0 = conv_bn(x, 384, 3, s, strides=2, padding="valid", name=f"{name}_b0_3x3")
    b1 = conv_bn(x, 192, 1, s, name=f"{name}_b1_1x1")
    b1 = conv_bn(b1, 224, 3, s, name=f"{name}_b1_3x3a")
    b1 = conv_bn(b1, 256, 3, s, strides=2, padding="valid", name=f"{name}_b1_3x3b")
    b2 = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_b2_pool")(x)
    return _concat(name, [b0, b1, b2])


def inception_b(x, name, s):
    b0 = conv_bn(x, 384, 1, s, name=f"{name}_b0_1x1")
    b1 = conv_bn(x, 192, 1, s, name=f"{name}_b1_1x1")
    b1 = conv_bn(b1, 224, (1, 7), s, name=f"{name}_b1_1x7")
    b1 = conv_bn(b1, 256, (7, 1), s, name=f"{name}_b1_7x1")
    b2 = conv_bn(x, 192, 1, s, name=f"{name}_b2_1x1")
    b2 = conv_bn(b2, 192, (7, 1), s, name=f"{name}_b2_7x1a")
    b2 = conv_bn(b2, 224, (1, 7), s, name=f"{name}_b2_1x7a")
    b2 = conv_bn(b2, 224, (7, 1), s, name=f"{name}_b2_7x1b")
    b2 = conv_bn(b2, 256, (1, 7), s, name=f"{name}_b2_1x7b")
    b3 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = conv_bn(b3, 128, 1, s, name=f"{name}_b3_1x1")
    return _concat(name, [b0, b1, b2, b3])


def reduction_b(x, name, s):
    b0 = conv_bn(x, 192, 1, s, name=f"{name}_b0_1x1")
    b0 = conv_bn(b0, 192, 3, s, strides=2, padding="valid", name=f"{name}_b0_3x3")
    b1 = conv_bn(x, 256, 1, s, name=f"{name}_b1_1x1")
    b1 = conv_bn(b1, 256, (1, 7), s, name=f"{name}_b1_1x7")
    b1 = conv_bn(b1, 320, (7, 1), s, name=f"{name}_b1_7x1")
    b1 = conv_bn(b1, 320, 3, s, strides=2, padding="valid", name=f"{name}_b1_3x3")
    b2 = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_b2_pool")(x)
    return _concat(name, [b0, b1, b2])


def inception_c(x, name, s):
    b0 = conv_bn(x, 256, 1, s, name=f"{name}_b0_1x1")
    b1 = conv_bn(x, 384, 1, s, name=f"{name}_b1_1x1")
    b1 = _concat(
        f"{name}_b1",
        [
            conv_bn(b1, 256, (1, 3), s, name=f"{name}_b1_1x3"),
            conv_bn(b1, 256, (3, 1), s, name=f"{name}_b1_3x1"),
        ],
    )
    b2 = conv_bn(x, 384, 1, s, name=f"{name}_b2_1x1")
    b2 = conv_bn(b2, 448, (3, 1), s, name=f"{name}_b2_3x1a")
    b2 = conv_bn(b2, 512, (1, 3), s, name=f"{name}_b2_1x3a")
    b2 = _concat(
        f"{name}_b2",
        [
            conv_bn(b2, 256, (1, 3), s, name=f"{name}_b2_1x3b"),
            conv_bn(b2, 256, (3, 1), s, name=f"{name}_b2_3x1b"),
        ],
    )
    b3 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = conv_bn(b3, 256, 1, s, name=f"{name}_b3_1x1")
    return _concat(name, [b0, b1, b2, b3])


def build_trunk(input_size, settings):
    s = settings.bn_scale
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = stem(inputs, s)
    for block in "bcde":
        x = inception_a(x, f"Mixed_5{block}", s)
    x = reduction_a(x, "Mixed_6a", s)
    for block in "bcdefgh":
        x = inception_b(x, f"Mixed_6{block}", s)
    aux_source = x  # Mixed_6h: 17 x 17 x 1024 at 299 px
    x = reduction_b(x, "Mixed_7a", s)
    for block in "bcd":
        x = inception_c(x, f"Mixed_7{block}", s)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return Trunk(inputs, features, aux_source)


# Our branch layer -> slim's scope, per kind of block (slim's letters: 0a, 0b, ... in data-flow
# order; 1a for the stride-2 / VALID convolution that changes the grid).
_STEM_BRANCHES = {
    "Mixed_3a": {"b1_3x3": "Branch_1/Conv2d_0a_3x3"},
    "Mixed_4a": {
        "b0_1x1": "Branch_0/Conv2d_0a_1x1",
        "b0_3x3": "Branch_0/Conv2d_1a_3x3",
        "b1_1x1": "Branch_1/Conv2d_0a_1x1",
        "b1_1x7": "Branch_1/Conv2d_0b_1x7",
        "b1_7x1": "Branch_1/Conv2d_0c_7x1",
        "b1_3x3": "Branch_1/Conv2d_1a_3x3",
    },
    "Mixed_5a": {"b0_3x3": "Branch_0/Conv2d_1a_3x3"},
    "Mixed_6a": {  # Reduction-A
        "b0_3x3": "Branch_0/Conv2d_1a_3x3",
        "b1_1x1": "Branch_1/Conv2d_0a_1x1",
        "b1_3x3a": "Branch_1/Conv2d_0b_3x3",
        "b1_3x3b": "Branch_1/Conv2d_1a_3x3",
    },
    "Mixed_7a": {  # Reduction-B
        "b0_1x1": "Branch_0/Conv2d_0a_1x1",
        "b0_3x3": "Branch_0/Conv2d_1a_3x3",
        "b1_1x1": "Branch_1/Conv2d_0a_1x1",
        "b1_1x7": "Branch_1/Conv2d_0b_1x7",
        "b1_7x1": "Branch_1/Conv2d_0c_7x1",
        "b1_3x3": "Branch_1/Conv2d_1a_3x3",
    },
}
_INCEPTION_A = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_3x3": "Branch_1/Conv2d_0b_3x3",
    "b2_1x1": "Branch_2/Conv2d_0a_1x1",
    "b2_3x3a": "Branch_2/Conv2d_0b_3x3",
    "b2_3x3b": "Branch_2/Conv2d_0c_3x3",
    "b3_1x1": "Branch_3/Conv2d_0b_1x1",
}
_INCEPTION_B = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_1x7": "Branch_1/Conv2d_0b_1x7",
    "b1_7x1": "Branch_1/Conv2d_0c_7x1",
    "b2_1x1": "Branch_2/Conv2d_0a_1x1",
    "b2_7x1a": "Branch_2/Conv2d_0b_7x1",
    "b2_1x7a": "Branch_2/Conv2d_0c_1x7",
    "b2_7x1b": "Branch_2/Conv2d_0d_7x1",
    "b2_1x7b": "Branch_2/Conv2d_0e_1x7",
    "b3_1x1": "Branch_3/Conv2d_0b_1x1",
}
_INCEPTION_C = {
    "b0_1x1": "Branch_0/Conv2d_0a_1x1",
    "b1_1x1": "Branch_1/Conv2d_0a_1x1",
    "b1_1x3": "Branch_1/Conv2d_0b_1x3",
    "b1_3x1": "Branch_1/Conv2d_0c_3x1",
    "b2_1x1": "Branch_2/Conv2d_0a_1x1",
    "b2_3x1a": "Branch_2/Conv2d_0b_3x1",
    "b2_1x3a": "Branch_2/Conv2d_0c_1x3",
    "b2_1x3b": "Branch_2/Conv2d_0d_1x3",
    "b2_3x1b": "Branch_2/Conv2d_0e_3x1",
    "b3_1x1": "Branch_3/Conv2d_0b_1x1",
}
_BRANCHES = {
    **_STEM_BRANCHES,
    **{f"Mixed_5{b}": _INCEPTION_A for b in "bcde"},
    **{f"Mixed_6{b}": _INCEPTION_B for b in "bcdefgh"},
    **{f"Mixed_7{b}": _INCEPTION_C for b in "bcd"},
}
_SLIM_NAMED = {
    "logits": "Logits/Logits",
    "aux_1x1": "AuxLogits/Conv2d_1b_1x1",
    "aux_768": "AuxLogits/Conv2d_2a",
    "aux_logits": "AuxLogits/Aux_logits",
}


def slim_scope(layer: str) -> str:
    """TF-slim `nets/inception_v4.py` scope of one of our layers (`Mixed_6b_b2_7x1a_conv` ->
    `InceptionV4/Mixed_6b/Branch_2/Conv2d_0b_7x1`)."""
    base = re.sub(r"_(conv|bn)$", "", layer)
    if base in _SLIM_NAMED:
        return f"InceptionV4/{_SLIM_NAMED[base]}"
    if base.startswith("Mixed_"):
        block, branch = base[:8], base[9:]
        return f"InceptionV4/{block}/{_BRANCHES[block][branch]}"
    return f"InceptionV4/{base}"  # the stem's Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    preprocessing="inception",
    head_bias="InceptionV4/Logits/Logits/biases",
    aux_scope=r"^InceptionV4/AuxLogits/",
    published="tensorflow/models research/slim/nets/inception_v4.py",
)


register(
    ModelSpec(
        name="inception_v4",
        family="inception",
        input_size=299,
        preprocessing="inception",
        feature_dim=1536,
        imagenet_top1=0.802,
        top1_source=f"{sources.SLIM_README}: Inception V4",
        published_params=42_700_000,
        params_source=sources.TIMM_INCEPTION_V4,
        has_aux_head=True,
        # VALID stem and grid reductions: 75 px is the smallest input that reaches a 1x1 map.
        min_input_size=75,
    ),
    build_trunk,
    checkpoints=(SLIM_CHECKPOINT,),
)
