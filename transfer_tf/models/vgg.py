"""VGG-16 (Simonyan & Zisserman 2015): the convolutional part of `keras.applications.VGG16`, then
fc6 and fc7 (4096 each, ReLU). The penultimate features are fc7, as in the paper's analyses.
VGG has no BatchNormalization, so `bn_scale` does not change it.

TF-slim's `vgg_16.ckpt` loads by name alone: slim stores fc6 / fc7 / fc8 as convolutions (7x7 VALID,
then 1x1), which at 224 px equal Flatten + Dense on the 7x7x512 map in the same (row, column,
channel) order, so the matcher reshapes the kernels."""

from __future__ import annotations

import re

import keras
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import CheckpointLayout, slim_names
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.VGG16, input_size, settings.bn_scale, pooling=None)
    x = layers.Flatten(name="flatten")(base.output)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    return Trunk(base.input, x)


_KERAS_CONV = re.compile(r"^block(\d)_conv(\d)$")


def slim_scope(layer: str) -> str | None:
    """TF-slim `nets/vgg.py` scope of one of our layers (`block3_conv2` -> `vgg_16/conv3/conv3_2`,
    `logits` -> `vgg_16/fc8`)."""
    if layer in ("fc6", "fc7"):
        return f"vgg_16/{layer}"
    if layer == "logits":
        return "vgg_16/fc8"
    match = _KERAS_CONV.match(layer)
    return f"vgg_16/conv{match[1]}/conv{match[1]}_{match[2]}" if match else None


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=lambda model, checkpoint: slim_names(model, slim_scope),
    # slim's vgg_preprocessing: RGB minus the ImageNet means; 1000 classes, no background.
    preprocessing="vgg",
    head_bias="vgg_16/fc8/biases",
    published="tensorflow/models research/slim/nets/vgg.py",
)


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
    checkpoints=(SLIM_CHECKPOINT,),
)
