"""transfer-make-tfrecords: datasets of the registry -> sharded TFRecords + JSON manifests.

    transfer-make-tfrecords --dataset=sklearn_digits --records_dir=runs/records
    transfer-make-tfrecords --dataset=dtd --data_dir=~/tensorflow_datasets --download
    transfer-make-tfrecords --dataset=fgvc_aircraft --manual_dir=/data/fgvc-aircraft-2013b
    transfer-make-tfrecords --list

Never downloads unless --download is given. A full conversion checks the example counts
against the registry (Table 1); --max_per_class writes a quick subset (recorded, not checked).
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("dataset", None, "Registry dataset name(s) (transfer_tf.data.DATASETS).")
flags.DEFINE_string("records_dir", None, "Output root: <records_dir>/<dataset>/.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir (tfds-backed datasets).")
flags.DEFINE_string("manual_dir", None, "Unpacked manual download (see --list for layouts).")
flags.DEFINE_bool("download", False, "Let tensorflow-datasets download and prepare the data.")
flags.DEFINE_integer("num_shards", None, "Shards per split (default: one per 1,024 examples).")
flags.DEFINE_integer("max_per_class", None, "Quick subset: at most this many per class per split.")
flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to write.")
flags.DEFINE_bool("allow_missing", False, "Manual sets: convert without missing image files.")
flags.DEFINE_integer("seed", 0, "Shard-order shuffle and max_per_class subset seed.")
flags.DEFINE_bool("verify", False, "After writing, decode every image of every split.")
flags.DEFINE_bool("list", False, "Print the registry (sources, splits, sizes, layouts) and exit.")


def describe_registry() -> str:
    from transfer_tf.data import DATASETS

    lines = []
    for spec in DATASETS.values():
        lines.append(
            f"{spec.name:22s} {spec.title} [{spec.group}] classes={spec.num_classes} "
            f"train+val={spec.train_size} test={spec.test_size} metric={spec.metric}\n"
            f"    source: {spec.source.describe()}"
        )
        for split in ("train", "val", "test"):
            lines.append(f"    {split}: {spec.describe_split(split)}")
        layout = getattr(spec.source, "layout", None)
        if layout:
            lines.append("    layout: " + layout.replace("\n", "\n      "))
        if spec.notes:
            lines.append(f"    notes: {spec.notes}")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.list:
        print(describe_registry())
        return 0
    if not FLAGS.dataset or not FLAGS.records_dir:
        raise app.UsageError("--dataset and --records_dir are required (or --list)")
    from transfer_tf.data import write_tfrecords
    from transfer_tf.data.verify import verify_records

    for name in FLAGS.dataset:
        manifests = write_tfrecords(
            name,
            FLAGS.records_dir,
            data_dir=FLAGS.data_dir,
            manual_dir=FLAGS.manual_dir,
            download=FLAGS.download,
            num_shards=FLAGS.num_shards,
            max_per_class=FLAGS.max_per_class,
            splits=FLAGS.splits,
            allow_missing=FLAGS.allow_missing,
            seed=FLAGS.seed,
        )
        for split, m in manifests.items():
            print(
                f"{name}/{split}: {m['num_examples']} examples in {len(m['shards'])} shard(s); "
                f"count check: {m['count_check']['status']}"
                + (f" ({m['count_check']['reason']})" if m["count_check"].get("reason") else "")
            )
            if FLAGS.verify:
                n = verify_records(FLAGS.records_dir, name, split)
                print(f"{name}/{split}: verified {n} images decode")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
