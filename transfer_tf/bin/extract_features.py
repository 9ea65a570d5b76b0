"""transfer-extract-features: penultimate features of a dataset from an exported SavedModel.

  transfer-extract-features --saved_model runs/effnet_lite0/export \
      --records_dir data/records --dataset flowers102 --features_dir features/effnet_lite0/flowers102

Writes <features_dir>/{train,val,test}.npz (features, labels, ids) and manifest.json.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory (e.g. from transfer-export).")
flags.DEFINE_string("records_dir", None, "Root of the TFRecords: <records_dir>/<dataset>/.")
flags.DEFINE_string("dataset", None, "Dataset name (folder under --records_dir).")
flags.DEFINE_string("features_dir", None, "Output directory for <split>.npz and manifest.json.")
flags.DEFINE_string("signature", "features", "SavedModel signature to call.")
flags.DEFINE_string(
    "output_key", None, "Output of the signature; default 'features' (or its only output)."
)
flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to extract.")
flags.DEFINE_integer("batch_size", 64, "Images per call of the signature.")
flags.DEFINE_string(
    "model", None, "Label of the source model in the manifest; default the SavedModel folder name."
)
for _name in ("saved_model", "records_dir", "dataset", "features_dir"):
    flags.mark_flag_as_required(_name)


def main(argv):
    del argv
    from transfer_tf.protocols import features

    try:
        features.extract_features(
            FLAGS.saved_model,
            FLAGS.records_dir,
            FLAGS.dataset,
            FLAGS.features_dir,
            signature=FLAGS.signature,
            output_key=FLAGS.output_key,
            splits=FLAGS.splits,
            batch_size=FLAGS.batch_size,
            model=FLAGS.model,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"transfer-extract-features: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
