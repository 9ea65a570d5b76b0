"""VGG-16 (Simonyan & Zisserman 2015): the convolutional part of `keras.applications.VGG16`, then
fc6 and fc7 (4096 each, ReLU). The penultimate features are fc7, as in the paper's analyses.
VGG has no BatchNormalization, so `bn_scale` does not change it."""

from __future__ import annotations

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.VGG16, input_size, settings.bn_scale, pooling=None)
    x = layers.Flatten(name="flatten")(base.output)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    return Trunk(base.input, x)


register(
    ModelSpec(
        name="vgg_16",
        family="vgg",
        input_size=224,
        preprocessing="inception",
        feature_dim=4096,
        imagenet_top1=0.715,
        top1_source=f"{sources.SLIM_README}: VGG 16",
        published_params=138_357_544,
        params_source=f"{sources.SLIM_PROFILE}: vgg_16",
        min_input_size=32,
    ),
    build_trunk,
)
