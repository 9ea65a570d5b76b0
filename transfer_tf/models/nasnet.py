"""NASNet-A Mobile (4 @ 1056) and Large (6 @ 4032) (Zoph et al. 2018) from
`keras.applications.NASNetMobile` / `NASNetLarge` (ports of the TF-slim networks). TF-slim's
NASNet also has an auxiliary head; it is not part of the paper's Inception-default study and is
not offered here.

Published checkpoints: the Keras Applications `.h5` files (`KERAS_CHECKPOINT`: Keras' layer names)
and TF-slim's `nasnet-a_{mobile,large}_04_10_2017` (`SLIM_CHECKPOINT`, scopes of
`nets/nasnet/nasnet.py` and `nasnet_utils.py`). Keras' cells are slim's cells operation for
operation, so every slim tensor has exactly one Keras weight (`slim_scope`); the slim auxiliary
head (`aux_7` / `aux_11`) is passed over.

One deviation of Keras' port, kept because the zoo computes what `keras.applications` computes:
the three stride-2 poolings of each reduction cell (slim's comb_iter_1/left max, comb_iter_2/left
average and comb_iter_4/right max pools) run on an explicitly zero-padded map with VALID padding,
where slim pools with SAME padding (the max ignores the padding, the average divides by the valid
count). The weights are the same; the logits differ where a pooling window covers the border.
"""

from __future__ import annotations

import re

import keras

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import (
    CheckpointLayout,
    keras_h5_layout,
    layer_of,
    slim_variable,
    weight_kind,
)
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _trunk_builder(factory):
    def build(input_size, settings):
        base = keras_application(factory, input_size, settings.bn_scale)
        return Trunk(base.input, base.output)

    return build


# Keras' separable-convolution stacks -> slim's (comb_iter/side, kernel), from the operations and
# hidden-state indices of slim's NasNetANormalCell / NasNetAReductionCell.
_NORMAL_OPERATIONS = {
    "left1": ("comb_iter_0/left", 5),
    "right1": ("comb_iter_0/right", 3),
    "left2": ("comb_iter_1/left", 5),
    "right2": ("comb_iter_1/right", 3),
    "left5": ("comb_iter_4/left", 3),
}
_REDUCTION_OPERATIONS = {
    "left1": ("comb_iter_0/left", 5),
    "right1": ("comb_iter_0/right", 7),
    "right2": ("comb_iter_1/right", 7),
    "right3": ("comb_iter_2/right", 5),
    "left4": ("comb_iter_4/left", 3),
}
_SEPARABLE = re.compile(
    r"^separable_conv_(?P<layer>[12])(?P<bn>_bn)?_(?P<cell>normal|reduction)_"
    r"(?P<operation>(left|right)\d)_(?P<id>.+)$"
)
_CELL_LAYER = re.compile(
    r"^(?P<what>normal_conv_1|normal_bn_1|reduction_conv_1|reduction_bn_1|adjust_conv_1|"
    r"adjust_conv_2|adjust_conv_projection|adjust_bn)_(?P<id>.+)$"
)
# Keras layer -> slim scope inside a cell (adjust_bn depends on the kind of adjustment).
_CELL_SCOPES = {
    "normal_conv_1": "1x1",
    "normal_bn_1": "beginning_bn",
    "reduction_conv_1": "1x1",
    "reduction_bn_1": "beginning_bn",
    "adjust_conv_1": "path1_conv",
    "adjust_conv_2": "path2_conv",
    "adjust_conv_projection": "prev_1x1",
}
_TOP_SCOPES = {"stem_conv1": "conv0", "stem_bn1": "conv0_bn", "logits": "final_layer/FC"}
_BATCH_NORM = ("gamma", "beta", "moving_mean", "moving_variance")


def slim_cell(block_id: str, num_blocks: int) -> str:
    """slim's cell scope for a Keras `block_id`: Keras numbers its normal cells 0..N-1, N+1..3N
    (N skipped for the first reduction cell, `reduce_N`; the second is `reduce_2N`), slim numbers
    them 0..3N-1 and the reduction cells apart; Keras' stem cells `stem_1`, `stem_2` are slim's
    `cell_stem_0`, `cell_stem_1`."""
    if block_id.startswith("stem_"):
        return f"cell_stem_{int(block_id[5:]) - 1}"
    if block_id.startswith("reduce_"):
        return f"reduction_cell_{int(block_id[7:]) // num_blocks - 1}"
    index = int(block_id)
    return f"cell_{index - (index > num_blocks)}"


def slim_scope(layer: str, num_blocks: int, layers: set[str]) -> str | None:
    """slim's scope of one of our layers (`separable_conv_1_bn_normal_left1_0` ->
    `cell_0/comb_iter_0/left/bn_sep_5x5_1`); `layers` tells a factorized reduction of the previous
    cell's output (`adjust_conv_1_*`, slim's `final_path_bn`) from a projection (`prev_bn`)."""
    if layer in _TOP_SCOPES:
        return _TOP_SCOPES[layer]
    if match := _SEPARABLE.match(layer):
        operations = _NORMAL_OPERATIONS if match["cell"] == "normal" else _REDUCTION_OPERATIONS
        operation, kernel = operations[match["operation"]]
        name = "bn_sep" if match["bn"] else "separable"
        cell = slim_cell(match["id"], num_blocks)
        return f"{cell}/{operation}/{name}_{kernel}x{kernel}_{match['layer']}"
    if match := _CELL_LAYER.match(layer):
        cell = slim_cell(match["id"], num_blocks)
        if match["what"] == "adjust_bn":
            factorized = f"adjust_conv_1_{match['id']}" in layers
            return f"{cell}/{'final_path_bn' if factorized else 'prev_bn'}"
        return f"{cell}/{_CELL_SCOPES[match['what']]}"
    return None


def slim_names(model: keras.Model, checkpoint=None) -> dict[str, str]:
    layers = {layer.name for layer in model.layers}
    num_blocks = sum(name.startswith("normal_conv_1_") for name in layers) // 3
    out = {}
    for weight in model.weights:
        scope = slim_scope(layer_of(weight.path), num_blocks, layers)
        if scope is None:
            continue
        kind = weight_kind(weight.path)
        # slim's NASNet calls batch_norm with its own scope: `conv0_bn/gamma`, no `BatchNorm/`.
        out[weight.path] = (
            f"{scope}/{kind}" if kind in _BATCH_NORM else slim_variable(scope, weight.path)
        )
    return out


SLIM_CHECKPOINT = CheckpointLayout(
    format="tf_checkpoint",
    names=slim_names,
    preprocessing="inception",
    head_bias="final_layer/FC/biases",
    aux_scope=r"^aux_\d+/",
    published="tensorflow/models research/slim/nets/nasnet/nasnet.py and nasnet_utils.py",
)
KERAS_CHECKPOINT = keras_h5_layout("keras/src/applications/nasnet.py")


for _name, _factory, _size, _dim, _top1, _params, _slim in (
    (
        "nasnet_mobile",
        keras.applications.NASNetMobile,
        224,
        1056,
        0.740,
        5_300_000,
        "NASNet-A_Mobile_224",
    ),
    (
        "nasnet_large",
        keras.applications.NASNetLarge,
        331,
        4032,
        0.827,
        88_900_000,
        "NASNet-A_Large_331",
    ),
):
    register(
        ModelSpec(
            name=_name,
            family="nasnet",
            input_size=_size,
            preprocessing="inception",
            feature_dim=_dim,
            imagenet_top1=_top1,
            top1_source=f"{sources.SLIM_README}: {_slim}",
            published_params=_params,
            params_source=f"{sources.SLIM_NASNET}: {_slim}",
            min_input_size=32,
        ),
        _trunk_builder(_factory),
        checkpoints=(SLIM_CHECKPOINT, KERAS_CHECKPOINT),
    )
