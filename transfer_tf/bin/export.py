"""transfer-export: a SavedModel with `serving_default` and `features` signatures.

    transfer-export --model_dir=/runs/inception_v3_fair --export_dir=/exports/inception_v3_fair
    transfer-export --model=efficientnet_lite0 --weights=imagenet --export_dir=/exports/lite0
    transfer-export --model=inception_v3 --checkpoint=/ckpts/inception_v3.ckpt --export_dir=/exports/v3

--checkpoint takes a published checkpoint: a TF-slim checkpoint prefix (the tarball's
`model.ckpt`, with its .index / .data files) or a Keras Applications `.h5` weights file,
recognised by content; docs/CHECKPOINTS.md lists which file fits which --model. The SavedModel
then scales its input as that checkpoint was trained (e.g. RGB mean subtraction for TF-slim's
ResNet v1 and VGG) and records it in assets.extra/transfer_tf_export.json.

Clients send uint8 RGB images [N, S, S, 3] at the model's size S (already resized / cropped);
the ImageNet preprocessing of the model is inside the graph. From a --model_dir the EMA weights
are exported (unless --noema).
"""

from __future__ import annotations

import sys

from absl import app, flags

from transfer_tf.bin import cli

flags.DEFINE_string("model_dir", None, "A training run (transfer-pretrain / -finetune / -scratch).")
flags.DEFINE_string("model", None, "Or: a registry model, exported as built with --weights.")
flags.DEFINE_string("weights", "imagenet", "With --model: 'imagenet' (offline weights) or ''.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "With --model: a published checkpoint (TF-slim prefix or Keras Applications .h5) to load "
    "instead of --weights.",
)
flags.DEFINE_integer("input_size", None, "With --model: input size (default: its ImageNet size).")
flags.DEFINE_integer("num_classes", 1000, "With --model: classifier width.")
flags.DEFINE_boolean("ema", True, "From --model_dir: export the EMA averages where kept.")
flags.DEFINE_string("export_dir", None, "Output folder for the SavedModel (must not hold one).")
flags.DEFINE_boolean(
    "replace",
    False,
    "If --export_dir holds an export: keep it when it is the same (same weights and details), "
    "else move it aside to <export_dir>.superseded-<time>/ with a note and write the new one.",
)
flags.mark_flag_as_required("export_dir")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.model_dir) == bool(FLAGS.model):
        raise app.UsageError("pass exactly one of --model_dir (a training run) or --model")
    if FLAGS.checkpoint and FLAGS.model_dir:
        raise app.UsageError("--checkpoint goes with --model, not with --model_dir")
    from transfer_tf.models.checkpoints import CheckpointError
    from transfer_tf.training.export import export_model_dir, export_registry_model

    try:
        if FLAGS.model_dir:
            path = export_model_dir(
                FLAGS.model_dir, FLAGS.export_dir, use_ema=FLAGS.ema, replace=FLAGS.replace
            )
        else:
            path = export_registry_model(
                FLAGS.model,
                FLAGS.export_dir,
                weights=FLAGS.checkpoint or FLAGS.weights or None,
                input_size=FLAGS.input_size,
                num_classes=FLAGS.num_classes,
                replace=FLAGS.replace,
            )
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as error:
        # One line naming the file and the fix; no usage text, no traceback.
        print(f"transfer-export: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"exported {path} (signatures: serving_default, features, serving_bytes)", flush=True)


def run():
    cli.run("transfer-export", main)


if __name__ == "__main__":
    run()
