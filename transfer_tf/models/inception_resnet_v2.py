"""Inception-ResNet v2 (Szegedy et al. 2017) from `keras.applications.InceptionResNetV2` (a port
of the TF-slim network). The auxiliary head reads the output of the last 17x17 block
(`block17_20_ac`), TF-slim's `PreAuxLogits`."""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.InceptionResNetV2, input_size, settings.bn_scale)
    return Trunk(base.input, base.output, base.get_layer("block17_20_ac").output)


register(
    ModelSpec(
        name="inception_resnet_v2",
        family="inception_resnet",
        input_size=299,
        preprocessing="inception",
        feature_dim=1536,
        imagenet_top1=0.804,
        top1_source=f"{sources.SLIM_README}: Inception-ResNet-v2",
        published_params=55_900_000,
        params_source=f"{sources.KERAS_DOCS}: InceptionResNetV2 55.9M",
        params_counted="all",
        has_aux_head=True,
        min_input_size=75,
    ),
    build_trunk,
)
