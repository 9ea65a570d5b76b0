"""transfer-export: a SavedModel with `serving_default` and `features` signatures.

    transfer-export --model_dir=/runs/inception_v3_fair --export_dir=/exports/inception_v3_fair
    transfer-export --model=efficientnet_lite0 --weights=imagenet --export_dir=/exports/lite0

Clients send uint8 RGB images [N, S, S, 3] at the model's size S (already resized / cropped);
the ImageNet preprocessing of the model is inside the graph. From a --model_dir the EMA weights
are exported (unless --noema).
"""

from __future__ import annotations

from absl import app, flags

flags.DEFINE_string("model_dir", None, "A training run (transfer-pretrain / -finetune / -scratch).")
flags.DEFINE_string("model", None, "Or: a registry model, exported as built with --weights.")
flags.DEFINE_string("weights", "imagenet", "With --model: 'imagenet' (offline weights) or ''.")
flags.DEFINE_integer("input_size", None, "With --model: input size (default: its ImageNet size).")
flags.DEFINE_integer("num_classes", 1000, "With --model: classifier width.")
flags.DEFINE_boolean("ema", True, "From --model_dir: export the EMA averages where kept.")
flags.DEFINE_string("export_dir", None, "Output folder for the SavedModel (must not hold one).")
flags.mark_flag_as_required("export_dir")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.model_dir) == bool(FLAGS.model):
        raise app.UsageError("pass exactly one of --model_dir (a training run) or --model")
    from transfer_tf.training.export import export_model_dir, export_registry_model

    if FLAGS.model_dir:
        path = export_model_dir(FLAGS.model_dir, FLAGS.export_dir, use_ema=FLAGS.ema)
    else:
        path = export_registry_model(
            FLAGS.model,
            FLAGS.export_dir,
            weights=FLAGS.weights or None,
            input_size=FLAGS.input_size,
            num_classes=FLAGS.num_classes,
        )
    print(f"exported {path} (signatures: serving_default, features)", flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
