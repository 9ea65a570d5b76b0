"""Inception v4 (Szegedy et al. 2017), layer for layer as TF-slim's `nets/inception_v4.py`, with
the auxiliary head at slim's position (after `Mixed_6h`, the last 17x17 Inception-B block)."""

from __future__ import annotations

import keras
from keras import layers

from transfer_tf.models import sources
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
)
