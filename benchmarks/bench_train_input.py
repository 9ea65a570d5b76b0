"""Training throughput with the TFRecord input pipeline vs synthetic in-memory data.

All runs use the same network, batch, optimizer and compiled training loop (`Trainer`); only the
input differs: the data layer's pipeline (read TFRecords, decode, Inception random-resized crop +
flip, scale, batch, prefetch) with `cache_decoded="off"` ("records") and `"on"` ("cached": after
the first epoch the records come from memory, PNGs decoded), or one pre-made batch of the same
shape repeated from memory ("synthetic"). The ratios records / synthetic and cached / synthetic
(goal >= 0.95) say how much the input pipeline slows training. Rounds alternate between the
three so that a machine shared with other jobs affects them alike; the medians of the rounds are
compared. The warm-up covers the cached input's first epoch (for the default data:
`--warmup_steps` x `--batch_size` >= the training split), which is timed on its own and printed.

    python benchmarks/bench_train_input.py                     # Fashion-MNIST, MobileNet v1 @32
    python benchmarks/bench_train_input.py --records_dir=runs/records --dataset=cifar10 \\
        --model=resnet_50 --input_size=224 --batch_size=128
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("records_dir", None, "TFRecords root; default: Fashion-MNIST in a temp dir.")
flags.DEFINE_string("dataset", "fashion_mnist", "Registry dataset (train split).")
flags.DEFINE_integer("max_per_class", 500, "Examples per class when writing the default records.")
flags.DEFINE_string("model", "mobilenet_v1", "Registry model.")
flags.DEFINE_integer("input_size", 32, "Input size.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("warmup_steps", 80, "Steps before timing (tracing, pipeline fill, cache).")
flags.DEFINE_integer("steps", 60, "Timed steps per round.")
flags.DEFINE_integer("rounds", 5, "Alternating rounds of each input.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from transfer_tf.data import split_size, write_tfrecords
    from transfer_tf.training import TrainConfig, Trainer
    from transfer_tf.training.builders import default_input_fn
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

    inputs = {
        "records": functools.partial(default_input_fn, cache_decoded="off"),
        "cached": functools.partial(default_input_fn, cache_decoded="on"),
        "synthetic": synthetic_input_fn,
    }
    trainers = {
        name: Trainer(config, os.path.join(scratch, f"{name}_run"), input_fn=input_fn)
        for name, input_fn in inputs.items()
    }

    def steps_per_sec(trainer, steps):
        start = time.perf_counter()
        loss, _ = trainer._train_steps(trainer.iterator, tf.constant(steps))
        float(loss)  # wait for the steps to finish
        return steps / (time.perf_counter() - start)

    warmup = {name: steps_per_sec(t, FLAGS.warmup_steps) for name, t in trainers.items()}
    rates = {name: [] for name in trainers}
    for _ in range(FLAGS.rounds):
        for name, trainer in trainers.items():
            rates[name].append(steps_per_sec(trainer, FLAGS.steps))
    rate = {name: statistics.median(r) for name, r in rates.items()}
    report = {
        "model": FLAGS.model,
        "input_size": FLAGS.input_size,
        "batch_size": FLAGS.batch_size,
        "dataset": FLAGS.dataset,
        "num_train_examples": config.num_train_examples,
        "timed_steps_each": FLAGS.steps * FLAGS.rounds,
        "warmup_steps_per_sec (first epoch, tracing)": {k: round(v, 3) for k, v in warmup.items()},
        "steps_per_sec_rounds": {k: [round(x, 3) for x in v] for k, v in rates.items()},
        "steps_per_sec_median": {k: round(v, 3) for k, v in rate.items()},
        "ratio_records_over_synthetic": round(rate["records"] / rate["synthetic"], 3),
        "ratio_cached_over_synthetic": round(rate["cached"] / rate["synthetic"], 3),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
