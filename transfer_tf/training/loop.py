"""The generic training loop: pretraining, fine-tuning and training from scratch all run here.

One `Trainer` = one run in one `model_dir`:

    config.json   everything needed to rebuild the network and rerun the run (TrainConfig)
    ckpt/         tf.train.CheckpointManager: model, optimizer (its step counter is the run's
                  step), EMA averages, and on a single worker the tf.data iterator
    tb/           TensorBoard: loss, top-1, learning rate, examples/s, eval metric, hparams
    history.csv   the evaluation metric against step (columns step, epoch, eval_split, eval_metric)

Loss reduction under tf.distribute: each replica's per-example losses are summed and divided by
the GLOBAL batch (`tf.nn.compute_average_loss`), the regularisation loss is divided by the number
of replicas (`tf.nn.scale_regularization_loss`), and the optimizer all-reduces gradients by SUM,
so every strategy computes the gradient of the same global-batch objective as one device would.
Keras 3 BatchNormalization keeps per-replica moving statistics (variables with aggregation
NONE); the loop averages them across replicas after every step so that all copies, checkpoints
and exports agree.

Speed flags (`TrainConfig.mixed_precision`, `jit_compile`): the network is built under the Keras
dtype policy (`training/precision.py`; float16 adds dynamic loss scaling), the loss is computed
in float32 from float32-cast logits, and with `jit_compile` each replica's step is one XLA
computation (with several replicas, its forward and backward pass).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import shutil
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf.files import atomic_write_text
from transfer_tf.run_dir import RunDir
from transfer_tf.training import distribute, precision, schedules
from transfer_tf.training.builders import default_input_fn, default_model_builder
from transfer_tf.training.config import TrainConfig, check_resumable, save_config
from transfer_tf.training.ema import ExponentialMovingAverage
from transfer_tf.training.weights import init_from_model_dir, init_from_saved_model, zero_classifier

ModelBuilder = Callable[[TrainConfig], keras.Model]
# input_fn(config, split, *, training, batch_size, repeat) -> tf.data.Dataset of (images, labels)
InputFn = Callable[..., tf.data.Dataset]


def count_examples(config: TrainConfig, input_fn: InputFn | None = None, split=None) -> int:
    """Examples in `split` (default: the training split, after `per_class`).

    From the TFRecord manifests for the registry data; by reading the split otherwise.
    """
    split = split or config.train_split
    # The default input with options bound (functools.partial: --cache_decoded) reads the same
    # records: count from their manifests, not by reading the split.
    if input_fn is None or getattr(input_fn, "func", input_fn) is default_input_fn:
        from transfer_tf.data import split_size

        if config.per_class is not None and split == config.train_split:
            return int(config.per_class) * int(config.num_classes)
        return int(split_size(config.records_dir, config.dataset, split))
    ds = input_fn(config, split, training=False, batch_size=1024, repeat=False)
    if ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"input_fn returned an endless dataset for split {split!r} with repeat=False; set "
            "TrainConfig.num_train_examples or make the input_fn honour repeat"
        )
    count = ds.reduce(np.int64(0), lambda n, batch: n + tf.cast(tf.shape(batch[1])[0], tf.int64))
    return int(count)


# ---------------------------------------------------------------------------------------------
# Pieces of the step.


def evaluation_steps(config: TrainConfig, total: int) -> list[int]:
    """The steps a run evaluates at: every `eval_every`, the doubling steps of `eval_log_spaced`
    (from max(1, total // 400): 50, 100, 200, ... of 20,000), and the last step."""
    if not config.eval_split:
        return []
    steps = {total}
    if config.eval_every:
        steps.update(range(config.eval_every, total + 1, config.eval_every))
    if config.eval_log_spaced:
        step = max(1, total // 400)
        while step < total:
            steps.add(step)
            step *= 2
    return sorted(steps)


def is_decayed(variable) -> bool:
    """Weight decay applies to convolution and dense kernels (incl. depthwise / pointwise)."""
    return variable.path.rsplit("/", 1)[-1].endswith("kernel")


def per_example_loss(
    labels, outputs, *, num_classes, multi_label, label_smoothing, aux_loss_weight
) -> tf.Tensor:
    """Cross-entropy per example [B] (+ aux_loss_weight × the aux head's, when present).

    Single-label: softmax cross-entropy with label smoothing. Multi-label (VOC): sigmoid
    cross-entropy summed over classes, targets smoothed towards 1/2.
    """

    def loss(logits):
        logits = tf.cast(logits, tf.float32)
        if multi_label:
            targets = tf.cast(labels, tf.float32)
            if label_smoothing:
                targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
            return tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1
            )
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        return keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=label_smoothing
        )

    total = loss(outputs["logits"])
    if "aux_logits" in outputs and aux_loss_weight:
        total = total + aux_loss_weight * loss(outputs["aux_logits"])
    return total


def make_optimizer(config: TrainConfig, schedule) -> keras.optimizers.Optimizer:
    """Keras 3 optimizers only (tf-models-official's Keras 2 optimizers do not run on Keras 3);
    wrapped in dynamic loss scaling under `mixed_float16`."""
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(
            learning_rate=schedule,
            rho=config.rmsprop_rho,
            momentum=config.momentum,
            epsilon=config.rmsprop_epsilon,
        )
    else:
        optimizer = keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=config.momentum,
            nesterov=config.optimizer == "sgd_nesterov",
        )
    if precision.needs_loss_scaling(config.mixed_precision):
        return precision.LossScaleOptimizer(optimizer)
    return optimizer


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def split_global_batch(strategy: tf.distribute.Strategy, images, labels):
    """A global batch → per-replica values: replica i gets the i-th consecutive slice."""

    def value_fn(context):
        size = tf.shape(images)[0] // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * size
        return images[start : start + size], labels[start : start + size]

    return strategy.experimental_distribute_values_from_function(value_fn)


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    step: int
    history: list[dict]
    final_metric: float | None
    examples_per_sec: float | None
    resumed_from: int | None
    train_loss: float | None
    # Mean training loss of each stretch of steps run in this call: {"step", "loss"}.
    train_losses: list[dict] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------


class Trainer:
    """Builds the network, optimizer, EMA, input and checkpoint of one run; `train()` runs it.

    Args:
      config: the run.
      model_dir: where the run lives (created; an existing one is resumed).
      strategy: a tf.distribute strategy; None = `distribute.make_strategy(config.tpu)`.
      model_builder: config → keras.Model with dict outputs "logits", "features" (and
        "aux_logits"); None = the registry (`transfer_tf.models.build_model`).
      input_fn: (config, split, *, training, batch_size, repeat) → tf.data.Dataset of
        (images, labels) with `batch_size` = the global batch; None = `transfer_tf.data`.
    """

    def __init__(
        self,
        config: TrainConfig,
        model_dir: str,
        *,
        strategy: tf.distribute.Strategy | None = None,
        model_builder: ModelBuilder | None = None,
        input_fn: InputFn | None = None,
    ):
        self.strategy = strategy or distribute.make_strategy(config.tpu)
        self.model_builder = model_builder or default_model_builder
        self.input_fn = input_fn or default_input_fn
        self.model_dir = model_dir
        self.run_dir = RunDir(model_dir)
        self.chief = distribute.is_chief(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.single_worker = distribute.num_workers(self.strategy) == 1
        if config.batch_size % self.num_replicas:
            raise ValueError(
                f"--batch_size={config.batch_size} is not divisible by the {self.num_replicas} "
                "replicas in sync; use a multiple of it"
            )
        if config.num_train_examples is None:
            config = config.replace(num_train_examples=count_examples(config, self.input_fn))
        self.config = config
        check_resumable(config, model_dir)
        if self.chief:
            save_config(config, model_dir)

        self.steps_per_epoch = schedules.steps_per_epoch(
            config.num_train_examples, config.batch_size
        )
        warmup = schedules.epochs_to_steps(
            config.warmup_epochs, config.num_train_examples, config.batch_size
        )
        decay = max(
            1,
            schedules.epochs_to_steps(
                config.decay_epochs, config.num_train_examples, config.batch_size
            ),
        )
        self.schedule = schedules.learning_rate_schedule(
            config.lr_schedule,
            config.peak_learning_rate,
            total_steps=config.train_steps,
            warmup_steps=warmup,
            decay_steps=decay,
            decay_rate=config.decay_rate,
        )
        self.label_smoothing = float((config.settings or {}).get("label_smoothing", 0.0))

        with self.strategy.scope():
            with precision.dtype_policy(config.mixed_precision):
                self.model = self.model_builder(config)
            self.optimizer = make_optimizer(config, self.schedule)
            # Keras 3 optimizers create their slots lazily; under tf.distribute that must happen
            # in the strategy's scope, outside tf.function.
            self.optimizer.build(self.model.trainable_variables)
            self.ema = (
                ExponentialMovingAverage(self.model, config.ema_decay) if config.ema_decay else None
            )
        self.loss_scaling = precision.needs_loss_scaling(config.mixed_precision)
        self.bn_momentum = self._set_bn_momentum()
        self.decayed = [v for v in self.model.trainable_variables if is_decayed(v)]
        self.replica_synced = [
            w for w in self.model.non_trainable_weights if keras.backend.is_float_dtype(w.dtype)
        ]

        dataset = self.input_fn(
            config, config.train_split, training=True, batch_size=config.batch_size, repeat=True
        )
        items = {"model": self.model, "optimizer": self.optimizer}
        if self.ema is not None:
            items["ema"] = self.ema
        # tf.distribute's distributed iterators cannot be checkpointed; on a single worker the loop
        # reads global batches from a plain (checkpointable) tf.data iterator and splits each one
        # into consecutive per-replica slices, which is what experimental_distribute_dataset does.
        self.checkpoints_input = bool(
            config.checkpoint_input
            and self.single_worker
            and not isinstance(self.strategy, tf.distribute.TPUStrategy)
        )
        if self.checkpoints_input:
            self.iterator = iter(dataset)
            items["train_iterator"] = self.iterator
        else:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = distribute.autoshard_policy(
                config.autoshard
            )
            distributed = self.strategy.experimental_distribute_dataset(
                dataset.with_options(options)
            )
            self.iterator = iter(distributed)
        self.checkpoint = tf.train.Checkpoint(**items)
        self.ckpt_dir = self.run_dir.ckpt
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            distribute.write_dir(self.ckpt_dir, self.strategy),
            max_to_keep=config.keep_checkpoints,
        )
        self.resumed_from = self._restore_or_initialise()
        self._train_steps = self._make_train_steps()
        self._predict = tf.function(
            lambda images: tf.cast(self.model(images, training=False)["logits"], tf.float32),
            reduce_retracing=True,
        )

    # -- set-up ---------------------------------------------------------------------------------

    def _set_bn_momentum(self) -> float | None:
        momentum = self.config.bn_momentum
        if momentum is None:
            return None
        if momentum == "auto":
            momentum = schedules.finetune_bn_momentum(self.steps_per_epoch)
        for layer in self.model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(momentum)
        return float(momentum)

    def _restore_or_initialise(self) -> int | None:
        latest = tf.train.latest_checkpoint(self.ckpt_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            step = self.step
            logging.info("restored %s at step %d", latest, step)
            return step
        if self.config.init == "model_dir":
            copied = init_from_model_dir(self.model, self.config.init_model_dir)
            logging.info("initialised %d weights from %s", copied, self.config.init_model_dir)
        if self.config.init == "saved_model":
            copied = init_from_saved_model(self.model, self.config.init_saved_model)
            logging.info("initialised %d weights from %s", copied, self.config.init_saved_model)
        if self.config.init != "random":
            zero_classifier(self.model)
        if self.ema is not None:
            for average, weight in zip(self.ema.averages, self.ema._weights(), strict=True):
                average.assign(weight.value.read_value())
        return None

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # -- the step -------------------------------------------------------------------------------

    def _gradients(self, images, labels):
        """(loss, gradients, correct predictions) of one replica's batch."""
        config = self.config
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            per_example = per_example_loss(
                labels,
                outputs,
                num_classes=config.num_classes,
                multi_label=config.multi_label,
                label_smoothing=self.label_smoothing,
                aux_loss_weight=config.aux_loss_weight,
            )
            data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            regularization = tf.constant(0.0)
            if config.weight_decay and self.decayed:
                regularization += config.weight_decay * tf.add_n(
                    [tf.nn.l2_loss(tf.cast(v.value, tf.float32)) for v in self.decayed]
                )
            if self.model.losses:
                regularization += tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])
            loss = data_loss + tf.nn.scale_regularization_loss(regularization)
            # mixed_float16: the optimizer divides the gradients by the same scale again.
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        if config.multi_label:
            correct = tf.constant(0.0)
        else:
            predicted = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(
                tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32)
            )
        return loss, grads, correct

    def _update(self, grads):
        """The optimizer step (its all-reduce of the gradients), then the BN statistics' mean."""
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        if self.replica_synced and self.num_replicas > 1:
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [w.value.read_value() for w in self.replica_synced]
            )
            for w, mean in zip(self.replica_synced, means, strict=True):
                w.value.assign(mean)

    def _replica_step(self, images, labels):
        loss, grads, correct = self._gradients(images, labels)
        self._update(grads)
        return loss, correct

    def _make_train_steps(self):
        strategy = self.strategy
        ema = self.ema
        optimizer = self.optimizer
        host_batches = self.checkpoints_input and self.num_replicas > 1
        # XLA compiles what runs on the device; the tf.data iterator and the loop stay outside.
        # With several replicas the update (its cross-replica all-reduces) stays outside too:
        # inside XLA, replica 1's compiled step reads its variables from replica 0's device
        # (seen on logical CPU devices).
        replica_step = self._replica_step
        if self.config.jit_compile and self.num_replicas == 1:
            replica_step = tf.function(self._replica_step, jit_compile=True)
        elif self.config.jit_compile:
            gradients = tf.function(self._gradients, jit_compile=True)

            def replica_step(images, labels):
                loss, grads, correct = gradients(images, labels)
                self._update(grads)
                return loss, correct

        @tf.function
        def train_steps(iterator, num_steps):
            loss_sum = tf.constant(0.0)
            correct = tf.constant(0.0)
            for _ in tf.range(num_steps):
                images, labels = next(iterator)
                if host_batches:
                    images, labels = split_global_batch(strategy, images, labels)
                loss, right = strategy.run(replica_step, args=(images, labels))
                loss_sum += strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
                correct += strategy.reduce(tf.distribute.ReduceOp.SUM, right, axis=None)
                if ema is not None:
                    ema.update(optimizer.iterations, strategy)
            return loss_sum, correct

        return train_steps

    # -- evaluation -----------------------------------------------------------------------------

    def predict(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) on `split` with the evaluation weights (the EMA averages if kept).

        Scores are softmax probabilities (sigmoid for multi-label). Every worker evaluates the
        whole split on its own device; the chief reports.
        """
        dataset = self.input_fn(
            self.config, split, training=False, batch_size=self.eval_batch_size, repeat=False
        )
        labels, logits = [], []
        with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
            for images, y in dataset:
                logits.append(self._predict(images).numpy())
                labels.append(y.numpy())
        if not logits:
            raise ValueError(f"split {split!r} of dataset {self.config.dataset!r} is empty")
        logits = np.concatenate(logits).astype(np.float64)
        if self.config.multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        return np.concatenate(labels), scores

    def evaluate(self, split: str) -> float:
        from transfer_tf.metrics import METRICS

        if self.config.metric not in METRICS:
            raise ValueError(f"unknown metric {self.config.metric!r}; known: {sorted(METRICS)}")
        labels, scores = self.predict(split)
        return float(METRICS[self.config.metric](labels, scores))

    @property
    def eval_batch_size(self) -> int:
        return int(self.config.eval_batch_size or self.config.batch_size)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _history_row(self, step: int, metric: float) -> dict:
        return {"step": step, "epoch": step / self.steps_per_epoch, "eval_metric": metric}

    def _load_history(self, up_to_step: int) -> list[dict]:
        return self.run_dir.read_history(up_to_step)

    def _write_history(self, history: list[dict]) -> None:
        if not self.chief:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["step", "epoch", "eval_split", "eval_metric"])
        writer.writeheader()
        writer.writerows({**row, "eval_split": self.config.eval_split} for row in history)
        atomic_write_text(self.run_dir.history, buffer.getvalue())

    def save(self) -> str:
        path = self.manager.save(checkpoint_number=self.step)
        if not self.chief:
            # Non-chief workers take part in the collective save but keep nothing.
            shutil.rmtree(self.manager.directory, ignore_errors=True)
        return path

    def _summary_writer(self):
        if self.chief:
            return tf.summary.create_file_writer(self.run_dir.tb)
        return tf.summary.create_noop_writer()

    def _write_hparams(self, writer) -> None:
        from tensorboard.plugins.hparams import api as hp

        hparams = {}
        for key, value in self.config.to_dict().items():
            if key == "settings":
                for name, v in (value or {}).items():
                    hparams[f"settings.{name}"] = v
            elif isinstance(value, bool | int | float | str):
                hparams[key] = value
        hparams["num_replicas"] = self.num_replicas
        with writer.as_default():
            hp.hparams(hparams, trial_id=os.path.basename(os.path.abspath(self.model_dir)))

    # -- the run --------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        config = self.config
        total = config.train_steps
        step = self.step
        history = self._load_history(step)
        writer = self._summary_writer()
        if step == 0:
            self._write_hparams(writer)
        logging.info(
            "training %s on %s/%s: %d steps of %d images over %d replica(s), lr %.4g (peak), "
            "%d steps/epoch, BN momentum %s, %s",
            config.model,
            config.dataset,
            config.train_split,
            total,
            config.batch_size,
            self.num_replicas,
            config.peak_learning_rate,
            self.steps_per_epoch,
            self.bn_momentum if self.bn_momentum is not None else "model default",
            f"resuming at step {step}" if step else "from the start",
        )
        boundaries = [config.log_every, config.checkpoint_every]
        evaluations = evaluation_steps(config, total)
        last_loss = None
        train_losses = []
        seen_examples, seen_seconds = 0, 0.0
        while step < total:
            target = min(
                [total]
                + [(step // b + 1) * b for b in boundaries]
                + [e for e in evaluations if e > step][:1]
            )
            num_steps = target - step
            start = time.time()
            loss_sum, correct = self._train_steps(self.iterator, tf.constant(num_steps))
            loss_sum, correct = float(loss_sum), float(correct)
            seconds = time.time() - start
            step = self.step
            if step != target:
                raise RuntimeError(f"optimizer step {step} after running to {target}: lost steps")
            if not math.isfinite(loss_sum):
                raise FloatingPointError(
                    f"loss is {loss_sum} at step {step} of {self.model_dir}; lower --learning_rate "
                    "or --weight_decay"
                )
            examples = num_steps * config.batch_size
            rate = examples / max(seconds, 1e-9)
            seen_examples += examples
            seen_seconds += seconds
            last_loss = loss_sum / num_steps
            train_losses.append({"step": step, "loss": last_loss})
            top1 = correct / examples
            lr = float(self.schedule(step))
            eta = (total - step) * seconds / num_steps
            with writer.as_default(step=step):
                tf.summary.scalar("train/loss", last_loss)
                if not config.multi_label:
                    tf.summary.scalar("train/top1", top1)
                tf.summary.scalar("train/learning_rate", lr)
                tf.summary.scalar("train/examples_per_sec", rate)
            if step % config.log_every == 0 or step == total:
                logging.info(
                    "step %d/%d  loss %.4f  top1 %.3f  lr %.4g  %.1f examples/s  ETA %s",
                    step,
                    total,
                    last_loss,
                    top1,
                    lr,
                    rate,
                    _format_eta(eta),
                )
            if step in evaluations:
                metric = self.evaluate(config.eval_split)
                history = [h for h in history if h["step"] != step] + [
                    self._history_row(step, metric)
                ]
                self._write_history(history)
                with writer.as_default(step=step):
                    tf.summary.scalar(f"eval/{config.metric}", metric)
                logging.info(
                    "step %d/%d  %s %s %.4f", step, total, config.eval_split, config.metric, metric
                )
            # After the evaluation, so a checkpoint never exists without its history row: a run
            # killed in between resumes before this step and evaluates it again.
            if step % config.checkpoint_every == 0 or step == total:
                self.save()
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(
            f"-{step}"
        ):
            self.save()
        final_metric = None
        if config.eval_split:
            done = [h for h in history if h["step"] == step]
            if done:
                final_metric = done[-1]["eval_metric"]
            else:
                final_metric = self.evaluate(config.eval_split)
                history.append(self._history_row(step, final_metric))
                self._write_history(history)
        writer.flush()
        return TrainResult(
            model_dir=self.model_dir,
            step=step,
            history=history,
            final_metric=final_metric,
            examples_per_sec=seen_examples / seen_seconds if seen_seconds else None,
            resumed_from=self.resumed_from,
            train_loss=last_loss,
            train_losses=train_losses,
        )


def train(config: TrainConfig, model_dir: str, **kwargs) -> TrainResult:
    """Runs (or resumes) `config` in `model_dir`; keyword arguments go to `Trainer`."""
    return Trainer(config, model_dir, **kwargs).train()
