"""transfer-pretrain: Inception-style training of a registry model on a registry dataset.

    transfer-pretrain --flagfile=flags/pretrain/inception_v3_fair.cfg \\
        --records_dir=/data/records --model_dir=/runs/inception_v3_fair

Rerunning the same command resumes from the last checkpoint in --model_dir. Under TF_CONFIG every
worker runs the same command (MultiWorkerMirroredStrategy); --tpu uses a TPU.
"""

from __future__ import annotations

import functools
import os

from absl import app, flags, logging

from transfer_tf.bin import cli, training_flags
from transfer_tf.training.config import dataset_fields

training_flags.define_training_flags()
training_flags.define_input_cache_flag()
flags.DEFINE_string("model_dir", None, "Where the run lives (config.json, ckpt/, tb/).")
flags.DEFINE_string("train_split", "train", "Training split (ImageNet: train).")
flags.DEFINE_string("eval_split", "val", "Evaluation split; empty = no evaluation.")
flags.mark_flags_as_required(["model", "dataset", "records_dir", "model_dir"])

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Logical CPU devices must exist before TensorFlow initialises.
    from transfer_tf.training import distribute

    distribute.configure_cpu_devices(FLAGS.cpu_devices)
    strategy = distribute.make_strategy(FLAGS.tpu)

    import tensorflow as tf

    from transfer_tf.data.pipeline import explain_read_error
    from transfer_tf.training import TrainConfig, Trainer
    from transfer_tf.training.builders import default_input_fn
    from transfer_tf.training.tensorboard import start_tensorboard, stop_tensorboard

    try:
        config = TrainConfig(
            model=FLAGS.model,
            dataset=FLAGS.dataset,
            records_dir=FLAGS.records_dir,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split or None,
            **dataset_fields(FLAGS.dataset, FLAGS.records_dir),
            **training_flags.config_kwargs_from_flags(FLAGS),
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    board = None
    if FLAGS.tensorboard_port and distribute.is_chief(strategy):
        tb_dir = os.path.join(FLAGS.model_dir, "tb")
        os.makedirs(tb_dir, exist_ok=True)
        board = start_tensorboard(tb_dir, FLAGS.tensorboard_port)
        logging.info("TensorBoard: http://127.0.0.1:%d/", FLAGS.tensorboard_port)
    try:
        input_fn = functools.partial(default_input_fn, cache_decoded=FLAGS.cache_decoded)
        result = Trainer(config, FLAGS.model_dir, strategy=strategy, input_fn=input_fn).train()
    except tf.errors.OpError as e:  # a damaged record or image: name its shard and record
        raise (
            explain_read_error(e, FLAGS.records_dir, FLAGS.dataset, FLAGS.train_split) or e
        ) from None
    finally:
        stop_tensorboard(board)
    metric = "-" if result.final_metric is None else f"{result.final_metric:.4f}"
    print(
        f"done: {FLAGS.model_dir} step {result.step} {config.eval_split or ''} "
        f"{config.metric} {metric}",
        flush=True,
    )


def run():
    cli.run("transfer-pretrain", main)


if __name__ == "__main__":
    run()
