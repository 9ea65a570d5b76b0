"""Building blocks shared by the families: conv+BN+ReLU, the classifier, the Inception
auxiliary head, and the config edit that switches BatchNormalization γ in keras.applications
models."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

# TF-slim's inception_arg_scope uses epsilon 0.001; Keras' default momentum (0.99) is kept
# instead of slim's 0.9997, which suits the short runs this package trains.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def batch_norm(x, bn_scale: bool, name: str | None = None, epsilon: float = BN_EPSILON):
    return layers.BatchNormalization(
        epsilon=epsilon, momentum=BN_MOMENTUM, scale=bn_scale, name=name
    )(x)


def conv_bn(
    x,
    filters: int,
    kernel_size,
    bn_scale: bool,
    *,
    strides=1,
    padding: str = "same",
    name: str | None = None,
):
    """TF-slim's `conv2d` under inception_arg_scope: conv without bias, BN, ReLU."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        name=None if name is None else f"{name}_conv",
    )(x)
    x = batch_norm(x, bn_scale, name=None if name is None else f"{name}_bn")
    return layers.ReLU(name=None if name is None else f"{name}_relu")(x)


def classifier(features, num_classes: int, dropout_rate: float):
    """Dropout (when `dropout_rate` > 0) then the linear logits layer, named "logits"."""
    if dropout_rate > 0:
        features = layers.Dropout(dropout_rate, name="dropout")(features)
    return layers.Dense(num_classes, name="logits")(features)


def inception_aux_head(x, num_classes: int, bn_scale: bool):
    """The auxiliary classifier of TF-slim's Inception v3 / v4 / Inception-ResNet v2.

    5x5 average pooling with stride 3 (VALID), a 1x1 conv with 128 filters, a conv with 768
    filters whose kernel covers the whole pooled map (5x5 at the ImageNet size), then a linear
    layer. At small inputs the pooling window shrinks to the map so the head still applies.
    """
    if x is None:
        raise ValueError("inception_aux_head: this trunk did not expose an aux_source")
    pool = min(5, x.shape[1], x.shape[2])
    x = layers.AveragePooling2D(pool, strides=3, padding="valid", name="aux_pool")(x)
    x = conv_bn(x, 128, 1, bn_scale, name="aux_1x1")
    x = conv_bn(x, 768, (x.shape[1], x.shape[2]), bn_scale, padding="valid", name="aux_768")
    x = layers.Flatten(name="aux_flatten")(x)
    return layers.Dense(num_classes, name="aux_logits")(x)


LayerConfigEdit = Callable[[dict], bool]


def edit_functional(model: keras.Model, *edits: LayerConfigEdit) -> keras.Model:
    """Rebuilds a functional model after editing its layer configs in place.

    Each edit receives one entry of `model.get_config()["layers"]` (keys "class_name", "name",
    "config") and returns True when it changed something. The model is rebuilt with
    `keras.Model.from_config` only when some edit did; weights are re-initialized either way
    (callers only pass freshly built, randomly initialized models).
    """
    config = model.get_config()
    changed = False
    for layer_config in config["layers"]:
        for edit in edits:
            changed |= bool(edit(layer_config))
    return keras.Model.from_config(config) if changed else model


def set_bn_scale(bn_scale: bool) -> LayerConfigEdit:
    """An edit that gives every BatchNormalization layer `scale=bn_scale` (the paper's γ flag)."""

    def edit(layer_config: dict) -> bool:
        if layer_config["class_name"] != "BatchNormalization":
            return False
        if layer_config["config"].get("scale") == bn_scale:
            return False
        layer_config["config"]["scale"] = bn_scale
        return True

    return edit


def keras_application(
    factory: Callable[..., keras.Model],
    input_size: int,
    bn_scale: bool,
    *edits: LayerConfigEdit,
    pooling: str | None = "avg",
    **kwargs,
) -> keras.Model:
    """A keras.applications trunk (no top, `pooling` at the end, random weights), with BN γ
    set to `bn_scale` and any further config edits applied."""
    base = factory(
        include_top=False,
        weights=None,
        input_shape=(input_size, input_size, 3),
        pooling=pooling,
        **kwargs,
    )
    return edit_functional(base, set_bn_scale(bn_scale), *edits)
