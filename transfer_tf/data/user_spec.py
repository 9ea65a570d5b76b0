"""Datasets declared on the command line: an image folder or a CSV file -> records + a spec.

    listing = scan_image_folder("photos/")            # or read_csv("labels.csv")
    make_user_dataset("my_photos", "records/", listing, metric="top1")

writes `records/my_photos/` as `write_tfrecords` writes a registry dataset (shards and
`<split>.manifest.json`) plus `dataset_spec.json`: the `DatasetSpec` (class names in sorted
order, split rules, metric, counts), so `get_dataset("my_photos", records_dir="records/")`, and
with it `make_input`, feature extraction and every later binary, finds it with no further flags.

Splits: the user's (split folders, a CSV `split` column) where given; a missing val or test split
is a fixed-seed holdout of train, class-stratified as the registry's `Holdout` (test first, then
val from what is left), `int(fraction * n)` of each class's n images. Every class must keep at
least one image in each split. Class names are sorted (Python string order); in a user split,
a label that is not a class of train is an error.

Nothing half-written: every image is decoded first (`images.prepare_image`: any format to RGB);
an unreadable file is an error naming it, or with `skip_unreadable` it is left out and listed in
`dataset_spec.json` and every manifest (`skipped_files`). The records are written into a
temporary folder beside the destination and renamed into place, so a failure leaves the records
folder as it was.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transfer_tf.data.registry import (
    DATASETS,
    SPLITS,
    USER_SPEC_FILE,
    USER_SPEC_VERSION,
    DatasetSpec,
    Holdout,
    UserSource,
    spec_to_dict,
    user_spec_path,
)

USER_METRICS = ("top1", "mean_per_class", "map11")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UserDataError(ValueError):
    """A dataset given by the user (image folder, CSV, its images, its options) is unusable."""


@dataclasses.dataclass(frozen=True)
class UserItem:
    id: str  # the path relative to the image folder, or as written in the CSV
    path: Path
    labels: tuple[str, ...]  # class names: one (single-label) or any number (multi-label)
    split: str  # "train", "val", "test", or "all" where the user gave no split


@dataclasses.dataclass(frozen=True)
class UserListing:
    """What a scanner found: `image_folder.scan_image_folder` or `csv_source.read_csv`."""

    layout: str  # class_folders, split_folders, csv, csv_splits
    path: str  # the image folder or the CSV file
    items: tuple[UserItem, ...]
    multi_label: bool


def safe_id(name: str) -> str:
    """`name` as valid UTF-8 (a file name with undecodable bytes gets U+FFFD in its id)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_name(name: str) -> None:
    if name in DATASETS:
        raise UserDataError(
            f"--dataset={name} is a registry dataset; give your dataset another name "
            "(transfer-make-tfrecords --list shows the registry)"
        )
    if not _NAME.match(name or ""):
        raise UserDataError(
            f"--dataset={name!r}: a dataset name is a folder name of letters, digits, '_', '.' "
            "and '-', not starting with '.' or '-'"
        )


def _check_options(metric: str, multi_label: bool, val_fraction, test_fraction) -> None:
    if metric not in USER_METRICS:
        raise UserDataError(f"--metric={metric!r}: choose one of {', '.join(USER_METRICS)}")
    if multi_label != (metric == "map11"):
        raise UserDataError(
            f"--metric={metric}: "
            + (
                "multi-label data (a 'labels' column) is scored with map11"
                if multi_label
                else "map11 scores multi-label data (a CSV 'labels' column); "
                "single-label data takes top1 or mean_per_class"
            )
        )
    for flag, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UserDataError(f"--{flag}={value}: a holdout fraction is in (0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UserDataError(
            f"--val_fraction={val_fraction} + --test_fraction={test_fraction} leave no training "
            "images; their sum must be below 1"
        )


def _class_names(listing: UserListing, train_split: str) -> tuple[str, ...]:
    names = sorted({c for it in listing.items if it.split == train_split for c in it.labels})
    if len(names) < 2:
        raise UserDataError(
            f"{listing.path}: {len(names)} class{'es' if len(names) != 1 else ''} "
            f"({', '.join(names) or 'none'}); classification needs at least two"
        )
    unknown = {}
    for it in listing.items:
        for c in it.labels:
            if c not in names:
                unknown.setdefault(c, it)
    if unknown:
        label, it = next(iter(unknown.items()))
        raise UserDataError(
            f"{listing.path}: label {label!r} of {it.id} ({it.split} split) is not a class of "
            f"the train split ({', '.join(names)}); every class needs training images"
        )
    return tuple(names)


def _rules(splits_given: set[str], val_fraction: float, test_fraction: float, seed: int):
    """(train source split, val rule, test rule)."""
    if "train" not in splits_given:
        return "all", Holdout(val_fraction, seed), Holdout(test_fraction, seed)
    val = "val" if "val" in splits_given else Holdout(val_fraction, seed)
    test = "test" if "test" in splits_given else Holdout(test_fraction, seed)
    return "train", val, test


def _min_images(val: Holdout | str, test: Holdout | str) -> int:
    """The fewest images a class needs so that each holdout draws one and train keeps one."""
    for n in range(1, 10_000):
        t = int(test.fraction * n) if isinstance(test, Holdout) else 0
        v = int(val.fraction * (n - t)) if isinstance(val, Holdout) else 0
        drawn = (t >= 1 or not isinstance(test, Holdout)) and (
            v >= 1 or not isinstance(val, Holdout)
        )
        if drawn and n - t - v >= 1:
            return n
    return 10_000


def _check_split_counts(spec: DatasetSpec, source, class_names, log) -> dict[str, int]:
    """Images per split. Single-label: every class needs an image in each split drawn from train.
    Multi-label (a uniform draw): every class needs a positive in train; a holdout without one is
    reported (11-point mAP averages over the classes present)."""
    from transfer_tf.data.tfrecords import assign_splits

    assignment = assign_splits(spec, source)
    counts = {}
    for split, (src, indices) in assignment.items():
        labels = source.splits[src].labels
        count = np.zeros(len(class_names), np.int64)
        for i in indices:
            count[list(labels[i]) if spec.multi_label else labels[i]] += 1
        counts[split] = count
    train_source = source.splits[spec.train]
    drawn = [s for s in SPLITS if s == "train" or isinstance(getattr(spec, s), Holdout)]
    for split in drawn:
        empty = np.flatnonzero(counts[split] == 0)
        if not len(empty):
            continue
        c = int(empty[0])
        if spec.multi_label:
            have = sum(c in labels for labels in train_source.labels)
            if split != "train":
                missing = ", ".join(class_names[int(k)] for k in empty)
                log(
                    f"note: no {split} image has class(es) {missing}; map11 on {split} averages "
                    "over the classes present"
                )
                continue
            raise UserDataError(
                f"class {class_names[c]!r} has {have} image(s) in {spec.train!r} and none stays in "
                "train after the holdouts: give that class more images, lower --val_fraction / "
                "--test_fraction, or give your own splits"
            )
        have = sum(1 for label in train_source.labels if label == c)
        need = _min_images(spec.val, spec.test)
        holdouts = ", ".join(
            f"{s} {getattr(spec, s).fraction:g}"
            for s in ("test", "val")
            if isinstance(getattr(spec, s), Holdout)
        )
        raise UserDataError(
            f"class {class_names[c]!r} has {have} image(s), so its {split} split is empty: the "
            f"holdouts ({holdouts} of each class) need at least {need} images per class; add "
            "images, raise --val_fraction / --test_fraction, or give your own splits"
        )
    return {split: len(indices) for split, (_, indices) in assignment.items()}


def _read_images(listing: UserListing, skip_unreadable: bool, log) -> tuple[list, list[dict]]:
    """(readable items, skipped [{path, split, reason}]): every image decoded once."""
    from transfer_tf.data.images import UnreadableImageError, prepare_image

    readable, skipped = [], []
    for it in listing.items:
        try:
            prepare_image(it.path.read_bytes(), str(it.path))
        except UnreadableImageError as e:
            if not skip_unreadable:
                raise UserDataError(
                    f"{e}; remove or replace the file, or pass --skip_unreadable to leave it out "
                    "(listed in the manifests)"
                ) from None
            skipped.append({"path": it.id, "split": it.split, "reason": str(e)})
            continue
        readable.append(it)
    if skipped:
        log(
            f"skipped {len(skipped)} unreadable file(s) (listed in dataset_spec.json and the "
            "manifests as skipped_files)"
        )
    return readable, skipped


def _source_data(listing: UserListing, items, class_names, train_split: str):
    from transfer_tf.data.images import prepare_image
    from transfer_tf.data.sources import SourceData, SourceSplit

    index = {c: i for i, c in enumerate(class_names)}
    splits = {}
    for split in dict.fromkeys(it.split for it in items):
        members = [it for it in items if it.split == split]

        def read(indices, members=members):
            for i in indices:
                yield int(i), prepare_image(members[i].path.read_bytes(), str(members[i].path))

        labels = [
            tuple(sorted(index[c] for c in it.labels))
            if listing.multi_label
            else index[it.labels[0]]
            for it in members
        ]
        splits[split] = SourceSplit(
            [it.id for it in members],
            labels,
            read,
            random_access=True,
            origin=lambda i, members=members: str(members[i].path),
        )
    if train_split not in splits:
        raise UserDataError(f"{listing.path}: no readable training images")
    description = {"kind": "user", "layout": listing.layout, "path": listing.path}
    return SourceData(class_names, splits, description)


def _move_into_place(built: Path, final: Path) -> None:
    """Renames `built` to `final`, replacing an older user dataset there (renamed aside first)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    built.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def make_user_dataset(
    name: str,
    records_dir,
    listing: UserListing,
    *,
    metric: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    mirror_invariant: bool = True,
    skip_unreadable: bool = False,
    num_shards: int | None = None,
    max_per_class: int | None = None,
    title: str | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Writes `<records_dir>/<name>/` (records, manifests, dataset_spec.json); returns the spec
    file's content.

    Args:
      name: the dataset's name (a folder name, not a registry name).
      records_dir: output root, as for registry datasets.
      listing: `scan_image_folder(...)` or `read_csv(...)`.
      metric: top1, mean_per_class or map11; default top1, map11 for multi-label data.
      val_fraction, test_fraction: holdouts of train where the user gave no such split.
      seed: the holdouts' seed, and the order of examples across shards.
      mirror_invariant: training may flip images horizontally (False for text, digits, ...).
      skip_unreadable: leave undecodable files out (listed) instead of stopping.
      num_shards, max_per_class: as `write_tfrecords`.
      title: a human-readable title (default the name).
      command: the command line that made it, recorded in the spec file.
    """
    from transfer_tf import __version__
    from transfer_tf.data.tfrecords import write_source

    check_name(name)
    metric = metric or ("map11" if listing.multi_label else "top1")
    _check_options(metric, listing.multi_label, val_fraction, test_fraction)
    final = Path(records_dir) / name
    if final.exists() and not user_spec_path(records_dir, name).is_file():
        raise UserDataError(
            f"{final} exists and is not a dataset made from an image folder or CSV (it has no "
            f"{USER_SPEC_FILE}); choose another --dataset name or --records_dir"
        )
    train_split, val, test = _rules(
        {it.split for it in listing.items}, val_fraction, test_fraction, seed
    )
    class_names = _class_names(listing, train_split)  # label errors before any decoding
    items, skipped = _read_images(listing, skip_unreadable, log)
    kept = {c for it in items if it.split == train_split for c in it.labels}
    lost = [c for c in class_names if c not in kept]
    if lost:
        raise UserDataError(
            f"class(es) {', '.join(lost)} have no readable training images (see the skipped files)"
        )
    source = _source_data(listing, items, class_names, train_split)
    spec = DatasetSpec(
        name=name,
        title=title or name,
        source=UserSource(listing.layout, listing.path),
        num_classes=len(class_names),
        train=train_split,
        val=val,
        test=test,
        train_size=None,
        test_size=None,
        metric=metric,
        multi_label=listing.multi_label,
        group="user",
        mirror_invariant=bool(mirror_invariant),
        notes=f"Made by transfer-make-tfrecords from {listing.path}.",
    )
    sizes = _check_split_counts(spec, source, class_names, log)
    if max_per_class is None:  # a full conversion: the count check compares with these
        spec = dataclasses.replace(
            spec, train_size=sizes["train"] + sizes["val"], test_size=sizes["test"]
        )
    records_dir = Path(records_dir)
    records_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=records_dir))
    try:
        manifests = write_source(
            spec,
            source,
            tmp_root,
            num_shards=num_shards,
            max_per_class=max_per_class,
            seed=seed,
            extra={"skipped_files": skipped},
        )
        content = {
            "format_version": USER_SPEC_VERSION,
            "name": name,
            "spec": spec_to_dict(spec),
            "class_names": list(class_names),
            "multi_label": listing.multi_label,
            "metric": metric,
            "splits": {
                s: {
                    "rule": spec.describe_split(s),
                    "num_examples": m["num_examples"],
                    "counts_per_class": m["counts_per_class"],
                }
                for s, m in manifests.items()
            },
            "counts": {s: m["num_examples"] for s, m in manifests.items()},
            "source": {"layout": listing.layout, "path": listing.path},
            "options": {
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "seed": seed,
                "mirror_invariant": bool(mirror_invariant),
                "skip_unreadable": skip_unreadable,
                "max_per_class": max_per_class,
            },
            "skipped_files": skipped,
            "command": command,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "transfer_tf_version": __version__,
        }
        text = json.dumps(content, indent=1, ensure_ascii=False) + "\n"
        (tmp_root / name / USER_SPEC_FILE).write_text(text, encoding="utf-8")
        _move_into_place(tmp_root / name, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return content


_OWN_OPTIONS = {
    "metric": str,
    "val_fraction": float,
    "test_fraction": float,
    "seed": int,
    "mirror_invariant": bool,
    "skip_unreadable": bool,
    "title": str,
}


def own_dataset_flags(entry: str) -> tuple[str, list[str]]:
    """A study's `--own_datasets` entry, NAME=PATH[,option=value...] -> (NAME, the flags of
    transfer-make-tfrecords besides --dataset and --records_dir).

    PATH is an image folder (--image_folder) or a .csv file (--csv); options are the flags of
    `make_user_dataset`: metric, val_fraction, test_fraction, seed, mirror_invariant and
    skip_unreadable (true / false), title.
    """
    head, *rest = entry.split(",")
    name, sep, path = head.partition("=")
    if not sep or not path:
        raise UserDataError(f"--own_datasets={entry!r}: expected NAME=PATH[,option=value...]")
    check_name(name)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise UserDataError(f"--own_datasets={entry!r}: {path} does not exist")
    flags = [f"--csv={path}" if path.endswith(".csv") else f"--image_folder={path}"]
    for part in rest:
        option, sep, value = part.partition("=")
        kind = _OWN_OPTIONS.get(option)
        if not sep or kind is None:
            raise UserDataError(
                f"--own_datasets={entry!r}: {part!r} is not option=value with option one of "
                f"{', '.join(_OWN_OPTIONS)}"
            )
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise UserDataError(f"--own_datasets={entry!r}: {option} is true or false")
            flags.append(f"--{option}" if value.lower() == "true" else f"--no{option}")
            continue
        try:
            kind(value)
        except ValueError:
            raise UserDataError(
                f"--own_datasets={entry!r}: {option}={value!r} is not a {kind.__name__}"
            ) from None
        flags.append(f"--{option}={value}")
    return name, flags
