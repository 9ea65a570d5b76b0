"""transfer-extract-features: penultimate features of a dataset from a fixed network.

  transfer-extract-features --saved_model runs/effnet_lite0/export \
      --records_dir data/records --dataset flowers102 --features_dir features/effnet_lite0/flowers102

Any SavedModel with an image -> features signature (e.g. a TF Hub feature-vector model):
  --saved_model=hub_model --signature=serving_default --output_key=feature_vector \
      --input_size=224 --scaling=unit
A Keras model file, a named layer's output:
  --keras_model=my_net.keras --feature_layer=avg_pool --scaling=none

--input_size and --scaling say what the model does not record: a transfer-export SavedModel takes
uint8 images of its own size and scales them inside (give neither); a model taking float images
needs --scaling (unit: [0, 1]; none: [0, 255]; or inception, torch, caffe, vgg,
efficientnet_lite); one taking any size needs --input_size. The dataset is a registry dataset or
one made with transfer-make-tfrecords --image_folder / --csv (found in --records_dir).

Writes <features_dir>/{train,val,test}.npz (features, labels, ids) and manifest.json.
"""

import sys

from absl import app, flags

from transfer_tf.bin import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory (e.g. from transfer-export).")
flags.DEFINE_string("keras_model", None, "Or: a Keras model file (.keras); needs --feature_layer.")
flags.DEFINE_string("feature_layer", None, "With --keras_model: the layer whose output is used.")
flags.DEFINE_string("records_dir", None, "Root of the TFRecords: <records_dir>/<dataset>/.")
flags.DEFINE_string("dataset", None, "Dataset name (folder under --records_dir).")
flags.DEFINE_string("features_dir", None, "Output directory for <split>.npz and manifest.json.")
flags.DEFINE_string("signature", "features", "SavedModel signature to call.")
flags.DEFINE_string(
    "output_key", None, "Output of the signature; default 'features' (or its only output)."
)
flags.DEFINE_integer(
    "input_size", None, "Image side, for a model that takes any size.", lower_bound=1
)
flags.DEFINE_string(
    "scaling", None, "How a float-input model expects pixels: unit, none or a preprocessing name."
)
flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to extract.")
flags.DEFINE_integer("batch_size", 64, "Images per call of the signature.", lower_bound=1)
flags.DEFINE_string(
    "model_label",
    None,
    "The source's model label in the manifest (and so in the results); default the model's "
    "file name.",
)
cli.define_renamed_flag("model", "model_label", "the label in the results")
for _name in ("records_dir", "dataset", "features_dir"):
    flags.mark_flag_as_required(_name)


def main(argv):
    del argv
    if bool(FLAGS.saved_model) == bool(FLAGS.keras_model):
        raise app.UsageError("pass exactly one of --saved_model or --keras_model")
    if FLAGS.feature_layer and not FLAGS.keras_model:
        raise app.UsageError("--feature_layer goes with --keras_model")
    from transfer_tf.protocols import features

    try:
        source = FLAGS.saved_model
        if FLAGS.keras_model:
            from transfer_tf.protocols import keras_source

            source = keras_source.load_keras_features(
                FLAGS.keras_model,
                FLAGS.feature_layer,
                scaling=FLAGS.scaling,
                input_size=FLAGS.input_size,
            )
        features.extract_features(
            source,
            FLAGS.records_dir,
            FLAGS.dataset,
            FLAGS.features_dir,
            signature=FLAGS.signature,
            output_key=FLAGS.output_key,
            input_size=FLAGS.input_size,
            scaling=FLAGS.scaling,
            splits=FLAGS.splits,
            batch_size=FLAGS.batch_size,
            model=FLAGS.model_label,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"transfer-extract-features: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    cli.run("transfer-extract-features", main)


if __name__ == "__main__":
    run()
