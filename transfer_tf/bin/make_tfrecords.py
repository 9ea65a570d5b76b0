"""transfer-make-tfrecords: datasets -> sharded TFRecords + JSON manifests.

    transfer-make-tfrecords --dataset=sklearn_digits --records_dir=runs/records
    transfer-make-tfrecords --dataset=dtd --data_dir=~/tensorflow_datasets --download
    transfer-make-tfrecords --dataset=fgvc_aircraft --manual_dir=/data/fgvc-aircraft-2013b
    transfer-make-tfrecords --list

Your own data, under a name of your choice (not a registry name):

    transfer-make-tfrecords --dataset=my_photos --image_folder=photos --records_dir=runs/records
    transfer-make-tfrecords --dataset=my_tags --csv=tags.csv --records_dir=runs/records

`photos/<class>/<image>` (val and test drawn from it: --val_fraction, --test_fraction, --seed)
or `photos/{train,val,test}/<class>/<image>`; a CSV with `path,label` or `path,labels` (classes
separated by "|": multi-label, scored with map11) and an optional `split` column. The dataset's
spec goes beside its records (`<records_dir>/<name>/dataset_spec.json`); later binaries find the
name there. Rerun without --image_folder / --csv, it checks the records are there (as
transfer-study's records step does).

Never downloads unless --download is given. A full conversion checks the example counts
against the registry (Table 1); --max_per_class writes a quick subset (recorded, not checked).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from absl import app, flags

from transfer_tf.bin import cli

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "dataset", None, "Registry dataset name(s), or the name of your own (--image_folder / --csv)."
)
flags.DEFINE_string("records_dir", None, "Output root: <records_dir>/<dataset>/.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir (tfds-backed datasets).")
flags.DEFINE_string("manual_dir", None, "Unpacked manual download (see --list for layouts).")
flags.DEFINE_bool("download", False, "Let tensorflow-datasets download and prepare the data.")
flags.DEFINE_integer(
    "num_shards", None, "Shards per split (default: one per 1,024 examples).", lower_bound=1
)
flags.DEFINE_integer(
    "max_per_class", None, "Quick subset: at most this many per class per split.", lower_bound=1
)
flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to write.")
flags.DEFINE_bool("allow_missing", False, "Manual sets: convert without missing image files.")
flags.DEFINE_integer(
    "seed", 0, "Shard-order shuffle and max_per_class subset seed (own data: also the holdouts')."
)
flags.DEFINE_bool("verify", False, "After writing, decode every image of every split.")
flags.DEFINE_bool(
    "list",
    False,
    "Print the registry (sources, splits, sizes, layouts), and your datasets in --records_dir.",
)
# Your own data.
flags.DEFINE_string("image_folder", None, "ROOT/<class>/<image> or ROOT/{train,val,test}/<class>/.")
flags.DEFINE_string("csv", None, "CSV with path,label (or labels: a|b) and optional split columns.")
flags.DEFINE_enum(
    "metric",
    None,
    ["top1", "mean_per_class", "map11"],
    "Own data: the metric (default top1; map11 for multi-label).",
)
flags.DEFINE_float("val_fraction", 0.2, "Own data: val holdout of each class (no val split given).")
flags.DEFINE_float("test_fraction", 0.2, "Own data: test holdout per class (no test split given).")
flags.DEFINE_bool("mirror_invariant", True, "Own data: training may flip images horizontally.")
flags.DEFINE_bool("skip_unreadable", False, "Own data: leave out (and list) undecodable files.")
flags.DEFINE_string("title", None, "Own data: a title for reports (default the name).")

_OWN_ONLY = (
    "metric",
    "val_fraction",
    "test_fraction",
    "mirror_invariant",
    "skip_unreadable",
    "title",
)
_REGISTRY_ONLY = ("data_dir", "manual_dir", "download", "splits", "allow_missing")


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


def _print_manifests(name: str, manifests: dict) -> None:
    for split, m in manifests.items():
        print(
            f"{name}/{split}: {m['num_examples']} examples in {len(m['shards'])} shard(s); "
            f"count check: {m['count_check']['status']}"
            + (f" ({m['count_check']['reason']})" if m["count_check"].get("reason") else "")
        )
        if FLAGS.verify:
            from transfer_tf.data.verify import verify_records

            n = verify_records(FLAGS.records_dir, name, split)
            print(f"{name}/{split}: verified {n} images decode")


def make_own(name: str) -> None:
    """--image_folder / --csv: the user's dataset `name`."""
    from transfer_tf.data import csv_source, image_folder, read_manifest, user_spec

    given = [f for f in _REGISTRY_ONLY if FLAGS[f].present]
    if given:
        raise app.UsageError(f"--{given[0]} is for registry datasets, not --image_folder / --csv")
    if FLAGS.image_folder:
        listing = image_folder.scan_image_folder(FLAGS.image_folder)
    else:
        listing = csv_source.read_csv(FLAGS.csv)
    content = user_spec.make_user_dataset(
        name,
        FLAGS.records_dir,
        listing,
        metric=FLAGS.metric,
        val_fraction=FLAGS.val_fraction,
        test_fraction=FLAGS.test_fraction,
        seed=FLAGS.seed,
        mirror_invariant=FLAGS.mirror_invariant,
        skip_unreadable=FLAGS.skip_unreadable,
        num_shards=FLAGS.num_shards,
        max_per_class=FLAGS.max_per_class,
        title=FLAGS.title,
        command=shlex.join(["transfer-make-tfrecords", *sys.argv[1:]]),
    )
    manifests = {s: read_manifest(FLAGS.records_dir, name, s) for s in content["counts"]}
    _print_manifests(name, manifests)
    print(
        f"{name}: {len(content['class_names'])} classes, metric {content['metric']}; spec in "
        f"{user_spec.user_spec_path(FLAGS.records_dir, name)}"
    )


def check_own(name: str) -> None:
    """A name the registry does not know: a dataset made earlier from an image folder or CSV."""
    from transfer_tf.data import RecordsNotFoundError, get_dataset, read_manifest
    from transfer_tf.data.registry import read_user_spec

    get_dataset(name, records_dir=FLAGS.records_dir)  # KeyError: unknown
    content = read_user_spec(FLAGS.records_dir, name)
    remake = content.get("command") or "transfer-make-tfrecords --image_folder / --csv"
    for split in content["counts"]:
        try:
            read_manifest(FLAGS.records_dir, name, split)
        except RecordsNotFoundError:
            raise FileNotFoundError(
                f"dataset {name!r}: the {split} records are missing from "
                f"{Path(FLAGS.records_dir) / name}; re-create them with: {remake}"
            ) from None
    counts = ", ".join(f"{s} {n}" for s, n in content["counts"].items())
    print(
        f"{name}: made from {content['source']['path']} on {content['created']} ({counts}); "
        f"to re-create it: {remake}"
    )


def describe_own(records_dir) -> str:
    """The datasets made from image folders / CSV files under `records_dir`."""
    from transfer_tf.data.registry import USER_SPEC_FILE, read_user_spec

    lines = []
    for path in sorted(Path(records_dir).glob(f"*/{USER_SPEC_FILE}")):
        c = read_user_spec(records_dir, path.parent.name)
        counts = " ".join(f"{s}={n}" for s, n in c["counts"].items())
        lines.append(
            f"{c['name']:22s} [user] classes={len(c['class_names'])} {counts} "
            f"metric={c['metric']}\n    source: {c['source']['layout']} {c['source']['path']}"
        )
    return (
        "\n".join(lines)
        if lines
        else f"(no datasets made from image folders or CSVs in {records_dir})"
    )


def main(argv):
    del argv
    if FLAGS.list:
        print(describe_registry())
        if FLAGS.records_dir:
            print(describe_own(FLAGS.records_dir))
        return 0
    if not FLAGS.dataset or not FLAGS.records_dir:
        raise app.UsageError("--dataset and --records_dir are required (or --list)")
    own = FLAGS.image_folder or FLAGS.csv
    if FLAGS.image_folder and FLAGS.csv:
        raise app.UsageError("pass --image_folder or --csv, not both")
    if own and len(FLAGS.dataset) != 1:
        raise app.UsageError("--image_folder / --csv make one dataset: pass one --dataset name")
    if not own:
        given = [f for f in _OWN_ONLY if FLAGS[f].present]
        if given:
            raise app.UsageError(f"--{given[0]} goes with --image_folder or --csv")
    from transfer_tf.data import DATASETS, write_tfrecords

    try:
        if own:
            make_own(FLAGS.dataset[0])
            return 0
        for name in FLAGS.dataset:
            if name not in DATASETS:
                check_own(name)
                continue
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
            _print_manifests(name, manifests)
    except KeyError as e:  # an unknown name
        print(f"transfer-make-tfrecords: error: {e.args[0]}", file=sys.stderr, flush=True)
        return 1
    except (ValueError, FileNotFoundError) as e:
        # One line naming the file, the flag or the class, and the fix; nothing half-written.
        print(f"transfer-make-tfrecords: error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def run():
    cli.run("transfer-make-tfrecords", main)


if __name__ == "__main__":
    sys.exit(run())
