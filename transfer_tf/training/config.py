"""What one training run is: a plain dataclass, saved as `<model_dir>/config.json`.

The same record drives ImageNet-style pretraining (`transfer-pretrain`), fine-tuning and training
from scratch (`transfer-finetune`, `transfer-scratch`); `transfer-export` rebuilds the network from
it. Rerunning with the same config resumes the run; a different config in an existing model_dir is
an error (a silent mix of two runs would corrupt both).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from transfer_tf.data import get_dataset
from transfer_tf.files import atomic_write_json
from transfer_tf.run_dir import CONFIG_NAME

OPTIMIZERS = ("rmsprop", "sgd_nesterov", "sgd")
LR_SCHEDULES = ("exponential", "cosine", "constant")
INIT_MODES = ("random", "weights", "model_dir", "saved_model", "keras_model")
# --mixed_precision values (`transfer_tf.training.precision`); "none" = float32.
MIXED_PRECISION = ("none", "mixed_bfloat16", "mixed_float16")
# A loaded .keras file's layers keep the dtype policy they were saved with (float32), so the
# policy would reach only the new classifier.
KERAS_MODEL_PRECISION = (
    "mixed_precision needs a registry network: a .keras start (init_keras_model) keeps the "
    "float32 dtype its layers were saved with; use mixed_precision='none'"
)

# Keys that may change between a run and its resumption: they change when and how a run reports,
# never what it computes.
RESUMABLE_CHANGES = frozenset(
    {
        "checkpoint_every",
        "keep_checkpoints",
        "eval_every",
        "eval_log_spaced",
        "log_every",
        "eval_batch_size",
    }
)


@dataclasses.dataclass
class TrainConfig:
    """Everything needed to rerun (and resume) one training run.

    Attributes (what is trained):
      model: registry name (`transfer_tf.models.list_models()`).
      dataset: registry dataset name; records are read from `<records_dir>/<dataset>/`.
      num_classes, multi_label, metric: the dataset's label space and its metric name
        (`transfer_tf.metrics.METRICS`); filled from the dataset registry by the binaries.
      input_size, preprocessing: image side and preprocessing name; None = the model's own.
      settings: `TrainingSettings.to_dict()` (BN γ, dropout, aux head, label smoothing).
      init: "random", "weights" (registry weights named by `weights`, e.g. "imagenet") or
        "model_dir" (the EMA weights of a finished run in `init_model_dir`) or "saved_model" (the
        weights of a SavedModel written by transfer-export, `init_saved_model`) or "keras_model"
        (a `.keras` file `init_keras_model` up to its layer `feature_layer`; the trainer is given
        `transfer_tf.protocols.keras_source.keras_model_builder`, and `input_size` and
        `preprocessing` are the user's); for all but "random" the logits layer is new and
        zero-initialised.
      train_split, eval_split: TFRecord splits ("train", "val", "test", "train+val"); eval_split
        None trains without evaluation.
      per_class: train on a class-balanced random subset with this many examples per class.
      crop_area_min, flip: training augmentation (`transfer_tf.data.make_input`): the Inception
        crop covers this fraction of the image or more (paper: 0.08); random horizontal flips,
        None = the dataset's registry default (no flips for digits).
      num_train_examples: size of the training split after `per_class`; sets steps per epoch.

    Attributes (how):
      batch_size: the global batch over all replicas and workers.
      train_steps: optimizer steps to run in total.
      learning_rate: learning rate per `lr_reference_batch` images; the optimizer gets
        `learning_rate * batch_size / lr_reference_batch` (Goyal et al. 2017 linear scaling).
      optimizer: "rmsprop" (Inception: rho 0.9, momentum 0.9, epsilon 1.0), "sgd_nesterov"
        (fine-tuning / scratch, momentum 0.9) or "sgd".
      lr_schedule: "exponential" (× decay_rate every decay_epochs, staircase), "cosine" (to 0 at
        train_steps) or "constant"; after a linear warmup of warmup_epochs from 0.
      weight_decay: L2 coefficient λ on convolution / dense kernels: loss += λ · Σ w² / 2
        (TF-slim `l2_regularizer`); BN parameters and biases are not decayed.
      ema_decay: exponential moving average of the weights used for evaluation and export;
        0 disables it. The decay is min(ema_decay, (1 + step) / (10 + step)) (TF-slim).
      aux_loss_weight: weight of the auxiliary-head loss (Inception v3: 0.4).
      bn_momentum: BatchNormalization moving-average momentum; None keeps the model's, "auto"
        is max(1 − 10 / s, 0.9) with s steps per epoch (SimCLR's fine-tuning protocol).
      eval_log_spaced: also evaluate at doubling steps from 1/400 of the run (50, 100, 200, ...
        of 20,000), so Fig. 8's "steps to 90% of the maximum odds" resolves within a factor of 2
        down to 0.25% of the run (`evaluation_steps`).
      checkpoint_every, keep_checkpoints, eval_every, log_every: in steps; eval_every 0 evaluates
        at the end only.
      checkpoint_input: also checkpoint the tf.data iterator (its position and shuffle buffer) on
        a single worker, so a resumed run continues where the data stopped.
      autoshard: tf.data auto-shard policy across workers ("auto", "file", "data", "off").
      tpu: TPU name or address; uses TPUStrategy.
      mixed_precision: "none" (float32), "mixed_bfloat16" or "mixed_float16" (with dynamic loss
        scaling): the Keras dtype policy the network is built under (`training/precision.py`).
      jit_compile: compile each replica's step (forward, backward, update) with XLA.
      seed: seeds the data order and augmentation and the weight initialisation.
    """

    model: str
    dataset: str
    records_dir: str
    num_classes: int
    multi_label: bool = False
    metric: str = "top1"
    input_size: int | None = None
    preprocessing: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    init: str = "random"
    weights: str | None = None
    init_model_dir: str | None = None
    init_saved_model: str | None = None
    init_keras_model: str | None = None
    feature_layer: str | None = None
    train_split: str = "train"
    eval_split: str | None = "val"
    per_class: int | None = None
    crop_area_min: float = 0.08
    flip: bool | None = None
    num_train_examples: int | None = None
    batch_size: int = 256
    train_steps: int = 1000
    learning_rate: float = 0.016
    lr_reference_batch: int = 256
    optimizer: str = "rmsprop"
    momentum: float = 0.9
    rmsprop_rho: float = 0.9
    rmsprop_epsilon: float = 1.0
    lr_schedule: str = "exponential"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.94
    decay_epochs: float = 2.0
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    aux_loss_weight: float = 0.4
    bn_momentum: float | str | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_log_spaced: bool = False
    log_every: int = 100
    eval_batch_size: int | None = None
    checkpoint_input: bool = True
    autoshard: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "none"
    jit_compile: bool = False
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} (use one of {OPTIMIZERS})")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} (use one of {LR_SCHEDULES})")
        if self.init not in INIT_MODES:
            problems.append(f"init={self.init!r} (use one of {INIT_MODES})")
        if self.init == "weights" and not self.weights:
            problems.append("init='weights' needs weights (e.g. 'imagenet')")
        if self.init == "model_dir" and not self.init_model_dir:
            problems.append("init='model_dir' needs init_model_dir (a pretraining --model_dir)")
        if self.init == "saved_model" and not self.init_saved_model:
            problems.append("init='saved_model' needs init_saved_model (a transfer-export dir)")
        if self.init == "keras_model" and not (
            self.init_keras_model and self.feature_layer and self.input_size and self.preprocessing
        ):
            problems.append(
                "init='keras_model' needs init_keras_model, feature_layer, input_size and "
                "preprocessing (the .keras file records neither its scaling nor its features)"
            )
        for name in (
            "batch_size",
            "train_steps",
            "num_classes",
            "lr_reference_batch",
            "checkpoint_every",
            "log_every",
            "keep_checkpoints",
        ):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 1)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate={self.learning_rate!r} (must be > 0)")
        if self.weight_decay < 0:
            problems.append(f"weight_decay={self.weight_decay!r} (must be >= 0)")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay={self.ema_decay!r} (must be in [0, 1))")
        if self.eval_every < 0 or self.warmup_epochs < 0 or self.decay_epochs <= 0:
            problems.append("eval_every and warmup_epochs must be >= 0 and decay_epochs > 0")
        if isinstance(self.bn_momentum, str) and self.bn_momentum != "auto":
            problems.append(f"bn_momentum={self.bn_momentum!r} (a float, 'auto' or None)")
        if isinstance(self.bn_momentum, float) and not 0.0 < self.bn_momentum < 1.0:
            problems.append(f"bn_momentum={self.bn_momentum!r} (must be in (0, 1))")
        if self.per_class is not None and self.per_class < 1:
            problems.append(f"per_class={self.per_class!r} (must be >= 1 or None)")
        if not 0.0 < self.crop_area_min <= 1.0:
            problems.append(f"crop_area_min={self.crop_area_min!r} (must be in (0, 1])")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(
                f"mixed_precision={self.mixed_precision!r} (use one of {MIXED_PRECISION})"
            )
        if self.init == "keras_model" and self.mixed_precision != "none":
            problems.append(KERAS_MODEL_PRECISION)
        if self.autoshard not in ("auto", "file", "data", "off"):
            problems.append(f"autoshard={self.autoshard!r} (auto, file, data or off)")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @property
    def peak_learning_rate(self) -> float:
        """The optimizer's learning rate after linear scaling with the global batch."""
        return scaled_learning_rate(self.learning_rate, self.batch_size, self.lr_reference_batch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def scaled_learning_rate(
    learning_rate: float, batch_size: int, reference_batch: int = 256
) -> float:
    """Linear scaling: `learning_rate` is per `reference_batch` images."""
    return float(learning_rate) * float(batch_size) / float(reference_batch)


def config_path(model_dir: str) -> str:
    return os.path.join(model_dir, CONFIG_NAME)


def save_config(config: TrainConfig, model_dir: str) -> str:
    """Writes `<model_dir>/config.json` atomically (temporary file, then rename)."""
    os.makedirs(model_dir, exist_ok=True)
    path = config_path(model_dir)
    atomic_write_json(path, config.to_dict(), indent=1, sort_keys=True)
    return path


def load_config(model_dir: str) -> TrainConfig:
    path = config_path(model_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: --model_dir must be a directory written by transfer-pretrain, "
            "transfer-finetune or transfer-scratch"
        )
    with open(path) as f:
        return TrainConfig.from_dict(json.load(f))


def check_resumable(config: TrainConfig, model_dir: str) -> None:
    """Raises if `model_dir` already holds a run whose config differs from `config`."""
    if not os.path.exists(config_path(model_dir)):
        return
    old = load_config(model_dir).to_dict()
    new = config.to_dict()
    changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
        raise ValueError(
            f"{config_path(model_dir)} holds a different run ({details}); rerun with the same "
            "flags to resume it, or pass a new --model_dir"
        )


def dataset_fields(dataset: str, records_dir=None) -> dict:
    """num_classes, multi_label and metric of a registry dataset, or of a dataset made with
    `transfer-make-tfrecords --image_folder / --csv` into `records_dir`."""
    try:
        spec = get_dataset(dataset, records_dir=records_dir)
    except KeyError as e:
        raise ValueError(f"--dataset={dataset!r}: {e.args[0]}") from None
    return dict(num_classes=spec.num_classes, multi_label=spec.multi_label, metric=spec.metric)
