"""A Keras model file (`.keras`) as a source: fixed features (Sec. 4.1) or the start of
fine-tuning (Sec. 4.2).

The user names the feature layer (`feature_layer`, a top-level layer of the model; its output,
global-average-pooled when it is a [B, h, w, D] map, is the representation) and says how the
model expects pixels scaled (`scaling`: "none" when the model scales inside itself, "unit" for
[0, 1], or a model preprocessing such as "inception"), since a Keras file does not record it.
The input size is the model's own, or `input_size` where the model takes any size.

For fine-tuning, `keras_backbone` returns the network the training loop trains (the interface of
`transfer_tf.models.build_model`): preprocessed float images in, `{"logits", "features"}` out,
the model up to the feature layer with its weights, then a new zero-initialised `logits` layer
(as registry models get when fine-tuning starts), after dropout where the settings ask for it.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from transfer_tf.protocols.features import FeatureSource, SignatureError, input_hw, input_scaler

LOGITS_LAYER = "logits"  # the name `transfer_tf.training.weights` looks for


def load_keras_model(path: str) -> keras.Model:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--keras_model={path} does not exist")
    if not path.endswith(".keras"):
        raise SignatureError(
            f"--keras_model={path}: expected a Keras 3 model file ending in .keras "
            "(model.save('model.keras')); for a SavedModel pass --saved_model"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a damaged or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SignatureError(f"--keras_model={path} cannot be loaded: {first}") from None


def feature_model(model: keras.Model, feature_layer: str | None, path: str) -> keras.Model:
    """`model` from its input to `feature_layer`'s output (pooled to [B, D] where it is a map)."""
    names = [layer.name for layer in model.layers]
    if not feature_layer or feature_layer not in names:
        shown = ", ".join(
            f"{layer.name} {tuple(layer.output.shape)}" for layer in model.layers[-6:]
        )
        raise SignatureError(
            f"--keras_model={path}: "
            + (f"no layer named {feature_layer!r}" if feature_layer else "pass --feature_layer")
            + f"; its last layers are: {shown}"
        )
    if len(model.inputs) != 1:
        raise SignatureError(
            f"--keras_model={path} has {len(model.inputs)} inputs; a source takes one image batch"
        )
    output = model.get_layer(feature_layer).output
    if isinstance(output, (list, tuple, dict)):
        raise SignatureError(f"--feature_layer={feature_layer} has several outputs; name another")
    if len(output.shape) == 4:
        output = keras.layers.GlobalAveragePooling2D(name="feature_pool")(output)
    elif len(output.shape) != 2:
        raise SignatureError(
            f"--feature_layer={feature_layer} outputs shape {tuple(output.shape)}; features are "
            "[batch, dim] or a [batch, h, w, dim] map (then average-pooled)"
        )
    return keras.Model(model.inputs[0], output, name=f"{model.name}_features")


def _input(model: keras.Model, path: str):
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise SignatureError(
            f"--keras_model={path} takes input of shape {tuple(shape)}; a source takes RGB "
            "images [batch, height, width, 3]"
        )
    return shape, tf.as_dtype(model.inputs[0].dtype)


def load_keras_features(
    path: str, feature_layer: str, *, scaling: str | None, input_size: int | None = None
) -> FeatureSource:
    """A `.keras` model's `feature_layer` as a `FeatureSource` (for `extract_features`)."""
    model = load_keras_model(path)
    features = feature_model(model, feature_layer, path)
    shape, dtype = _input(model, path)
    what = f"--keras_model={path}"
    to_input = input_scaler(dtype, scaling or None, what)
    size = input_hw(shape, input_size, what)

    def call(images):
        return features(to_input(images), training=False)

    description = {
        "kind": "keras",
        "keras_model": os.path.abspath(path),
        "feature_layer": feature_layer,
        "input_dtype": dtype.name,
        "scaling": scaling,
        "pooling": "global average" if features.layers[-1].name == "feature_pool" else None,
    }
    label = os.path.splitext(os.path.basename(path))[0]
    return FeatureSource(call, size, label, description, owner=model)


def keras_backbone(
    path: str,
    feature_layer: str,
    num_classes: int,
    *,
    input_size: int | None = None,
    dropout_rate: float = 0.0,
) -> keras.Model:
    """The `.keras` model up to `feature_layer` with a new zero-initialised classifier.

    Input: float32 images [B, S, S, 3] already scaled (`make_input(preprocessing=scaling)`);
    output `{"logits": [B, num_classes], "features": [B, D]}`, as `build_model`.
    """
    model = load_keras_model(path)
    features = feature_model(model, feature_layer, path)
    shape, _ = _input(model, path)
    height, width = input_hw(shape, input_size, f"--keras_model={path}")
    inputs = keras.Input([height, width, 3], name="images")
    feats = features(inputs)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(feats) if dropout_rate else feats
    logits = keras.layers.Dense(
        num_classes, kernel_initializer="zeros", bias_initializer="zeros", name=LOGITS_LAYER
    )(x)
    return keras.Model(inputs, {"logits": logits, "features": feats}, name=features.name)


def keras_model_builder(path: str, feature_layer: str):
    """A `Trainer(model_builder=...)` for a `.keras` start: config -> `keras_backbone`, at the
    config's input size, with its settings' dropout."""

    def build(config) -> keras.Model:
        keras.utils.set_random_seed(config.seed)
        settings = config.settings or {}
        return keras_backbone(
            path,
            feature_layer,
            config.num_classes,
            input_size=config.input_size,
            dropout_rate=float(settings.get("dropout_rate") or 0.0),
        )

    return build
