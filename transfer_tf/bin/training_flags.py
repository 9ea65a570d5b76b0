"""absl flags shared by transfer-pretrain, transfer-finetune and transfer-scratch (flag
definitions live in `transfer_tf/bin/`; the library takes explicit arguments).

Each binary calls `define_training_flags(**recipe_defaults)` once at import; flagfiles in
`flags/pretrain/` and `flags/finetune/` set the recipes of the paper.
"""

from __future__ import annotations

from absl import flags

from transfer_tf.training.config import LR_SCHEDULES, MIXED_PRECISION, OPTIMIZERS

# Defaults of the Inception-style ImageNet recipe (Supp. A.2); binaries override some.
RECIPE_DEFAULTS = dict(
    batch_size=256,
    train_steps=1000,
    learning_rate=0.016,
    optimizer="rmsprop",
    lr_schedule="exponential",
    warmup_epochs=0.0,
    weight_decay=4e-5,
    ema_decay=0.9999,
    bn_momentum="",
    eval_every=0,
    checkpoint_every=1000,
    log_every=100,
)


def define_training_flags(**defaults) -> None:
    """Defines the flags of one training binary; keyword arguments override RECIPE_DEFAULTS."""
    unknown = set(defaults) - set(RECIPE_DEFAULTS)
    if unknown:
        raise ValueError(f"define_training_flags: unknown defaults {sorted(unknown)}")
    d = {**RECIPE_DEFAULTS, **defaults}
    # What is trained.
    flags.DEFINE_string("model", None, "Registry model name (transfer_tf.models.list_models()).")
    flags.DEFINE_string("dataset", None, "Registry dataset name (transfer_tf.data.DATASETS).")
    flags.DEFINE_string("records_dir", None, "Root of the TFRecords: <records_dir>/<dataset>/.")
    # Values are checked when the flags are parsed (absl bounds), never replaced by defaults.
    flags.DEFINE_integer(
        "input_size", None, "Square input size; default: the model's ImageNet size.", lower_bound=1
    )
    flags.DEFINE_integer(
        "per_class", None, "Train on a class-balanced subset of N per class.", lower_bound=1
    )
    flags.DEFINE_integer("seed", 0, "Seeds data order, augmentation and initialisation.")
    define_augmentation_flags()
    # The four training settings of Fig. 3 (TrainingSettings).
    flags.DEFINE_boolean("bn_scale", True, "BatchNormalization learns a scale gamma.")
    flags.DEFINE_float("dropout_rate", 0.0, "Dropout before the logits (0 = none).")
    flags.DEFINE_boolean("aux_head", False, "Inception auxiliary classifier head.")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the training loss.")
    flags.DEFINE_float("aux_loss_weight", 0.4, "Weight of the auxiliary head's loss.")
    # Optimisation.
    flags.DEFINE_integer(
        "batch_size", d["batch_size"], "Global batch over all replicas/workers.", lower_bound=1
    )
    flags.DEFINE_integer(
        "train_steps", d["train_steps"], "Optimizer steps in total.", lower_bound=1
    )
    flags.DEFINE_float(
        "learning_rate",
        d["learning_rate"],
        "Learning rate per --lr_reference_batch images; scaled linearly with --batch_size.",
    )
    flags.DEFINE_integer(
        "lr_reference_batch", 256, "Batch size --learning_rate is given for.", lower_bound=1
    )
    flags.DEFINE_enum("optimizer", d["optimizer"], list(OPTIMIZERS), "Optimizer.")
    flags.DEFINE_float("momentum", 0.9, "Momentum (RMSProp and SGD).")
    flags.DEFINE_float("rmsprop_rho", 0.9, "RMSProp decay of the squared-gradient average.")
    flags.DEFINE_float("rmsprop_epsilon", 1.0, "RMSProp epsilon (Inception: 1.0).")
    flags.DEFINE_enum("lr_schedule", d["lr_schedule"], list(LR_SCHEDULES), "Learning-rate decay.")
    flags.DEFINE_float("warmup_epochs", d["warmup_epochs"], "Linear warmup from 0, in epochs.")
    flags.DEFINE_float("decay_rate", 0.94, "Exponential schedule: factor per --decay_epochs.")
    flags.DEFINE_float("decay_epochs", 2.0, "Exponential schedule: epochs between decays.")
    flags.DEFINE_float(
        "weight_decay", d["weight_decay"], "L2 coefficient on kernels: loss += wd * sum(w^2) / 2."
    )
    flags.DEFINE_float("ema_decay", d["ema_decay"], "EMA of weights for eval/export; 0 = off.")
    flags.DEFINE_string(
        "bn_momentum",
        d["bn_momentum"],
        "BN moving-average momentum: a number, 'auto' = max(1 - 10/steps_per_epoch, 0.9), or "
        "empty for the model's own.",
    )
    # Bookkeeping and distribution.
    flags.DEFINE_integer(
        "checkpoint_every", d["checkpoint_every"], "Checkpoint every N steps.", lower_bound=1
    )
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1)
    flags.DEFINE_integer(
        "eval_every", d["eval_every"], "Evaluate every N steps (0 = at the end).", lower_bound=0
    )
    flags.DEFINE_integer("log_every", d["log_every"], "Progress line every N steps.", lower_bound=1)
    flags.DEFINE_integer(
        "eval_batch_size", None, "Evaluation batch (default --batch_size).", lower_bound=1
    )
    flags.DEFINE_boolean(
        "checkpoint_input",
        True,
        "Checkpoint the tf.data iterator (single worker) so a resumed run continues the data "
        "where it stopped; its shuffle buffer is saved too, so turn it off for ImageNet.",
    )
    flags.DEFINE_enum("autoshard", "auto", ["auto", "file", "data", "off"], "tf.data auto-shard.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address: use TPUStrategy.")
    flags.DEFINE_integer(
        "cpu_devices",
        1,
        "Split the CPU into N logical devices (MirroredStrategy without GPUs).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "tensorboard_port", None, "Start TensorBoard on 127.0.0.1:<port> while training."
    )
    define_speed_flags()


def define_augmentation_flags(flag_values=flags.FLAGS) -> None:  # bin/: FLAGS is the binary's
    """--crop_area_min and --flip: the training augmentation (SPEC: every part a flag)."""
    flags.DEFINE_float(
        "crop_area_min",
        0.08,
        "Training crops (Inception random-resized crop) cover at least this fraction of the "
        "image; the paper's 0.08. Tiny images (8x8 digits) lose their content below ~0.5.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "flip",
        None,
        "Random horizontal flips while training; default: the dataset's registry "
        "(mirror_invariant: on for natural images, off for digits).",
        flag_values=flag_values,
    )


def define_speed_flags(flag_values=flags.FLAGS) -> None:
    """--mixed_precision and --jit_compile (training/precision.py): how fast, recorded in the
    run's config.json and, when not default, in a sweep cell's hparams."""
    flags.DEFINE_enum(
        "mixed_precision",
        "none",
        list(MIXED_PRECISION),
        "Layers compute in bfloat16 or float16 (float16 with dynamic loss scaling); variables, "
        "loss, BN statistics and the exported SavedModel stay float32. none = float32.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "jit_compile",
        False,
        "Compile each training step (forward, backward, update) with XLA.",
        flag_values=flag_values,
    )


def define_input_cache_flag(flag_values=flags.FLAGS) -> None:
    """--cache_decoded (transfer-pretrain, -finetune, -scratch): how the training input is read; the
    batches are the same either way, so it is no part of a cell's identity."""
    flags.DEFINE_enum(
        "cache_decoded",
        "auto",
        ["auto", "on", "off"],
        "Keep the training split in memory after the first epoch, PNG images decoded (JPEGs "
        "stay encoded): later epochs skip reading, checking and decoding; the batches are the "
        "same. auto: when its estimated size is within 1 GiB.",
        flag_values=flag_values,
    )


def settings_from_flags(flag_values) -> dict:
    return {
        "bn_scale": bool(flag_values.bn_scale),
        "dropout_rate": float(flag_values.dropout_rate),
        "aux_head": bool(flag_values.aux_head),
        "label_smoothing": float(flag_values.label_smoothing),
    }


def bn_momentum_from_flag(value: str):
    value = (value or "").strip()
    if not value:
        return None
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--bn_momentum={value!r}: use a number in (0, 1), 'auto' or ''") from None


def config_kwargs_from_flags(flag_values) -> dict:
    """The TrainConfig fields that come straight from the shared flags."""
    return dict(
        input_size=flag_values.input_size,
        per_class=flag_values.per_class,
        crop_area_min=flag_values.crop_area_min,
        flip=flag_values.flip,
        seed=flag_values.seed,
        settings=settings_from_flags(flag_values),
        aux_loss_weight=flag_values.aux_loss_weight,
        batch_size=flag_values.batch_size,
        train_steps=flag_values.train_steps,
        learning_rate=flag_values.learning_rate,
        lr_reference_batch=flag_values.lr_reference_batch,
        optimizer=flag_values.optimizer,
        momentum=flag_values.momentum,
        rmsprop_rho=flag_values.rmsprop_rho,
        rmsprop_epsilon=flag_values.rmsprop_epsilon,
        lr_schedule=flag_values.lr_schedule,
        warmup_epochs=flag_values.warmup_epochs,
        decay_rate=flag_values.decay_rate,
        decay_epochs=flag_values.decay_epochs,
        weight_decay=flag_values.weight_decay,
        ema_decay=flag_values.ema_decay,
        bn_momentum=bn_momentum_from_flag(flag_values.bn_momentum),
        checkpoint_every=flag_values.checkpoint_every,
        keep_checkpoints=flag_values.keep_checkpoints,
        eval_every=flag_values.eval_every,
        log_every=flag_values.log_every,
        eval_batch_size=flag_values.eval_batch_size,
        checkpoint_input=flag_values.checkpoint_input,
        autoshard=flag_values.autoshard,
        tpu=flag_values.tpu,
        mixed_precision=flag_values.mixed_precision,
        jit_compile=flag_values.jit_compile,
    )
