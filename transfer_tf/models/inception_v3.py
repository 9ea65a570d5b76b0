"""Inception v3 (Szegedy et al. 2016) from `keras.applications.InceptionV3` (a port of the TF-slim
network). Keras builds it with BN without γ; the registry sets γ from `TrainingSettings`. The
auxiliary head reads `mixed7` (17x17x768 at 299 px), TF-slim's `Mixed_6e`.

Published checkpoints: TF-slim's `inception_v3.ckpt` (`SLIM_CHECKPOINT`, with the AuxLogits head)
and the Keras Applications `.h5` file (`KERAS_CHECKPOINT`). Keras names the convolutions and BN
layers automatically (`conv2d_17`), so the slim map pairs them with slim's scopes in the order
Keras creates them, which is the order of slim's definition."""

from __future__ import annotations

import re

import keras

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import (
    CheckpointLayout,
    creation_order,
    keras_h5_layout,
    layer_of,
    slim_variable,
)
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def build_trunk(input_size, settings):
    base = keras_application(keras.applications.InceptionV3, input_size, settings.bn_scale)
    return Trunk(base.input, base.output, base.get_layer("mixed7").output)


# TF-slim `nets/inception_v3.py`: each block's convolutions in definition order (slim's own
# spellings kept: Mixed_5c's "Conv_1_0c_5x5", Mixed_6a's 3x3 convs called "1x1", Mixed_7b's
# "0b_3x1" where Mixed_7c has "0c_3x1").
_MIXED_35 = (
    "Branch_0/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_5x5",
    "Branch_2/Conv2d_0a_1x1",
    "Branch_2/Conv2d_0b_3x3",
    "Branch_2/Conv2d_0c_3x3",
    "Branch_3/Conv2d_0b_1x1",
)
_MIXED_17 = (
    "Branch_0/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_1x7",
    "Branch_1/Conv2d_0c_7x1",
    "Branch_2/Conv2d_0a_1x1",
    "Branch_2/Conv2d_0b_7x1",
    "Branch_2/Conv2d_0c_1x7",
    "Branch_2/Conv2d_0d_7x1",
    "Branch_2/Conv2d_0e_1x7",
    "Branch_3/Conv2d_0b_1x1",
)
_MIXED_8 = (
    "Branch_0/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_1x3",
    "Branch_1/Conv2d_0b_3x1",
    "Branch_2/Conv2d_0a_1x1",
    "Branch_2/Conv2d_0b_3x3",
    "Branch_2/Conv2d_0c_1x3",
    "Branch_2/Conv2d_0d_3x1",
    "Branch_3/Conv2d_0b_1x1",
)
_BLOCKS = (
    ("", ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")),
    ("Mixed_5b", _MIXED_35),
    (
        "Mixed_5c",
        tuple(
            s.replace("Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x1").replace(
                "Conv2d_0b_5x5", "Conv_1_0c_5x5"
            )
            for s in _MIXED_35
        ),
    ),
    ("Mixed_5d", _MIXED_35),
    (
        "Mixed_6a",
        (
            "Branch_0/Conv2d_1a_1x1",
            "Branch_1/Conv2d_0a_1x1",
            "Branch_1/Conv2d_0b_3x3",
            "Branch_1/Conv2d_1a_1x1",
        ),
    ),
    ("Mixed_6b", _MIXED_17),
    ("Mixed_6c", _MIXED_17),
    ("Mixed_6d", _MIXED_17),
    ("Mixed_6e", _MIXED_17),
    (
        "Mixed_7a",
        (
            "Branch_0/Conv2d_0a_1x1",
            "Branch_0/Conv2d_1a_3x3",
            "Branch_1/Conv2d_0a_1x1",
            "Branch_1/Conv2d_0b_1x7",
            "Branch_1/Conv2d_0c_7x1",
            "Branch_1/Conv2d_1a_3x3",
        ),
    ),
    ("Mixed_7b", _MIXED_8),
    (
        "Mixed_7c",
        tuple(s.replace("Branch_1/Conv2d_0b_3x1", "Branch_1/Conv2d_0c_3x1") for s in _MIXED_8),
    ),
)
SLIM_CONVOLUTIONS = tuple(
    f"InceptionV3/{block}/{conv}" if block else f"InceptionV3/{conv}"
    for block, convs in _BLOCKS
    for conv in convs
)
# Our named layers (classifier, auxiliary head) -> slim scope.
_SLIM_NAMED = {
    "logits": "InceptionV3/Logits/Conv2d_1c_1x1",
    "aux_1x1": "InceptionV3/AuxLogits/Conv2d_1b_1x1",
    "aux_768": "InceptionV3/AuxLogits/Conv2d_2a_5x5",
    "aux_logits": "InceptionV3/AuxLogits/Conv2d_2b_1x1",
}


def slim_names(model: keras.Model, checkpoint=None) -> dict[str, str]:
    scopes = {}
    for kind in ("conv2d", "batch_normalization"):
        layers = creation_order(model, kind)
        if len(layers) != len(SLIM_CONVOLUTIONS):
            raise ValueError(
                f"{model.name}: {len(layers)} {kind} layers where TF-slim's Inception v3 has "
                f"{len(SLIM_CONVOLUTIONS)}"
            )
        scopes.update(zip(layers, SLIM_CONVOLUTIONS, strict=True))
    out = {}
    for weight in model.weights:
        layer = layer_of(weight.path)
        scope = scopes.get(layer) or _SLIM_NAMED.get(re.sub(r"_(conv|bn)$", "", layer))
        if scope is not None:
            out[weight.path] = slim_variable(scope, weight.path)
    return out


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=slim_names,
    preprocessing="inception",
    head_bias="InceptionV3/Logits/Conv2d_1c_1x1/biases",
    aux_scope=r"^InceptionV3/AuxLogits/",
    published="tensorflow/models research/slim/nets/inception_v3.py",
)
KERAS_CHECKPOINT = keras_h5_layout("keras/src/applications/inception_v3.py", in_order=True)


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
    checkpoints=(SLIM_CHECKPOINT, KERAS_CHECKPOINT),
)
