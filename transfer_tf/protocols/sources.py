"""Where a fine-tuning or scratch sweep starts: a `Source` names the network (registry
architecture, input size, training settings), its starting weights (a pretraining run, a
transfer-export SavedModel, registry or published-checkpoint weights, or random) and the labels the
results carry (`model`, `settings`)."""

from __future__ import annotations

import dataclasses
import os

from transfer_tf.models import TrainingSettings
from transfer_tf.training.config import load_config
from transfer_tf.training.saved_model_info import read_export_info


@dataclasses.dataclass(frozen=True)
class Source:
    """The network a sweep starts from.

    architecture: registry model name; init: "model_dir", "saved_model", "weights" or "random";
    settings: the network's TrainingSettings dict (fine-tuning-time dropout / aux head / label
    smoothing included); label / settings_label: the result schema's `model` and `settings`.
    """

    architecture: str
    init: str
    settings: dict
    label: str
    settings_label: str
    input_size: int | None = None
    init_model_dir: str | None = None
    init_saved_model: str | None = None
    weights: str | None = None
    # A .keras file (init "keras_model"): the layer whose output is the features, and the scaling
    # its input expects ("none", "unit" or a PREPROCESSING key), which the file does not record.
    init_keras_model: str | None = None
    feature_layer: str | None = None
    preprocessing: str | None = None


def settings_label(settings: dict) -> str:
    """ "fair", "inception_default" or "custom" for a TrainingSettings dict."""
    current = TrainingSettings.from_dict(settings)
    if current == TrainingSettings.fair():
        return "fair"
    if current == TrainingSettings.inception_default():
        return "inception_default"
    return "custom"


def _run_settings_label(settings: dict) -> str:
    """The settings label of a training run; no recorded settings means the defaults (fair)."""
    return settings_label(settings) if settings else "fair"


def _with_fine_tuning_settings(settings: dict, dropout_rate, aux_head, label_smoothing) -> dict:
    """A pretrained network's settings with the fine-tuning run's own dropout, aux head and label
    smoothing where given (None keeps the network's)."""
    overrides = {
        "dropout_rate": dropout_rate,
        "aux_head": aux_head,
        "label_smoothing": label_smoothing,
    }
    return {**settings, **{k: v for k, v in overrides.items() if v is not None}}


def source_from_model_dir(
    model_dir: str, *, dropout_rate=None, aux_head=None, label_smoothing=None, label=None
) -> Source:
    """Fine-tune the run in `model_dir`: its architecture, input size and BN γ; the other three
    settings are the fine-tuning run's own (the paper switches them on for fine-tuning, Fig. 5)."""
    config = load_config(model_dir)
    pretrained_label = _run_settings_label(config.settings)
    settings = _with_fine_tuning_settings(config.settings, dropout_rate, aux_head, label_smoothing)
    return Source(
        architecture=config.model,
        init="model_dir",
        settings=settings,
        label=label or f"{config.model}_{pretrained_label}",
        settings_label=pretrained_label,
        input_size=config.input_size,
        init_model_dir=os.path.abspath(model_dir),
    )


def source_from_saved_model(
    export_dir: str, *, dropout_rate=None, aux_head=None, label_smoothing=None, label=None
) -> Source:
    """Fine-tune a SavedModel written by transfer-export: the registry network it records, its
    weights; as for a model_dir, the three fine-tuning-time settings are the run's own."""
    info = read_export_info(export_dir)
    recorded = info.get("settings") or {}
    if info.get("source") in ("registry", "checkpoint"):  # published weights
        pretrained_label = "public"
    else:
        pretrained_label = _run_settings_label(recorded)
    settings = _with_fine_tuning_settings(recorded, dropout_rate, aux_head, label_smoothing)
    return Source(
        architecture=info["model"],
        init="saved_model",
        settings=settings,
        label=label or f"{info['model']}_{pretrained_label}",
        settings_label=pretrained_label,
        input_size=int(info["input_size"]),
        init_saved_model=os.path.abspath(export_dir),
    )


def source_from_registry(
    architecture: str, *, weights: str | None, settings: dict, input_size=None, label=None
) -> Source:
    """Registry weights (fine-tuning, e.g. weights="imagenet") or random init (weights=None)."""
    if weights:
        return Source(
            architecture=architecture,
            init="weights",
            settings=settings,
            label=label
            or f"{architecture}_{'imagenet' if weights == 'imagenet' else 'checkpoint'}",
            settings_label="public",
            input_size=input_size,
            weights=weights,
        )
    return Source(
        architecture=architecture,
        init="random",
        settings=settings,
        label=label or architecture,
        settings_label=settings_label(settings),
        input_size=input_size,
    )


def source_from_keras_model(
    path: str,
    feature_layer: str,
    *,
    scaling: str,
    input_size: int,
    settings: dict | None = None,
    label: str | None = None,
) -> Source:
    """Fine-tune a Keras model file from the input to `feature_layer`, with a new classifier;
    its settings label is "external" (not a registry network)."""
    if not (feature_layer and scaling and input_size):
        raise ValueError(
            f"--init_keras_model={path}: pass --feature_layer, --scaling and --input_size (a "
            ".keras file records neither which layer is the representation nor its scaling)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--init_keras_model={path} does not exist")
    name = os.path.splitext(os.path.basename(path))[0]
    return Source(
        architecture=f"keras:{name}",
        init="keras_model",
        settings=dict(settings or {}),
        label=label or name,
        settings_label="external",
        input_size=int(input_size),
        init_keras_model=os.path.abspath(path),
        feature_layer=feature_layer,
        preprocessing=scaling,
    )
