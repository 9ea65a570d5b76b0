"""Penultimate-layer features of a registry dataset from an exported SavedModel (Sec. 4.1).

Only the SavedModel is used: its `features` signature by default, or any signature and output
key, so a SavedModel exported elsewhere works as long as the signature takes a batch of uint8 RGB
images. Images get the evaluation preprocessing of Supp. A.2 — central crop of 87.5% of the
image, then bilinear resize to the signature's input size — on uint8, here; the model's own
scaling is inside the SavedModel (docs/DESIGN.md, "training").

Output, per split: `<features_dir>/<split>.npz` with `features` float32 [N, D], `labels` (int64
[N], or int8 multi-hot [N, C] for multi-label datasets) and `ids` (the records' `image/id`), plus
`manifest.json`. The records are streamed; memory grows only with the output arrays.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf

from transfer_tf.protocols import sweep

SPLITS = ("train", "val", "test")
CENTRAL_FRACTION = 0.875  # Inception evaluation crop (Supp. A.2)

# `tf.train.Example` keys of docs/DESIGN.md ("data"). Parsed here directly: the data layer's
# `make_input` returns model-preprocessed float images, but the SavedModel needs uint8.
_FEATURE_SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/class/labels": tf.io.VarLenFeature(tf.int64),
    "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


class SignatureError(ValueError):
    """The SavedModel lacks the requested signature or output, or takes other inputs."""


def record_files(records_dir: str, dataset: str, split: str) -> list[str]:
    pattern = sweep.join(records_dir, dataset, f"{split}-*-of-*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no TFRecords match {pattern}; build them with transfer-make-tfrecords or pass the "
            "--records_dir that holds <dataset>/<split>-<i>-of-<n>.tfrecord"
        )
    return files


def load_signature(
    saved_model_dir: str, signature: str = "features", output_key: str | None = None
):
    """(concrete function, input name, input [H, W], output key) of a SavedModel signature."""
    if not tf.io.gfile.exists(saved_model_dir):
        raise FileNotFoundError(f"--saved_model {saved_model_dir} does not exist")
    loaded = tf.saved_model.load(saved_model_dir)
    if signature not in loaded.signatures:
        raise SignatureError(
            f"SavedModel {saved_model_dir} has no signature {signature!r}; it has "
            f"{sorted(loaded.signatures)}. Pass one of them with --signature."
        )
    fn = loaded.signatures[signature]
    _, inputs = fn.structured_input_signature
    if len(inputs) != 1:
        raise SignatureError(
            f"signature {signature!r} of {saved_model_dir} takes inputs {sorted(inputs)}; "
            "feature extraction needs exactly one input, a batch of images"
        )
    (input_name, spec), = inputs.items()  # fmt: skip
    if spec.dtype != tf.uint8 or spec.shape.rank != 4 or spec.shape[-1] != 3:
        raise SignatureError(
            f"signature {signature!r} of {saved_model_dir} takes {input_name}: {spec}; feature "
            "extraction feeds uint8 RGB images [batch, height, width, 3] (export with "
            "transfer-export, whose signatures take uint8 images)"
        )
    height, width = spec.shape[1], spec.shape[2]
    if height is None or width is None:
        raise SignatureError(
            f"signature {signature!r} of {saved_model_dir} does not fix its input size "
            f"({spec.shape}); export it with a static image size"
        )
    outputs = fn.structured_outputs
    if output_key is None:
        output_key = (
            "features" if "features" in outputs or len(outputs) != 1 else next(iter(outputs))
        )
    if output_key not in outputs:
        raise SignatureError(
            f"signature {signature!r} of {saved_model_dir} has outputs {sorted(outputs)}, not "
            f"{output_key!r}; pass one of them with --output_key"
        )
    # Keep `loaded` alive with the function: the concrete function refers to its variables.
    fn._transfer_tf_owner = loaded  # noqa: SLF001
    return fn, input_name, (int(height), int(width)), output_key


def eval_image(encoded: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Decode, central crop 87.5%, bilinear resize to `size`; uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.central_crop(image, CENTRAL_FRACTION)
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def read_split(
    records_dir: str, dataset: str, split: str, size: tuple[int, int], batch_size: int
) -> tf.data.Dataset:
    """Batches of (uint8 images, single label or -1, dense positive-class list, id), in file order."""

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
        return (
            eval_image(ex["image/encoded"], size),
            ex["image/class/label"],
            tf.sparse.to_dense(ex["image/class/labels"], default_value=-1),
            ex["image/id"],
        )

    files = record_files(records_dir, dataset, split)
    ds = tf.data.TFRecordDataset(files)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.padded_batch(batch_size, padding_values=(None, None, np.int64(-1), None))
    return ds.prefetch(tf.data.AUTOTUNE)


def _labels(single: list[np.ndarray], multi: list[np.ndarray], num_classes: int | None, where: str):
    single = np.concatenate(single)
    if np.all(single >= 0):
        return single.astype(np.int64), False
    if np.any(single >= 0):
        raise ValueError(
            f"{where}: some records have image/class/label and some do not; rebuild the records"
        )
    rows = [row for batch in multi for row in batch]
    if num_classes is None:
        raise ValueError(
            f"{where} is multi-label (image/class/labels); pass --num_classes or register the "
            "dataset so the number of classes is known"
        )
    labels = np.zeros((len(rows), num_classes), np.int8)
    for i, row in enumerate(rows):
        positives = row[row >= 0]
        if np.any(positives >= num_classes):
            raise ValueError(f"{where}: label {positives.max()} ≥ num_classes {num_classes}")
        labels[i, positives] = 1
    return labels, True


def extract_split(
    fn, input_name: str, output_key: str, size, records_dir: str, dataset: str, split: str,
    *, batch_size: int = 64, num_classes: int | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Features, labels and ids of one split, streamed through the signature."""
    features, single, multi, ids = [], [], [], []
    for images, label, labels, image_id in read_split(
        records_dir, dataset, split, size, batch_size
    ):
        out = fn(**{input_name: images})[output_key].numpy()
        if out.ndim > 2:  # e.g. [B, 1, 1, D] from an un-squeezed pooling layer
            if any(s != 1 for s in out.shape[1:-1]):
                raise SignatureError(
                    f"output {output_key!r} has shape {out.shape}; features must be [batch, dim]"
                )
            out = out.reshape(len(out), -1)
        features.append(out.astype(np.float32))
        single.append(label.numpy())
        multi.append(labels.numpy())
        ids.append(image_id.numpy())
    where = f"{sweep.join(records_dir, dataset)} split {split}"
    labels, multi_label = _labels(single, multi, num_classes, where)
    return {
        "features": np.concatenate(features),
        "labels": labels,
        "ids": np.array([i.decode("utf-8", "replace") for i in np.concatenate(ids)]),
        "multi_label": multi_label,
    }


def dataset_info(dataset: str) -> dict:
    """Metric and class count from the data registry, where it knows the dataset."""
    try:
        from transfer_tf.data import get_dataset

        spec = get_dataset(dataset)
    except Exception:  # noqa: BLE001  (no registry yet, or a dataset made elsewhere)
        return {}
    info = {"metric": getattr(spec, "metric", None)}
    for attr in ("num_classes", "classes"):
        value = getattr(spec, attr, None)
        if isinstance(value, int):
            info["num_classes"] = value
        elif value is not None and attr == "classes" and "num_classes" not in info:
            info["num_classes"] = len(value)
    return info


def extract_features(
    saved_model_dir: str,
    records_dir: str,
    dataset: str,
    features_dir: str,
    *,
    signature: str = "features",
    output_key: str | None = None,
    splits=SPLITS,
    batch_size: int = 64,
    model: str | None = None,
    num_classes: int | None = None,
    log=print,
) -> dict:
    """Writes `<features_dir>/<split>.npz` per split and `manifest.json`; returns the manifest."""
    fn, input_name, size, output_key = load_signature(saved_model_dir, signature, output_key)
    info = dataset_info(dataset)
    num_classes = num_classes or info.get("num_classes")
    for split in splits:  # fail before the long extraction if a split is missing
        record_files(records_dir, dataset, split)
    sweep.makedirs(features_dir)
    manifest = {
        "model": model or os.path.basename(os.path.normpath(saved_model_dir)),
        "saved_model": saved_model_dir,
        "dataset": dataset,
        "records_dir": records_dir,
        "signature": signature,
        "input_key": input_name,
        "output_key": output_key,
        "image_size": list(size),
        "preprocessing": f"central crop {CENTRAL_FRACTION}, bilinear resize, uint8",
        "metric": info.get("metric"),
        "num_classes": num_classes,
        "splits": {},
    }
    for split in splits:
        arrays = extract_split(
            fn, input_name, output_key, size, records_dir, dataset, split,
            batch_size=batch_size, num_classes=num_classes,
        )  # fmt: skip
        multi_label = arrays.pop("multi_label")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        sweep.atomic_write_bytes(sweep.join(features_dir, f"{split}.npz"), buffer.getvalue())
        n, dim = arrays["features"].shape
        manifest["splits"][split] = n
        manifest["feature_dim"] = dim
        manifest["multi_label"] = multi_label
        if not multi_label and manifest["num_classes"] is None:
            manifest["num_classes"] = int(arrays["labels"].max()) + 1
        log(f"{dataset} {split}: {n} examples, {dim}-d features via {signature}/{output_key}")
    text = json.dumps(manifest, indent=1) + "\n"
    sweep.atomic_write_bytes(sweep.join(features_dir, "manifest.json"), text.encode())
    return manifest
