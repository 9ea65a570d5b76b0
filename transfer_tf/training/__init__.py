"""Inception-style training under tf.distribute, used by pretraining, fine-tuning and training from
scratch; checkpoints, TensorBoard and SavedModel export.

    from transfer_tf.training import TrainConfig, train
    result = train(TrainConfig(model="mobilenet_v2", dataset="fashion_mnist", ...), model_dir)
"""

from transfer_tf.training.config import TrainConfig, load_config, save_config
from transfer_tf.training.loop import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_config", "save_config", "train"]
