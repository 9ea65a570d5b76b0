"""tf.data input pipelines over the TFRecords: decode, Inception augmentation, model scaling.

Training: Inception random-resized crop (area 8-100%, aspect 3/4-4/3; Szegedy et al. 2015 and
SPEC.md) and a horizontal flip; both are arguments (`crop_area_min`; `flip`, off by default for
data whose classes change under mirroring, such as digits). Evaluation: a central crop keeping
87.5% of each side, as in Inception's (slim) eval preprocessing, then a resize. Both resize bilinearly to
`image_size` x `image_size`, then the model's own scaling (`transfer_tf.models.preprocess`).

Determinism: every random draw is a stateless op seeded by (seed, position of the element in the
stream), and every parallel stage keeps its order, so a seed fixes the exact batches.

Integrity (`read_examples`, the one reader of training, evaluation and feature extraction):
before reading, every shard a manifest lists must exist with its recorded size, and the
manifest's counts and labels must agree (`tfrecords.check_split_files`); then each shard is read
on its own; a record that fails TFRecord's CRC check or a shard shorter than its manifest stops
the pipeline with an error naming the shard and the record number; an image without its
format's start and end markers (truncated, or not JPEG/PNG) or a label outside [0, num_classes)
stops it with an error naming the shard and the image id. Nothing is skipped silently. An image
that passes these checks and still does not decode is found by `explain_read_error`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging
from official.vision.ops import preprocess_ops

from transfer_tf.data import subsets
from transfer_tf.data.registry import get_dataset
from transfer_tf.data.tfrecords import (
    ASSERTION_PREFIX,
    JPEG_END,
    JPEG_START,
    PNG_END,
    PNG_START,
    CorruptRecordsError,
    assertion_text,
    check_split_files,
    split_manifests,
)

# Inception training crop (SPEC.md): area 8-100% of the image, aspect ratio 3/4-4/3.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10  # as tf-models-official's random_crop_image; then the whole image
CENTRAL_FRACTION = preprocess_ops.CENTER_CROP_FRACTION  # 0.875
SHUFFLE_BUFFER = 10_000
MAX_CYCLE = 16

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
_SINGLE = {"image/class/label": tf.io.FixedLenFeature([], tf.int64)}
_MULTI = {"image/class/labels": tf.io.VarLenFeature(tf.int64)}


def _read_shard(path, expected, keep, features):
    """One shard's parsed examples, with its integrity check (see module docstring).

    TFRecordDataset stops at the first unreadable record (ignore_errors); a sentinel element at
    the end compares how many records came out with the manifest's count.
    """
    records = tf.data.TFRecordDataset(path).ignore_errors().enumerate()
    sentinel = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant("")))

    def check(state, element):
        index, record = element
        count, last_id = state
        at_end = index < 0
        ok = tf.logical_or(tf.logical_not(at_end), tf.equal(count, expected))
        # Formatted only on failure (tf.cond), not for every record.
        message = tf.cond(
            ok,
            lambda: tf.constant(""),
            lambda: tf.strings.format(
                ASSERTION_PREFIX
                + "TFRecord shard {} is corrupt or truncated: record number {} (0-based; "
                "the last readable record has id {}) cannot be read, {} of {} records readable. "
                "Re-create the records with transfer-make-tfrecords.",
                [path, count, last_id, count, expected],
            ),
        )
        assertion = tf.debugging.Assert(ok, [message])
        with tf.control_dependencies([assertion]):
            record_id = tf.cond(
                at_end,
                lambda: last_id,
                lambda: tf.io.parse_single_example(record, {"image/id": _FEATURES["image/id"]})[
                    "image/id"
                ],
            )
            new_count = count + tf.cast(tf.logical_not(at_end), tf.int64)
        return (new_count, record_id), (index, record, at_end)

    stream = records.concatenate(sentinel).scan((tf.constant(0, tf.int64), tf.constant("")), check)
    stream = stream.filter(
        lambda index, record, at_end: tf.cond(at_end, lambda: False, lambda: keep[index])
    )

    def parse(index, record, at_end):
        example = tf.io.parse_single_example(record, features)
        example["shard"] = path
        return example

    return stream.map(parse)


def _check_image(data, fmt, shard, example_id):
    head2, tail2 = tf.strings.substr(data, 0, 2), tf.strings.substr(data, -2, 2)
    head8, tail8 = tf.strings.substr(data, 0, 8), tf.strings.substr(data, -8, 8)
    is_jpeg = tf.logical_and(tf.equal(head2, JPEG_START), tf.equal(tail2, JPEG_END))
    is_png = tf.logical_and(tf.equal(head8, PNG_START), tf.equal(tail8, PNG_END))
    ok = tf.logical_and(
        tf.greater_equal(tf.strings.length(data), 8), tf.logical_or(is_jpeg, is_png)
    )
    message = tf.cond(
        ok,
        lambda: tf.constant(""),
        lambda: tf.strings.format(
            ASSERTION_PREFIX
            + "corrupt or truncated image in shard {}, record id {} (format {}): not a "
            "complete JPEG/PNG. Re-create the records with transfer-make-tfrecords.",
            [shard, example_id, fmt],
        ),
    )
    return tf.debugging.Assert(ok, [message])


def _check_label(example, num_classes: int, dataset: str):
    """An assertion that the example's label(s) lie in [0, num_classes)."""
    if "image/class/labels" in example:
        values = example["image/class/labels"].values
    else:
        values = tf.reshape(example["image/class/label"], [1])
    ok = tf.reduce_all(tf.logical_and(values >= 0, values < num_classes))
    message = tf.cond(
        ok,
        lambda: tf.constant(""),
        lambda: tf.strings.format(
            ASSERTION_PREFIX + "label {} of record id {} in shard {} is outside [0, {}) of "
            "dataset {}; re-create the records with labels 0..{}",
            [values, example["image/id"], example["shard"], num_classes, dataset, num_classes - 1],
        ),
    )
    return tf.debugging.Assert(ok, [message])


def read_examples(records_dir, dataset: str, manifests: list[dict], keep=None) -> tf.data.Dataset:
    """The checked records of `manifests` (one split, or several for "train+val"), parsed:
    dicts with `image/encoded` (checked: a whole JPEG / PNG), `image/format`, `image/id`, the
    label key (checked: in [0, num_classes)) and `shard`, in evaluation order (the shards
    interleaved one record at a time). `keep`: a boolean mask over all records (manifest
    order) of those to yield. Raises `CorruptRecordsError` before reading for a manifest that
    disagrees with its shards (module docstring)."""
    paths = check_split_files(records_dir, dataset, manifests)
    multi_label = manifests[0]["multi_label"]
    num_classes = int(manifests[0]["num_classes"])
    shards = [s for m in manifests for s in m["shards"]]
    total = sum(s["num_examples"] for s in shards)
    keep_t = tf.constant(np.ones(total, bool) if keep is None else keep)
    offsets = np.cumsum([0] + [s["num_examples"] for s in shards])[:-1]
    features = {**_FEATURES, **(_MULTI if multi_label else _SINGLE)}

    def shard_stream(path, expected, offset):
        return _read_shard(path, expected, keep_t[offset : offset + expected], features)

    table = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(paths),
            tf.constant([s["num_examples"] for s in shards], tf.int64),
            tf.constant(offsets, tf.int64),
        )
    )
    ds = table.interleave(
        shard_stream,
        cycle_length=max(1, min(len(paths), MAX_CYCLE)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )

    def checked(example):
        image_ok = _check_image(
            example["image/encoded"],
            example["image/format"],
            example["shard"],
            example["image/id"],
        )
        with tf.control_dependencies([image_ok, _check_label(example, num_classes, dataset)]):
            example["image/encoded"] = tf.identity(example["image/encoded"])
        return example

    return ds.map(checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# TensorFlow's words for an image that does not decode (a message with one of them, and no
# assertion of ours, is worth a decoding pass over the split to find the record).
_DECODE_WORDS = ("image", "jpeg", "png", "decode", "gif", "bmp")


def explain_read_error(error, records_dir, dataset: str, split: str) -> Exception | None:
    """A `CorruptRecordsError` naming the shard and the record of a TensorFlow error raised
    while reading `split` (e.g. "Unknown image file format", a CRC failure), or None if the
    error is not about the records. An error without our assertion's text but about decoding
    an image makes a decoding pass over the split (`verify.verify_records`) to find the record;
    if that pass finds none, the error was not the data's (None)."""
    message = getattr(error, "message", None) or str(error)
    text = assertion_text(message)
    if text is not None:
        return CorruptRecordsError(text)
    if not any(word in message.lower() for word in _DECODE_WORDS):
        return None
    from transfer_tf.data.verify import verify_records

    for part in split.split("+"):
        try:
            verify_records(records_dir, dataset, part, decode=True)
        except CorruptRecordsError as found:
            return found
        except (OSError, ValueError):  # e.g. gs:// records, which the pass cannot open
            return None
    return None


def default_flip(dataset: str, records_dir=None) -> bool:
    """Whether training flips `dataset`'s images: its `mirror_invariant` (the registry's, or the
    spec beside the records of a dataset made with --image_folder / --csv); True for data
    neither knows."""
    try:
        return get_dataset(dataset, records_dir=records_dir).mirror_invariant
    except KeyError:
        return True


def check_crop_area_min(value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"crop_area_min={value!r}: the smallest crop area must be in (0, 1]")
    return value


def _crop_window(shape, seed, training, crop_area_min=CROP_AREA[0]):
    """[offset_y, offset_x, height, width] of the crop."""
    if training:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.concat([shape, [3]], 0),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=crop_area_min,
            aspect_ratio_range=CROP_ASPECT,
            area_range=(crop_area_min, CROP_AREA[1]),
            max_attempts=CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], size[0], size[1]])
    # Inception eval: keep the central 87.5% of each side (tf.image.central_crop semantics).
    size = tf.cast(tf.math.round(tf.cast(shape, tf.float32) * CENTRAL_FRACTION), tf.int32)
    size = tf.maximum(size, 1)
    offset = (shape - size) // 2
    return tf.concat([offset, size], 0)


def decode_crop(data, seed, *, training: bool, crop_area_min: float = CROP_AREA[0]):
    """uint8 [h, w, 3] crop of an encoded JPEG/PNG (grayscale, RGBA, CMYK become RGB).

    JPEGs decode only the crop window (`decode_and_crop_jpeg`, as tf-models-official's
    `*_v2` crop ops); other formats decode fully and are sliced.
    """
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), JPEG_START)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)[:2]
        window = _crop_window(shape, seed, training, crop_area_min)
        return tf.image.decode_and_crop_jpeg(data, window, channels=3)

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return crop_decoded(image, seed, training=training, crop_area_min=crop_area_min)

    image = tf.cond(is_jpeg, jpeg, other)
    image.set_shape([None, None, 3])
    return image


def crop_decoded(image, seed, *, training: bool, crop_area_min: float = CROP_AREA[0]):
    """The crop of `decode_crop` from an image already decoded (uint8 [h, w, 3]): the same
    window for the same seed and shape."""
    window = _crop_window(tf.shape(image)[:2], seed, training, crop_area_min)
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def preprocess_image(
    data,
    seed,
    *,
    image_size: int,
    training: bool,
    crop_area_min: float = CROP_AREA[0],
    flip: bool = True,
):
    """float32 [S, S, 3] in [0, 255]: crop, resize and (training, `flip`) a random horizontal
    flip."""
    image = decode_crop(data, seed[0], training=training, crop_area_min=crop_area_min)
    return resize_flip(image, seed, image_size=image_size, training=training, flip=flip)


def resize_flip(image, seed, *, image_size: int, training: bool, flip: bool = True):
    """The rest of `preprocess_image` after the crop: resize, (training, `flip`) random flip."""
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    if training and flip:
        flip = tf.random.stateless_uniform([], seed=seed[1]) < 0.5
        image = tf.cond(flip, lambda: preprocess_ops.horizontal_flip_image(image), lambda: image)
    return tf.clip_by_value(image, 0.0, 255.0)


def _element_seeds(seed, index):
    seed = tf.cast(seed, tf.int64)
    return tf.stack([tf.stack([seed, 2 * index]), tf.stack([seed, 2 * index + 1])])


def _select_per_class(manifests, per_class: int, seed: int) -> np.ndarray:
    """Boolean mask over all records (manifest order): exactly `per_class` per class, the
    examples `subsets.class_balanced_subset` draws over the evaluation order of each split, the
    splits one after another (as logistic regression draws them from the features)."""
    if any(m["multi_label"] for m in manifests):
        raise ValueError(
            "per_class subsets need a single-label dataset; "
            f"{manifests[0]['dataset']!r} is multi-label"
        )
    orders, offset = [], 0
    for m in manifests:
        sizes = [s["num_examples"] for s in m["shards"]]
        cycle = max(1, min(len(sizes), MAX_CYCLE))  # as read_examples reads one split
        orders.append(offset + subsets.evaluation_order(sizes, cycle))
        offset += sum(sizes)
    order = np.concatenate(orders)
    labels = np.asarray(
        [lab for m in manifests for s in m["shards"] for lab in s["labels"]], np.int64
    )
    chosen = subsets.class_balanced_subset(
        labels[order],
        per_class,
        seed,
        num_classes=manifests[0]["num_classes"],
        class_names=manifests[0]["class_names"],
        what=f"dataset {manifests[0]['dataset']!r} split {'+'.join(m.get('split', '?') for m in manifests)}",
    )
    keep = np.zeros(len(labels), bool)
    keep[order[chosen]] = True
    return keep


# make_input(cache_decoded=...): "on", "off", or "auto" = on when the cache's estimated size is
# within the budget. The cache costs memory once (and bounds the checkpointed shuffle buffer of a
# resumable run, which then holds decoded images); the flag's default is measured
# (docs/measurements/2026-12-01-extraction-and-input.md).
CACHE_DECODED = ("auto", "on", "off")
DECODED_CACHE_BUDGET = 1 << 30  # bytes
CACHE_SIZE_SAMPLE = 256  # records read to estimate the cache's size


def _decode_ahead(example):
    """What the decoded cache holds for one record: the pixels of an image that is not a JPEG
    (PNG: what `decode_crop` decodes whole anyway), and a JPEG still encoded: decoding only the
    crop window (`decode_and_crop_jpeg`) differs from cropping the whole decoded image in the
    window's last column for chroma-subsampled JPEGs (libjpeg's fancy upsampling at the
    window's edge), so caching decoded JPEGs would change the batches."""
    data = example["image/encoded"]
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), JPEG_START)

    def decoded():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    pixels = tf.cond(is_jpeg, lambda: tf.zeros([0, 0, 3], tf.uint8), decoded)
    pixels.set_shape([None, None, 3])
    labels = {k: v for k, v in example.items() if k.startswith("image/class/")}
    return {"image/encoded": tf.where(is_jpeg, data, ""), "image/pixels": pixels, **labels}


def decoded_cache_bytes(records_dir, dataset: str, manifests, keep, sample=CACHE_SIZE_SAMPLE):
    """Estimated bytes of the decoded cache of the records `keep` selects: the mean over the
    first `sample` records (a PNG's height x width x 3 from its header; a JPEG, kept encoded, its
    length) times their number."""
    first = read_examples(records_dir, dataset, manifests, keep).take(sample)
    sizes = []
    for data in first.map(lambda ex: ex["image/encoded"]).as_numpy_iterator():
        if data[:2] == JPEG_START or data[:8] != PNG_START:
            sizes.append(len(data))
        else:  # the IHDR chunk comes first: width, height (big-endian) at bytes 16-23
            width, height = struct.unpack(">II", data[16:24])
            sizes.append(width * height * 3)
    return int(np.mean(sizes) * int(np.sum(keep))) if sizes else 0


def use_decoded_cache(mode: str, records_dir, dataset, manifests, keep, budget: int) -> bool:
    """Whether make_input caches decoded images (`CACHE_DECODED`)."""
    if mode not in CACHE_DECODED:
        raise ValueError(f"cache_decoded={mode!r}: use one of {', '.join(CACHE_DECODED)}")
    if mode != "auto":
        return mode == "on"
    size = decoded_cache_bytes(records_dir, dataset, manifests, keep)
    cached = size <= budget
    logging.info(
        "cache_decoded=auto: %s %s records decoded ~%.0f MB, budget %.0f MB: %s",
        dataset,
        int(np.sum(keep)),
        size / 2**20,
        budget / 2**20,
        "cached" if cached else "not cached",
    )
    return cached


# Input scalings beyond the model registry's, for sources from outside it (a TF Hub model
# takes [0, 1]; a Keras model may scale inside itself).
SCALINGS = {"none": lambda x: x, "unit": lambda x: x / 255.0}


def scale_images(images, scaling: str) -> tf.Tensor:
    """float32 images in [0, 255] scaled for a model: "none" (kept), "unit" ([0, 1]) or a key of
    `transfer_tf.models.PREPROCESSING` (e.g. "inception": [-1, 1])."""
    x = tf.cast(images, tf.float32)
    if scaling in SCALINGS:
        return SCALINGS[scaling](x)
    # Lazily: the model registry builds its families on import.
    from transfer_tf.models.preprocessing import PREPROCESSING, preprocess

    if scaling not in PREPROCESSING:
        raise ValueError(
            f"unknown scaling {scaling!r}; choose none, unit or a model preprocessing "
            f"({', '.join(sorted(PREPROCESSING))})"
        )
    return preprocess(x, scaling)


def _scale(preprocessing: str):
    return lambda images: scale_images(images, preprocessing)


def make_input(
    records_dir,
    dataset: str,
    split: str,
    *,
    image_size: int,
    preprocessing: str,
    training: bool,
    batch_size: int,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    per_class: int | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    crop_area_min: float = CROP_AREA[0],
    flip: bool | None = None,
    cache_decoded: str = "off",
    cache_budget_bytes: int = DECODED_CACHE_BUDGET,
) -> tf.data.Dataset:
    """Batches `(images float32 [B, S, S, 3] scaled for the model, labels)` from the TFRecords.

    Args:
      records_dir: root of `<dataset>/<split>-*.tfrecord` (see `write_tfrecords`).
      dataset: registry name (the folder name), or a dataset made with --image_folder / --csv.
      split: "train", "val", "test" or a join such as "train+val".
      image_size: S, the model's input size.
      preprocessing: the model's scaling (`scale_images`: a `transfer_tf.models.preprocess`
        name, "none" or "unit").
      training: Inception augmentation and shuffling; else central crop, fixed order.
      batch_size: examples per batch.
      seed: fixes shuffling, crops, flips and the `per_class` subset.
      repeat: repeat forever (each pass reshuffled and re-augmented).
      drop_remainder: drop a last partial batch.
      per_class: a class-balanced random subset of exactly this many examples per class (Fig. 9).
      shuffle_buffer: examples held for shuffling (training).
      crop_area_min: training crops cover this fraction of the image or more (Inception: 0.08).
      flip: training flips images at random; None = `default_flip(dataset, records_dir)` (no
        flips for datasets whose classes change under mirroring, such as digits).
      cache_decoded: "on" keeps the selected records in memory after the first pass, images
        decoded (PNG; JPEGs stay encoded, `_decode_ahead`), so later epochs skip reading,
        checking and decoding; "auto" does so when `decoded_cache_bytes` is within
        `cache_budget_bytes`; "off" reads the records every epoch. The batches are the same.

    Labels are int32 [B], or float32 multi-hot [B, C] for multi-label datasets.
    """
    crop_area_min = check_crop_area_min(crop_area_min)
    flip = default_flip(dataset, records_dir) if flip is None else bool(flip)
    manifests = split_manifests(records_dir, dataset, split)
    multi_label = manifests[0]["multi_label"]
    num_classes = manifests[0]["num_classes"]
    folder = Path(records_dir) / dataset
    total = sum(s["num_examples"] for m in manifests for s in m["shards"])
    if total == 0:
        raise ValueError(f"dataset {dataset!r} split {split!r} has no examples in {folder}")
    keep = (
        np.ones(total, bool) if per_class is None else _select_per_class(manifests, per_class, seed)
    )
    cached = use_decoded_cache(
        cache_decoded, records_dir, dataset, manifests, keep, cache_budget_bytes
    )
    ds = read_examples(records_dir, dataset, manifests, keep)
    selected = int(keep.sum())
    if cached:
        ds = ds.map(_decode_ahead, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.cache()
    elif per_class is not None:
        ds = ds.cache()  # the subset is small: read the shards once
    if training:
        ds = ds.shuffle(min(shuffle_buffer, selected), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def element(index, example):
        data = example["image/encoded"]  # checked by read_examples
        seeds = _element_seeds(seed, index)
        crop = dict(training=training, crop_area_min=crop_area_min)
        if cached:  # the same crop of the same pixels (_decode_ahead)
            image = tf.cond(
                tf.strings.length(data) > 0,
                lambda: decode_crop(data, seeds[0], **crop),
                lambda: crop_decoded(example["image/pixels"], seeds[0], **crop),
            )
            image = resize_flip(image, seeds, image_size=image_size, training=training, flip=flip)
        else:
            image = preprocess_image(data, seeds, image_size=image_size, flip=flip, **crop)
        if multi_label:
            positives = tf.sparse.to_dense(example["image/class/labels"])
            hot = tf.reduce_sum(tf.one_hot(positives, num_classes, dtype=tf.float32), axis=0)
            label = tf.minimum(hot, 1.0)
        else:
            label = tf.cast(example["image/class/label"], tf.int32)
        return image, label

    ds = ds.enumerate().map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(
        batch_size,
        drop_remainder=drop_remainder,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    scale = _scale(preprocessing)
    ds = ds.map(
        lambda images, labels: (scale(images), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE)
