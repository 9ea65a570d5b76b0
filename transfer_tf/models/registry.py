"""The model registry: a name maps to a `ModelSpec` (what the paper's table says about the
network) and a trunk builder (how to build it in Keras). `build_model` is the only way in.

Every family module (`resnet.py`, `inception_v1.py`, ...) calls `register(...)` at import time;
`transfer_tf.models.__init__` imports them all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import keras
from absl import logging

from transfer_tf.models import checkpoints
from transfer_tf.models import layers as model_layers
from transfer_tf.models.preprocessing import PREPROCESSING
from transfer_tf.models.settings import TrainingSettings


def _size(variables) -> int:
    return sum(math.prod(v.shape) for v in variables)


# Published parameter counts use different conventions; each counts a model one way.
PARAMETER_COUNTS: dict[str, Callable[[keras.Model], int]] = {
    "trainable": lambda model: _size(model.trainable_weights),
    "all": lambda model: _size(model.weights),
    # Registry models are flat functional graphs, so `model.layers` reaches every layer.
    "without_bn": lambda model: sum(
        _size(layer.trainable_weights)
        for layer in model.layers
        if not isinstance(layer, keras.layers.BatchNormalization)
    ),
}


def count_params(model: keras.Model, counted: str = "trainable") -> int:
    """Parameter count of `model` under one of the `PARAMETER_COUNTS` conventions."""
    try:
        return PARAMETER_COUNTS[counted](model)
    except KeyError:
        raise ValueError(
            f"unknown parameter count {counted!r}; choose one of {sorted(PARAMETER_COUNTS)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What is published about one architecture, and how it expects its input.

    Attributes:
      name: registry name, e.g. "inception_v4".
      family: module that defines it, e.g. "inception".
      input_size: ImageNet training / evaluation resolution (square).
      preprocessing: key of `transfer_tf.models.PREPROCESSING` that maps [0, 255] to the scale
        the network is trained with.
      feature_dim: width of the penultimate (global-pooled) layer.
      imagenet_top1: published ImageNet top-1 accuracy as a fraction in [0, 1].
      top1_source: where `imagenet_top1` comes from.
      published_params: published parameter count with a 1000-way classifier and no aux head.
      params_source: where `published_params` comes from.
      params_counted: which variables the source counts, a key of `PARAMETER_COUNTS`:
        "trainable" (weights, biases, BN γ and β), "all" (also BN moving statistics; Keras'
        `count_params`) or "without_bn" (convolution and dense weights and biases only).
      has_aux_head: True where the architecture defines an Inception auxiliary classifier.
      min_input_size: smallest square input the network accepts (strides / VALID convolutions).
    """

    name: str
    family: str
    input_size: int
    preprocessing: str
    feature_dim: int
    imagenet_top1: float
    top1_source: str
    published_params: int
    params_source: str
    params_counted: str = "trainable"
    has_aux_head: bool = False
    min_input_size: int = 32

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"{self.name}: unknown preprocessing {self.preprocessing!r}")
        if not 0.0 < self.imagenet_top1 < 1.0:
            raise ValueError(
                f"{self.name}: imagenet_top1 must be a fraction, got {self.imagenet_top1}"
            )
        if self.params_counted not in PARAMETER_COUNTS:
            raise ValueError(f"{self.name}: unknown params_counted {self.params_counted!r}")
        if self.min_input_size > self.input_size:
            raise ValueError(f"{self.name}: min_input_size exceeds input_size")


class Trunk(NamedTuple):
    """A network without its classifier.

    inputs: the `keras.Input` of the graph; features: pooled penultimate features [B, D];
    aux_source: the feature map the Inception auxiliary head reads (None where there is none).
    """

    inputs: keras.KerasTensor
    features: keras.KerasTensor
    aux_source: keras.KerasTensor | None = None


TrunkBuilder = Callable[[int, TrainingSettings], Trunk]
WeightLoader = Callable[[keras.Model, int], None]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """spec; build_trunk; load_imagenet: offline ImageNet weights (weights="imagenet");
    checkpoints: the published checkpoint layouts, one per format (weights=PATH)."""

    spec: ModelSpec
    build_trunk: TrunkBuilder
    load_imagenet: WeightLoader | None = None
    checkpoints: tuple[checkpoints.CheckpointLayout, ...] = ()

    def layout(self, fmt: str) -> checkpoints.CheckpointLayout | None:
        return next((layout for layout in self.checkpoints if layout.format == fmt), None)


REGISTRY: dict[str, ModelEntry] = {}


def register(
    spec: ModelSpec,
    build_trunk: TrunkBuilder,
    load_imagenet: WeightLoader | None = None,
    checkpoints: tuple[checkpoints.CheckpointLayout, ...] = (),
):
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    if len({layout.format for layout in checkpoints}) != len(checkpoints):
        raise ValueError(f"model {spec.name!r}: one checkpoint layout per format")
    REGISTRY[spec.name] = ModelEntry(spec, build_trunk, load_imagenet, tuple(checkpoints))


def list_models() -> list[str]:
    """Registry names, in the order of the paper's model table."""
    return list(REGISTRY)


def _entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of transfer_tf.models.list_models(): "
            f"{', '.join(REGISTRY)}"
        ) from None


def get_spec(name: str) -> ModelSpec:
    return _entry(name).spec


def build_model(
    name: str,
    num_classes: int,
    settings: TrainingSettings | None = None,
    *,
    input_size: int | None = None,
    weights: str | None = None,
) -> keras.Model:
    """Builds registry model `name` with a `num_classes`-way classifier.

    The model takes float32 images [B, H, W, 3] already scaled by `preprocess(...,
    spec.preprocessing)` and returns a dict: "logits" [B, num_classes], "features" [B, D] (the
    global-pooled penultimate layer, before any dropout) and, with `settings.aux_head`,
    "aux_logits" [B, num_classes].

    Args:
      name: one of `list_models()`.
      num_classes: width of the classifier (1000 for ImageNet).
      settings: the training choices that shape the network; None means `TrainingSettings.fair()`.
      input_size: square input resolution; None means the ImageNet size of the model. Must be at
        least `get_spec(name).min_input_size`.
      weights: None (random initialization), "imagenet" where offline ImageNet weights exist
        (EfficientNet-Lite), or the path of a published checkpoint: a TF-slim checkpoint prefix or
        a Keras Applications `.h5` file (`transfer_tf/models/checkpoints.py`). With a classifier
        width the checkpoint does not have, only the trunk is loaded. With a checkpoint and
        `settings=None`, BN γ follows the checkpoint (slim's Inception nets have none).
        The checkpoint's input scaling is `checkpoint_input(name, weights)`, not always
        `spec.preprocessing`.
    """
    entry = _entry(name)
    spec = entry.spec
    checkpoint = layout = None
    if weights not in (None, "imagenet"):
        checkpoint, layout = _open_checkpoint(entry, weights)
        if settings is None:
            settings = checkpoint_settings(checkpoint)
    settings = TrainingSettings.fair() if settings is None else settings
    if not isinstance(settings, TrainingSettings):
        raise TypeError(
            f"build_model({name!r}): settings must be a TrainingSettings, got {settings!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"build_model({name!r}): num_classes must be a positive int, got {num_classes!r}"
        )
    size = spec.input_size if input_size is None else input_size
    if isinstance(size, bool) or not isinstance(size, int) or size < spec.min_input_size:
        raise ValueError(
            f"build_model({name!r}): input_size={input_size!r} is not supported; {name} needs a "
            f"square input of at least {spec.min_input_size} pixels (ImageNet size "
            f"{spec.input_size})"
        )
    if settings.aux_head and not spec.has_aux_head:
        with_aux = [n for n, e in REGISTRY.items() if e.spec.has_aux_head]
        raise ValueError(
            f"build_model({name!r}): {name} has no auxiliary classifier head; set "
            f"aux_head=False (models with one: {', '.join(with_aux)})"
        )
    if weights == "imagenet" and entry.load_imagenet is None:
        offline = [n for n, e in REGISTRY.items() if e.load_imagenet is not None]
        raise ValueError(
            f"build_model({name!r}, weights='imagenet'): no offline ImageNet weights exist for "
            f"{name}; use weights=None, or one of {', '.join(offline)}"
        )

    trunk = entry.build_trunk(size, settings)
    outputs = {
        "logits": model_layers.classifier(trunk.features, num_classes, settings.dropout_rate),
        "features": trunk.features,
    }
    if settings.aux_head:
        outputs["aux_logits"] = model_layers.inception_aux_head(
            trunk.aux_source, num_classes, settings.bn_scale
        )
    model = keras.Model(trunk.inputs, outputs, name=name)
    if weights == "imagenet":
        entry.load_imagenet(model, num_classes)
    elif checkpoint is not None:
        report = checkpoints.load_checkpoint(model, checkpoint, layout)
        logging.info(
            "%s: %d weights from %s (%s); classifier %s; passed over: %d auxiliary-head, %d "
            "classifier and %d bookkeeping tensors",
            name,
            report.assigned,
            report.checkpoint,
            report.format,
            "loaded" if report.head_loaded else "new",
            len(report.skipped_aux),
            len(report.skipped_head),
            len(report.bookkeeping),
        )
    return model


def _open_checkpoint(
    entry: ModelEntry, path
) -> tuple[checkpoints.Checkpoint, checkpoints.CheckpointLayout]:
    if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
        raise ValueError(
            f"build_model({entry.spec.name!r}): weights must be None, 'imagenet' or a checkpoint "
            f"path, got {path!r}"
        )
    checkpoint = checkpoints.read_checkpoint(path)
    layout = entry.layout(checkpoint.format)
    if layout is None:
        known = ", ".join(layout.format for layout in entry.checkpoints) or "none"
        raise checkpoints.CheckpointError(
            f"checkpoint {checkpoint.path}: {entry.spec.name} has no published "
            f"{checkpoint.format} layout (it knows: {known}); see docs/CHECKPOINTS.md"
        )
    return checkpoint, layout


def checkpoint_settings(checkpoint: checkpoints.Checkpoint) -> TrainingSettings:
    """The fair settings, with BN γ as the checkpoint has it (TF-slim's Inception nets and Keras'
    InceptionV3 / InceptionResNetV2 were trained without)."""
    return TrainingSettings(bn_scale=checkpoint.has(r"(^|/)gamma$"))


def checkpoint_input(name: str, weights: str | None) -> tuple[int, str]:
    """(input size, preprocessing) a model built with `weights` expects: the registry's, or the
    scaling its published checkpoint was trained with (TF-slim's ResNet v1 and VGG subtract the
    RGB means; Keras' DenseNet uses torch's mean / std; ...)."""
    entry = _entry(name)
    if weights in (None, "imagenet"):
        return entry.spec.input_size, entry.spec.preprocessing
    _, layout = _open_checkpoint(entry, weights)
    return entry.spec.input_size, layout.preprocessing


def checkpoint_classes(name: str, weights: str) -> int | None:
    """The classifier width a checkpoint gives model `name` (1000 for a 1001-way TF-slim head
    with its background class), or None when it holds no classifier."""
    checkpoint, layout = _open_checkpoint(_entry(name), weights)
    if layout.head_bias not in checkpoint.shapes:
        return None
    stored = int(checkpoint.shapes[layout.head_bias][-1])
    return stored - 1 if checkpoint.format == "tf_checkpoint" and stored == 1001 else stored
