"""Training throughput with the TFRecord input pipeline vs synthetic in-memory data.

Both runs use the same network, batch, optimizer and compiled training loop (`Trainer`); only the
input differs: the data layer's pipeline (read TFRecords, decode, Inception random-resized crop +
flip, scale, batch, prefetch) or one pre-made batch of the same shape repeated from memory. The
ratio records / synthetic (goal >= 0.95) says how much the input pipeline slows training.
Rounds alternate between the two so that a machine shared with other jobs affects both alike.

    python benchmarks/bench_train_input.py                     # Fashion-MNIST, MobileNet v1 @32
    python benchmarks/bench_train_input.py --records_dir=runs/records --dataset=cifar10 \\
        --model=resnet_50 --input_size=224 --batch_size=128
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("records_dir", None, "TFRecords root; default: Fashion-MNIST in a temp dir.")
flags.DEFINE_string("dataset", "fashion_mnist", "Registry dataset (train split).")
flags.DEFINE_integer("max_per_class", 500, "Examples per class when writing the default records.")
flags.DEFINE_string("model", "mobilenet_v1", "Registry model.")
flags.DEFINE_integer("input_size", 32, "Input size.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("warmup_steps", 20, "Steps before timing (tracing, pipeline fill).")
flags.DEFINE_integer("steps", 60, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of each input.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from transfer_tf.data import split_size, write_tfrecords
    from transfer_tf.training import TrainConfig, Trainer
    from transfer_tf.training.config import dataset_fields

    scratch = tempfile.mkdtemp(prefix="bench_train_input_")
    records_dir = FLAGS.records_dir
    if records_dir is None:
        records_dir = os.path.join(scratch, "records")
        write_tfrecords(
            FLAGS.dataset, records_dir, max_per_class=FLAGS.max_per_class, splits=("train",)
        )
    config = TrainConfig(
        model=FLAGS.model,
        dataset=FLAGS.dataset,
        records_dir=records_dir,
        input_size=FLAGS.input_size,
        batch_size=FLAGS.batch_size,
        train_steps=10**9,
        learning_rate=0.016,
        ema_decay=0.9999,
        weight_decay=4e-5,
        eval_split=None,
        checkpoint_input=False,
        num_train_examples=split_size(records_dir, FLAGS.dataset, "train"),
        **dataset_fields(FLAGS.dataset),
    )

    def synthetic_input_fn(cfg, split, *, training, batch_size, repeat):
        rng = np.random.default_rng(0)
        size = cfg.input_size
        images = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32))
        labels = tf.constant(rng.integers(0, cfg.num_classes, batch_size).astype(np.int32))
        return tf.data.Dataset.from_tensors((images, labels)).repeat()

    trainers = {
        "records": Trainer(config, os.path.join(scratch, "records_run")),
        "synthetic": Trainer(
            config, os.path.join(scratch, "synthetic_run"), input_fn=synthetic_input_fn
        ),
    }
    for trainer in trainers.values():
        trainer._train_steps(trainer.iterator, tf.constant(FLAGS.warmup_steps))
    seconds = {name: 0.0 for name in trainers}
    for _ in range(FLAGS.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            loss, _ = trainer._train_steps(trainer.iterator, tf.constant(FLAGS.steps))
            float(loss)  # wait for the steps to finish
            seconds[name] += time.perf_counter() - start
    steps = FLAGS.steps * FLAGS.rounds
    rate = {name: steps / s for name, s in seconds.items()}
    report = {
        "model": FLAGS.model,
        "input_size": FLAGS.input_size,
        "batch_size": FLAGS.batch_size,
        "dataset": FLAGS.dataset,
        "timed_steps_each": steps,
        "steps_per_sec_records": round(rate["records"], 3),
        "steps_per_sec_synthetic": round(rate["synthetic"], 3),
        "ratio_records_over_synthetic": round(rate["records"] / rate["synthetic"], 3),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
