"""Inception-ResNet v2 (Szegedy et al. 2017) from `keras.applications.InceptionResNetV2` (a port
of the TF-slim network). The auxiliary head reads the output of the last 17x17 block
(`block17_20_ac`), TF-slim's `PreAuxLogits`.

Published checkpoints: TF-slim's `inception_resnet_v2_2016_08_30.ckpt` (`SLIM_CHECKPOINT`, with
the AuxLogits head) and the Keras Applications `.h5` file (`KERAS_CHECKPOINT`). Keras names the
BN convolutions automatically (`conv2d_17`), so the slim map pairs them with slim's scopes in the
order Keras creates them, which is the order of slim's definition."""

from __future__ import annotations

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
    base = keras_application(keras.applications.InceptionResNetV2, input_size, settings.bn_scale)
    return Trunk(base.input, base.output, base.get_layer("block17_20_ac").output)


# TF-slim `nets/inception_resnet_v2.py`: the convolutions with BN of each block in definition
# order. `slim.repeat` puts the residual blocks in `Repeat/block35_1` ... `Repeat_2/block8_9`;
# the tenth block8 (no activation) is built apart, in the default scope `Block8`.
_BLOCK35 = (
    "Branch_0/Conv2d_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_3x3",
    "Branch_2/Conv2d_0a_1x1",
    "Branch_2/Conv2d_0b_3x3",
    "Branch_2/Conv2d_0c_3x3",
)
_BLOCK17 = (
    "Branch_0/Conv2d_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_1x7",
    "Branch_1/Conv2d_0c_7x1",
)
_BLOCK8 = (
    "Branch_0/Conv2d_1x1",
    "Branch_1/Conv2d_0a_1x1",
    "Branch_1/Conv2d_0b_1x3",
    "Branch_1/Conv2d_0c_3x1",
)
_RESIDUAL_BLOCKS = {
    "block35": [f"Repeat/block35_{i}" for i in range(1, 11)],
    "block17": [f"Repeat_1/block17_{i}" for i in range(1, 21)],
    "block8": [f"Repeat_2/block8_{i}" for i in range(1, 10)] + ["Block8"],
}
_BLOCKS = (
    ("", ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")),
    (
        "Mixed_5b",
        (
            "Branch_0/Conv2d_1x1",
            "Branch_1/Conv2d_0a_1x1",
            "Branch_1/Conv2d_0b_5x5",
            "Branch_2/Conv2d_0a_1x1",
            "Branch_2/Conv2d_0b_3x3",
            "Branch_2/Conv2d_0c_3x3",
            "Branch_3/Conv2d_0b_1x1",
        ),
    ),
    *((block, _BLOCK35) for block in _RESIDUAL_BLOCKS["block35"]),
    (
        "Mixed_6a",
        (
            "Branch_0/Conv2d_1a_3x3",
            "Branch_1/Conv2d_0a_1x1",
            "Branch_1/Conv2d_0b_3x3",
            "Branch_1/Conv2d_1a_3x3",
        ),
    ),
    *((block, _BLOCK17) for block in _RESIDUAL_BLOCKS["block17"]),
    (
        "Mixed_7a",
        (
            "Branch_0/Conv2d_0a_1x1",
            "Branch_0/Conv2d_1a_3x3",
            "Branch_1/Conv2d_0a_1x1",
            "Branch_1/Conv2d_1a_3x3",
            "Branch_2/Conv2d_0a_1x1",
            "Branch_2/Conv2d_0b_3x3",
            "Branch_2/Conv2d_1a_3x3",
        ),
    ),
    *((block, _BLOCK8) for block in _RESIDUAL_BLOCKS["block8"]),
)
SCOPE = "InceptionResnetV2"
SLIM_CONVOLUTIONS = tuple(
    f"{SCOPE}/{block}/{conv}" if block else f"{SCOPE}/{conv}"
    for block, convs in _BLOCKS
    for conv in convs
)
# Our named layers -> slim scope: the residual 1x1 convolutions (bias, no BN; Keras
# `block35_3_conv`), the last convolution, the classifier and the auxiliary head.
_SLIM_NAMED = {
    **{
        f"{kind}_{i}_conv": f"{SCOPE}/{block}/Conv2d_1x1"
        for kind, blocks in _RESIDUAL_BLOCKS.items()
        for i, block in enumerate(blocks, 1)
    },
    "conv_7b": f"{SCOPE}/Conv2d_7b_1x1",
    "conv_7b_bn": f"{SCOPE}/Conv2d_7b_1x1",
    "logits": f"{SCOPE}/Logits/Logits",
    "aux_1x1_conv": f"{SCOPE}/AuxLogits/Conv2d_1b_1x1",
    "aux_1x1_bn": f"{SCOPE}/AuxLogits/Conv2d_1b_1x1",
    "aux_768_conv": f"{SCOPE}/AuxLogits/Conv2d_2a_5x5",
    "aux_768_bn": f"{SCOPE}/AuxLogits/Conv2d_2a_5x5",
    "aux_logits": f"{SCOPE}/AuxLogits/Logits",
}


def slim_names(model: keras.Model, checkpoint=None) -> dict[str, str]:
    scopes = dict(_SLIM_NAMED)
    for kind in ("conv2d", "batch_normalization"):
        layers = creation_order(model, kind)
        if len(layers) != len(SLIM_CONVOLUTIONS):
            raise ValueError(
                f"{model.name}: {len(layers)} {kind} layers where TF-slim's Inception-ResNet v2 "
                f"has {len(SLIM_CONVOLUTIONS)}"
            )
        scopes.update(zip(layers, SLIM_CONVOLUTIONS, strict=True))
    return {
        weight.path: slim_variable(scopes[layer_of(weight.path)], weight.path)
        for weight in model.weights
        if layer_of(weight.path) in scopes
    }


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=slim_names,
    preprocessing="inception",
    head_bias=f"{SCOPE}/Logits/Logits/biases",
    aux_scope=rf"^{SCOPE}/AuxLogits/",
    published="tensorflow/models research/slim/nets/inception_resnet_v2.py",
)
KERAS_CHECKPOINT = keras_h5_layout("keras/src/applications/inception_resnet_v2.py", in_order=True)


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
    checkpoints=(SLIM_CHECKPOINT, KERAS_CHECKPOINT),
)
