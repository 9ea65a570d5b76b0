"""Inception v3 (Szegedy et al. 2016) from `keras.applications.InceptionV3` (a port of the TF-slim
network). Keras builds it with BN without γ; the registry sets γ from `TrainingSettings`. The
auxiliary head reads `mixed7` (17x17x768 at 299 px), TF-slim's `Mixed_6e`."""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.InceptionV3, input_size, settings.bn_scale)
    return Trunk(base.input, base.output, base.get_layer("mixed7").output)


register(
    ModelSpec(
        name="inception_v3",
        family="inception",
        input_size=299,
        preprocessing="inception",
        feature_dim=2048,
        imagenet_top1=0.780,
        top1_source=f"{sources.SLIM_README}: Inception V3",
        published_params=23_900_000,
        params_source=f"{sources.KERAS_DOCS}: InceptionV3 23.9M",
        params_counted="all",
        has_aux_head=True,
        # Keras' VALID-padded stem: 75 px is the smallest input that reaches a 1x1 map.
        min_input_size=75,
    ),
    build_trunk,
)
