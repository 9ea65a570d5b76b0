"""Moving weights between runs: a finished model_dir's (EMA) weights into a new network with a new
classifier, and the zero-initialised logits layer of fine-tuning (Sec. 4.2)."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from transfer_tf.models import TrainingSettings, build_model
from transfer_tf.run_dir import RunDir
from transfer_tf.training.builders import default_model_builder
from transfer_tf.training.config import TrainConfig, load_config
from transfer_tf.training.ema import ExponentialMovingAverage
from transfer_tf.training.saved_model_info import read_export_info

LOGITS_LAYER = "logits"
AUX_LOGITS_LAYER = "aux_logits"
AUX_PREFIX = "aux_"


def _layer_weights(model: keras.Model, keep) -> list:
    return [w for layer in model.layers if keep(layer.name) for w in layer.weights]


def trunk_weights(model: keras.Model) -> list:
    """Every weight except the classifier and the auxiliary head, in graph order."""
    return _layer_weights(model, lambda n: n != LOGITS_LAYER and not n.startswith(AUX_PREFIX))


def aux_trunk_weights(model: keras.Model) -> list:
    """The auxiliary head's weights except its own logits layer (empty without an aux head)."""
    return _layer_weights(model, lambda n: n.startswith(AUX_PREFIX) and n != AUX_LOGITS_LAYER)


def classifier_layers(model: keras.Model) -> list[keras.layers.Layer]:
    names = {layer.name for layer in model.layers}
    missing = LOGITS_LAYER not in names
    if missing:
        raise ValueError(
            f"model {model.name!r} has no layer named {LOGITS_LAYER!r}; registry models name "
            "their classifier 'logits' (transfer_tf/models/layers.py:classifier)"
        )
    return [model.get_layer(n) for n in (LOGITS_LAYER, AUX_LOGITS_LAYER) if n in names]


def zero_classifier(model: keras.Model) -> None:
    """A new classifier starts at zero: logits (and aux logits) kernels and biases all 0."""
    for layer in classifier_layers(model):
        for w in layer.weights:
            w.assign(np.zeros(w.shape, dtype=w.dtype))


def _copy(source: list, target: list, what: str, source_dir: str) -> int:
    if len(source) != len(target):
        raise ValueError(
            f"cannot initialise from {source_dir}: its {what} has {len(source)} weights, the new "
            f"network's has {len(target)}; pretraining and fine-tuning must use the same "
            "--model and --input_size"
        )
    for s, t in zip(source, target, strict=True):
        if tuple(s.shape) != tuple(t.shape):
            raise ValueError(
                f"cannot initialise from {source_dir}: weight {s.path} has shape {tuple(s.shape)} "
                f"but the new network's {t.path} has {tuple(t.shape)}; use the same --model and "
                "--input_size as the pretraining run"
            )
    for s, t in zip(source, target, strict=True):
        t.assign(s.numpy())
    return len(source)


def restore_model_dir(model_dir: str, model_builder=None, *, use_ema: bool = True):
    """(model, config) rebuilt from `<model_dir>/config.json` with its latest checkpoint's weights,
    the EMA averages where the run kept them (and `use_ema`)."""
    config: TrainConfig = load_config(model_dir)
    run = RunDir(model_dir)
    latest = run.latest_checkpoint()
    if latest is None:
        raise FileNotFoundError(
            f"{run.ckpt} holds no checkpoint: train {model_dir} first (transfer-pretrain with the "
            "same --model_dir)"
        )
    # The network as trained, but random init: the checkpoint supplies every weight.
    build_config = config.replace(init="random", weights=None, init_model_dir=None)
    model = (model_builder or default_model_builder)(build_config)
    items = {"model": model}
    ema = None
    if config.ema_decay > 0:
        ema = ExponentialMovingAverage(model, config.ema_decay)
        items["ema"] = ema
    try:
        status = tf.train.Checkpoint(**items).restore(latest)
        status.expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as e:  # e.g. a truncated data file
        raise _damaged(latest, e) from None
    if ema is not None and use_ema:
        ema.copy_to_model()
    return model, config


def restore_saved_model(export_dir: str):
    """(model, info): the Keras network of a transfer-export SavedModel, rebuilt from the registry
    and given the SavedModel's weights (its variables are a checkpoint of the exported module,
    whose `model` attribute is the network)."""
    info = read_export_info(export_dir)
    settings = TrainingSettings.from_dict(info["settings"]) if info.get("settings") else None
    model = build_model(
        info["model"], int(info["num_classes"]), settings, input_size=int(info["input_size"])
    )
    variables = os.path.join(export_dir, "variables", "variables")
    try:
        tf.train.Checkpoint(model=model).read(variables).assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as e:  # e.g. a truncated variables file
        raise _damaged(variables, e) from None
    return model, info


def _damaged(path: str, error: Exception) -> ValueError:
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return ValueError(
        f"checkpoint {path} cannot be read ({type(error).__name__}: {first.strip()}): its files "
        "are damaged or incomplete; train or export it again"
    )


def _copy_trunks(source: keras.Model, model: keras.Model, source_dir: str) -> int:
    copied = _copy(trunk_weights(source), trunk_weights(model), "trunk", source_dir)
    source_aux, target_aux = aux_trunk_weights(source), aux_trunk_weights(model)
    if source_aux and target_aux:
        copied += _copy(source_aux, target_aux, "auxiliary head", source_dir)
    return copied


def init_from_model_dir(model: keras.Model, source_dir: str, model_builder=None) -> int:
    """Copies the trunk (and aux trunk, where both have one) of the run in `source_dir` into
    `model`; the classifier stays as it is. Returns how many weights were copied."""
    source, _ = restore_model_dir(source_dir, model_builder)
    return _copy_trunks(source, model, source_dir)


def init_from_saved_model(model: keras.Model, export_dir: str) -> int:
    """The same from a SavedModel written by transfer-export."""
    source, _ = restore_saved_model(export_dir)
    return _copy_trunks(source, model, export_dir)
