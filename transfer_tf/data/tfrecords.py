"""Sharded TFRecords of `tf.train.Example` plus a JSON manifest per split.

Folder layout (docs/DESIGN.md): `<records_dir>/<dataset>/<split>-<i>-of-<n>.tfrecord` (i and n
zero-padded to 5 digits) and `<split>.manifest.json` with counts per class, and per shard its
file, example count, byte size, sha256 and the labels in record order.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from transfer_tf.data.registry import DATASETS, SPLITS, DatasetSpec, Holdout, get_dataset

MANIFEST_VERSION = 1
EXAMPLES_PER_SHARD = 1024
MAX_SHARDS = 256

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


class CountMismatchError(ValueError):
    """A full conversion does not have the sizes the registry declares."""


class RecordsNotFoundError(FileNotFoundError):
    """No manifest for a dataset split under records_dir."""


class CorruptRecordsError(ValueError):
    """A shard differs from its manifest or holds an undecodable record / image."""


# The readers' tf.data assertions start their messages with this, so that the text can be found
# again inside TensorFlow's error (`assertion_text`).
ASSERTION_PREFIX = "transfer_tf: "


def assertion_text(message: str) -> str | None:
    """The text of one of our tf.data assertions inside a TensorFlow error message, or None."""
    if ASSERTION_PREFIX not in message:
        return None
    text = message.split(ASSERTION_PREFIX, 1)[1].split("\n", 1)[0].rstrip("] \t")
    return text.replace('\\"', '"')  # TensorFlow escapes the quotes around strings


def check_labels(label, num_classes: int | None, example_id: str, where: str) -> None:
    """A label (or a multi-label list) must lie in [0, num_classes)."""
    if num_classes is None:
        return
    labels = list(label) if isinstance(label, list | tuple | np.ndarray) else [label]
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise ValueError(
            f"example {example_id!r} ({where}) has label {bad[0]}, outside [0, {num_classes}) "
            f"of its {num_classes} classes; fix the labels of the source data"
        )


# ---- tf.train.Example ----------------------------------------------------------------------------


def image_format(data: bytes) -> str | None:
    if data.startswith(JPEG_START):
        return "jpeg"
    if data.startswith(PNG_START):
        return "png"
    return None


def normalize_image(data: bytes, origin: str) -> tuple[bytes, str, int, int]:
    """Validated (bytes, format, height, width): JPEG or PNG that TensorFlow decodes.

    Other formats (GIF, BMP, WebP) are re-encoded as PNG. Bytes after a JPEG's end-of-image
    marker or a PNG's IEND chunk (some cameras append data) are cut, so the reader's
    truncation check can rely on the end marker.
    """
    import tensorflow as tf

    fmt = image_format(data)
    if fmt == "jpeg" and not data.endswith(JPEG_END) and data.rfind(JPEG_END) > 0:
        data = data[: data.rfind(JPEG_END) + 2]
    if fmt == "png" and not data.endswith(PNG_END) and data.rfind(PNG_END) > 0:
        data = data[: data.rfind(PNG_END) + len(PNG_END)]
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise ValueError(
            f"image {origin} cannot be decoded ({e.message.splitlines()[-1]}); "
            "the source file is corrupt or truncated: re-download it"
        ) from None
    if fmt is None:
        data, fmt = tf.io.encode_png(image).numpy(), "png"
    height, width = (int(v) for v in image.shape[:2])
    return data, fmt, height, width


def encode_example(
    image: bytes,
    fmt: str,
    height: int,
    width: int,
    example_id: str,
    label: int | Sequence[int],
    multi_label: bool,
) -> bytes:
    """A serialized tf.train.Example with the keys of docs/DESIGN.md."""
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    feature = {
        "image/encoded": b(image),
        "image/format": b(fmt.encode()),
        "image/id": b(example_id.encode()),
        "image/height": i([height]),
        "image/width": i([width]),
    }
    if multi_label:
        feature["image/class/labels"] = i(sorted(label))
    else:
        feature["image/class/label"] = i([int(label)])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# ---- splits ------------------------------------------------------------------------------------


def _holdout(rule: Holdout, labels: list, candidates: np.ndarray, multi_label: bool) -> np.ndarray:
    """Indices (a subset of `candidates`) drawn by `rule`; see `Holdout`."""
    rng = np.random.RandomState(rule.seed)
    if multi_label:
        amount = rule.per_class if rule.per_class else int(rule.fraction * len(candidates))
        return np.sort(rng.choice(candidates, amount, replace=False))
    cand_labels = np.asarray([labels[i] for i in candidates])
    chosen = []
    for c in np.unique(cand_labels):
        members = candidates[cand_labels == c]
        amount = rule.per_class if rule.per_class else int(rule.fraction * len(members))
        chosen.append(rng.choice(members, min(amount, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def assign_splits(spec: DatasetSpec, source) -> dict[str, tuple[str, np.ndarray]]:
    """Our split -> (source split, indices into it): the registry's rules applied."""
    train_src = source.splits[spec.train]
    n = len(train_src.ids)
    order = np.arange(n)
    if spec.order_by_id:
        order = np.asarray(sorted(range(n), key=lambda i: train_src.ids[i]), np.int64)
    pool = order
    out = {}
    for split in ("test", "val"):  # the test holdout first, then val from what is left
        rule = getattr(spec, split)
        if isinstance(rule, Holdout):
            held = _holdout(rule, train_src.labels, pool, spec.multi_label)
            # Keep the pool's (possibly id-sorted) order for the next draw.
            pool = pool[~np.isin(pool, held)]
            out[split] = (spec.train, held)
        else:
            out[split] = (rule, np.arange(len(source.splits[rule].ids)))
    out["train"] = (spec.train, np.sort(pool))
    return {s: out[s] for s in SPLITS}


def limit_per_class(
    labels: list, indices: np.ndarray, max_per_class: int, seed: int, multi_label: bool
) -> np.ndarray:
    """At most `max_per_class` examples per class, drawn at random with a fixed seed.

    Multi-label: examples are taken in a random order while any of their classes still has room.
    """
    order = np.random.RandomState(seed).permutation(indices)
    counts: dict[int, int] = {}
    keep = []
    for i in order:
        classes = labels[i] if multi_label else (labels[i],)
        if any(counts.get(c, 0) < max_per_class for c in classes):
            keep.append(i)
            for c in classes:
                counts[c] = counts.get(c, 0) + 1
    return np.sort(np.asarray(keep, np.int64))


# ---- writing ---------------------------------------------------------------------------------


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


def manifest_path(records_dir, dataset: str, split: str) -> Path:
    return Path(records_dir) / dataset / f"{split}.manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _default_shards(n: int) -> int:
    return max(1, min(MAX_SHARDS, math.ceil(n / EXAMPLES_PER_SHARD)))


def write_split(
    out_dir,
    split: str,
    examples: Iterable[tuple[str, int | Sequence[int], bytes, str]],
    num_examples: int,
    *,
    num_shards: int | None = None,
    multi_label: bool = False,
    shard_of: Sequence[int] | None = None,
    origin_of=None,
    num_classes: int | None = None,
) -> list[dict]:
    """Writes `examples` = (id, label, image bytes, origin) into shards; returns shard records.

    `shard_of[k]` (optional) is the shard of the k-th example; by default consecutive runs of
    examples fill the shards in turn. Each image is validated (`normalize_image`), and with
    `num_classes` each label lies in [0, num_classes).
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = num_shards or _default_shards(num_examples)
    n_shards = max(1, min(n_shards, max(num_examples, 1)))
    for old in out_dir.glob(f"{split}-*-of-*.tfrecord"):
        old.unlink()
    names = [shard_name(split, i, n_shards) for i in range(n_shards)]
    writers = [tf.io.TFRecordWriter(str(out_dir / name)) for name in names]
    shard_labels: list[list] = [[] for _ in names]
    written = 0
    try:
        for k, (example_id, label, image, origin) in enumerate(examples):
            shard = shard_of[k] if shard_of is not None else k * n_shards // max(num_examples, 1)
            check_labels(label, num_classes, example_id, origin)
            data, fmt, height, width = normalize_image(image, origin)
            writers[shard].write(
                encode_example(data, fmt, height, width, example_id, label, multi_label)
            )
            shard_labels[shard].append(sorted(label) if multi_label else int(label))
            written += 1
    finally:
        for w in writers:
            w.close()
    if written != num_examples:
        raise RuntimeError(f"{out_dir}: wrote {written} {split} examples, expected {num_examples}")
    return [
        {
            "file": name,
            "num_examples": len(labels),
            "bytes": (out_dir / name).stat().st_size,
            "sha256": _sha256(out_dir / name),
            "labels": labels,
        }
        for name, labels in zip(names, shard_labels, strict=True)
    ]


def counts_per_class(shards: list[dict], num_classes: int, multi_label: bool) -> list[int]:
    counts = np.zeros(num_classes, np.int64)
    for shard in shards:
        for label in shard["labels"]:
            if multi_label:
                counts[np.asarray(label, np.int64)] += 1
            else:
                counts[label] += 1
    return counts.tolist()


def write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


def check_counts(
    spec: DatasetSpec, manifests: dict[str, dict], missing: dict[str, list[str]]
) -> dict:
    """Compares a full conversion with the registry; raises `CountMismatchError`."""
    sizes = {s: m["num_examples"] for s, m in manifests.items()}
    n_missing = {s: len(v) for s, v in missing.items()}
    problems = []
    got_train = sizes["train"] + sizes["val"]
    missing_train = sum(n_missing.get(s, 0) for s in spec.source_splits if s != _test_source(spec))
    if spec.train_size is not None and got_train + missing_train != spec.train_size:
        problems.append(
            f"train+val has {got_train} examples"
            + (f" (+{missing_train} missing files)" if missing_train else "")
            + f", Table 1 / the registry says {spec.train_size}"
        )
    missing_test = n_missing.get(_test_source(spec), 0) if isinstance(spec.test, str) else 0
    if spec.test_size is not None and sizes["test"] + missing_test != spec.test_size:
        problems.append(
            f"test has {sizes['test']} examples"
            + (f" (+{missing_test} missing files)" if missing_test else "")
            + f", the registry says {spec.test_size}"
        )
    train_counts = np.add(
        manifests["train"]["counts_per_class"], manifests["val"]["counts_per_class"]
    )
    absent = [manifests["train"]["class_names"][c] for c in np.flatnonzero(train_counts == 0)]
    if absent:
        problems.append(f"classes without training examples: {absent[:10]}")
    expected = {"train+val": spec.train_size, "test": spec.test_size}
    if problems:
        raise CountMismatchError(
            f"dataset {spec.name!r}: the conversion does not match the registry: "
            + "; ".join(problems)
            + ". The source data is incomplete or a different version; see the registry notes: "
            + spec.notes
        )
    return {"status": "passed", "expected": expected, "missing_files": n_missing}


def _test_source(spec: DatasetSpec) -> str | None:
    return spec.test if isinstance(spec.test, str) else None


def _check_splits(splits: Sequence[str]) -> None:
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {SPLITS}")


def write_tfrecords(
    dataset: str,
    records_dir,
    *,
    data_dir=None,
    manual_dir=None,
    download: bool = False,
    num_shards: int | None = None,
    max_per_class: int | None = None,
    splits: Sequence[str] = SPLITS,
    allow_missing: bool = False,
    seed: int = 0,
) -> dict[str, dict]:
    """Converts one registry dataset into `<records_dir>/<dataset>/`; returns split -> manifest.

    Args:
      dataset: a `DATASETS` name.
      records_dir: output root.
      data_dir: tensorflow-datasets data_dir (tfds sources).
      manual_dir: the unpacked archive (manual sources; ImageNet's tars for tfds).
      download: let tensorflow-datasets download and prepare (off by default: never downloads).
      num_shards: shards per split (default: one per 1,024 examples, at most 256).
      max_per_class: a quick subset: at most this many examples per class in each split
        (recorded in the manifests; the count check is then skipped).
      splits: which of train / val / test to write.
      allow_missing: manual sources: convert without image files that are missing (recorded).
      seed: shuffles the order of examples across shards (and draws `max_per_class` subsets).
    """
    from transfer_tf.data.sources import open_source

    spec = get_dataset(dataset)
    _check_splits(splits)
    source = open_source(
        spec,
        data_dir=data_dir,
        manual_dir=manual_dir,
        download=download,
        allow_missing=allow_missing,
    )
    return write_source(
        spec,
        source,
        records_dir,
        num_shards=num_shards,
        max_per_class=max_per_class,
        splits=splits,
        seed=seed,
    )


def write_source(
    spec: DatasetSpec,
    source,
    records_dir,
    *,
    num_shards: int | None = None,
    max_per_class: int | None = None,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    extra: dict | None = None,
) -> dict[str, dict]:
    """Writes an opened source (`sources.SourceData`) into `<records_dir>/<spec.name>/` by the
    split rules of `spec`; returns split -> manifest (see `write_tfrecords`). `extra` is added to
    every manifest."""
    from transfer_tf import __version__

    _check_splits(splits)
    assignment = assign_splits(spec, source)
    out_dir = Path(records_dir) / spec.name
    manifests = {}
    for split in splits:
        src_name, indices = assignment[split]
        src = source.splits[src_name]
        if max_per_class is not None:
            indices = limit_per_class(src.labels, indices, max_per_class, seed, spec.multi_label)
        # A fixed-seed shuffle spreads classes over shards (manual folders are class-sorted).
        order = np.random.RandomState(seed).permutation(indices)
        n = len(order)
        shards = num_shards or _default_shards(n)
        shards = max(1, min(shards, max(n, 1)))
        if src.random_access:
            read_order, shard_of = order, None
        else:
            rank = np.empty(len(src.ids), np.int64)
            rank[order] = np.arange(n)
            read_order = np.sort(order)
            shard_of = (rank[read_order] * shards // max(n, 1)).tolist()
        examples = (
            (src.ids[i], src.labels[i], image, src.origin(i)) for i, image in src.read(read_order)
        )
        shard_records = write_split(
            out_dir,
            split,
            examples,
            n,
            num_shards=shards,
            multi_label=spec.multi_label,
            shard_of=shard_of,
            num_classes=spec.num_classes,
        )
        manifests[split] = {
            "format_version": MANIFEST_VERSION,
            "dataset": spec.name,
            "split": split,
            "num_examples": n,
            "num_classes": spec.num_classes,
            "multi_label": spec.multi_label,
            "metric": spec.metric,
            "class_names": list(source.class_names),
            "counts_per_class": counts_per_class(shard_records, spec.num_classes, spec.multi_label),
            "selection": spec.describe_split(split),
            "source": {**source.description, "split": src_name},
            "max_per_class": max_per_class,
            "seed": seed,
            "missing_files": source.missing.get(src_name, []) if split != "val" else [],
            **(extra or {}),
            "shards": shard_records,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "transfer_tf_version": __version__,
        }
    status: dict = {"status": "skipped", "reason": None}
    if max_per_class is not None:
        status["reason"] = f"subset: max_per_class={max_per_class}"
    elif set(splits) != set(SPLITS):
        status["reason"] = f"only splits {list(splits)} written"
    error = None
    if status["reason"] is None:
        try:
            status = check_counts(spec, manifests, source.missing)
        except CountMismatchError as e:
            status, error = {"status": "failed", "reason": str(e)}, e
    for split, manifest in manifests.items():
        manifest["count_check"] = status
        write_manifest(manifest_path(records_dir, spec.name, split), manifest)
    if error is not None:
        raise error
    return manifests


# ---- reading manifests -----------------------------------------------------------------------


def read_manifest(records_dir, dataset: str, split: str) -> dict:
    """The manifest of one split (`train`, `val` or `test`)."""
    path = manifest_path(records_dir, dataset, split)
    if not path.is_file():
        own = "" if dataset in DATASETS else " --image_folder=ROOT (or --csv=FILE: your own data)"
        raise RecordsNotFoundError(
            f"no TFRecords for dataset {dataset!r} split {split!r}: {path} does not exist. "
            f"Create them with: transfer-make-tfrecords --dataset={dataset} "
            f"--records_dir={records_dir}{own}"
        )
    return json.loads(path.read_text())


def split_manifests(records_dir, dataset: str, split: str) -> list[dict]:
    """Manifests for `split`, where "train+val" names several."""
    parts = split.split("+")
    bad = [p for p in parts if p not in SPLITS]
    if bad or not parts:
        raise ValueError(f"split {split!r}: use train, val, test or a '+' join like train+val")
    return [read_manifest(records_dir, dataset, p) for p in parts]


def check_split_files(records_dir, dataset: str, manifests: list[dict]) -> list[str]:
    """The shard paths of `manifests` after the checks a reader can make before reading: the
    manifest's counts agree with its shards, its labels lie in [0, num_classes), and every
    listed shard exists with the size the manifest gives. Raises `CorruptRecordsError` naming
    the manifest or the shard: a missing shard would otherwise stall the reader."""
    from transfer_tf import files

    folder = files.join(str(records_dir), dataset)
    paths = []
    for manifest in manifests:
        where = files.join(folder, f"{manifest.get('split', '?')}.manifest.json")
        shards = manifest.get("shards") or []
        counted = sum(int(s.get("num_examples", 0)) for s in shards)
        if counted != manifest.get("num_examples"):
            raise CorruptRecordsError(
                f"{where} says {manifest.get('num_examples')} examples but its shards list "
                f"{counted}; re-create the records with transfer-make-tfrecords"
            )
        num_classes = manifest.get("num_classes")
        for shard in shards:
            path = files.join(folder, shard["file"])
            labels = shard.get("labels")
            if labels is not None and len(labels) != shard["num_examples"]:
                raise CorruptRecordsError(
                    f"{where}: shard {shard['file']} lists {len(labels)} labels for "
                    f"{shard['num_examples']} examples; re-create the records"
                )
            bad = _bad_label(labels or [], num_classes, manifest.get("multi_label"))
            if bad is not None:
                raise CorruptRecordsError(
                    f"{where}: record number {bad[0]} of shard {shard['file']} has label "
                    f"{bad[1]}, outside [0, {num_classes}) of its {num_classes} classes; "
                    f"re-create the records with labels 0..{num_classes - 1}"
                )
            if not files.exists(path):
                raise CorruptRecordsError(
                    f"shard {path} is listed in {where} but missing; re-create the records "
                    "with transfer-make-tfrecords"
                )
            size = _file_size(path)
            if shard.get("bytes") is not None and size != shard["bytes"]:
                raise CorruptRecordsError(
                    f"shard {path} has {size} bytes, {where} says {shard['bytes']}: it is "
                    f"truncated or was replaced ({_readable_records(path, shard['num_examples'])});"
                    " re-create the records with transfer-make-tfrecords"
                )
            paths.append(path)
    return paths


def _bad_label(labels: list, num_classes: int | None, multi_label: bool):
    """(index, label) of the first label outside [0, num_classes) of a shard, or None."""
    if num_classes is None or not labels:
        return None
    if multi_label:
        for i, positives in enumerate(labels):
            for label in positives:
                if not 0 <= label < num_classes:
                    return i, label
        return None
    values = np.asarray(labels, np.int64)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    return (int(bad[0]), int(values[bad[0]])) if len(bad) else None


def _readable_records(path: str, expected: int) -> str:
    """How far a damaged shard reads: the first record that does not, and the id before it."""
    import tensorflow as tf

    index, last_id = 0, None
    records = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            record = next(records)
        except (StopIteration, tf.errors.OpError):
            break
        ids = tf.train.Example.FromString(record.numpy()).features.feature["image/id"]
        last_id = ids.bytes_list.value[0].decode("utf-8", "replace") if ids.bytes_list.value else ""
        index += 1
    if index >= expected:
        return f"all {expected} records read"
    return (
        f"record number {index} (0-based; the last readable record has id {last_id}) cannot be "
        f"read, {index} of {expected} records readable"
    )


def _file_size(path: str) -> int:
    from transfer_tf import files

    if files.is_url(path):
        return files._gfile().stat(path).length
    return os.path.getsize(path)


def records_fingerprint(records_dir, dataset: str, splits=SPLITS) -> str:
    """A short hash of the shards' checksums (from the manifests) of `splits`: what a sweep on
    these records is computed from (`transfer_tf.protocols.sweep`, `inputs`)."""
    content = []
    for split in splits:
        manifest = read_manifest(records_dir, dataset, split)
        content.append([split, [[s["file"], s.get("sha256")] for s in manifest["shards"]]])
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_size(records_dir, dataset: str, split: str) -> int:
    """Number of examples in `split` (e.g. "train+val"), from the manifests."""
    return sum(m["num_examples"] for m in split_manifests(records_dir, dataset, split))
