"""The registry model and the registry data as a run's defaults: how a `TrainConfig` becomes a
network (`default_model_builder`) and its input (`default_input_fn`, at the size and scaling
`input_spec` gives). The loop, export and fine-tuning's initialisation all build through here."""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer_tf.data import make_input
from transfer_tf.models import TrainingSettings, build_model, checkpoint_input
from transfer_tf.training.config import TrainConfig
from transfer_tf.training.saved_model_info import read_export_info


def input_spec(config: TrainConfig) -> tuple[int, str]:
    """(image side, preprocessing name): the config's, else the starting weights' (a published
    checkpoint's scaling, a transfer-export SavedModel's recorded one), else the registry model's."""
    if config.input_size and config.preprocessing:
        return int(config.input_size), config.preprocessing
    size, preprocessing = checkpoint_input(
        config.model, config.weights if config.init == "weights" else None
    )
    if config.init == "saved_model":
        preprocessing = read_export_info(config.init_saved_model).get(
            "preprocessing", preprocessing
        )
    return int(config.input_size or size), config.preprocessing or preprocessing


def model_settings(config: TrainConfig) -> TrainingSettings:
    return TrainingSettings.from_dict(config.settings) if config.settings else TrainingSettings()


def default_model_builder(config: TrainConfig) -> keras.Model:
    if config.init == "keras_model":
        raise ValueError(
            f"{config.init_keras_model}: a .keras start is built by "
            "transfer_tf.protocols.keras_source.keras_model_builder; pass it as the model_builder"
        )
    keras.utils.set_random_seed(config.seed)
    return build_model(
        config.model,
        config.num_classes,
        model_settings(config),
        input_size=config.input_size,
        weights=config.weights if config.init == "weights" else None,
    )


def default_input_fn(
    config, split, *, training, batch_size, repeat, cache_decoded: str = "off"
) -> tf.data.Dataset:
    """The run's input from its records. `cache_decoded` (`make_input`) applies to the training
    input only: evaluation makes a new dataset for every evaluation, which a cache would fill
    and drop each time."""
    size, preprocessing = input_spec(config)
    return make_input(
        config.records_dir,
        config.dataset,
        split,
        image_size=size,
        preprocessing=preprocessing,
        training=training,
        batch_size=batch_size,
        seed=config.seed,
        repeat=repeat,
        drop_remainder=training,
        per_class=config.per_class if split == config.train_split else None,
        crop_area_min=config.crop_area_min,
        flip=config.flip,
        cache_decoded=cache_decoded if training else "off",
    )
