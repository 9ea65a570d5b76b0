"""Penultimate-layer features of a registry dataset from an exported SavedModel (Sec. 4.1).

Only the SavedModel is used: its `features` signature by default, or any signature and output
key, so a SavedModel exported elsewhere works as long as the signature takes a batch of uint8 RGB
images of a fixed size. Images get the evaluation preprocessing of Supp. A.2 — the data layer's
central crop keeping 87.5% of each side (`transfer_tf.data.pipeline.decode_crop`), then a
bilinear resize to the signature's input size — and are rounded back to uint8; the model's own
scaling is inside the SavedModel (docs/DESIGN.md, "training").

Records are read through the data layer's split manifests (`<split>.manifest.json`: shards,
classes, multi-label, metric) in the same order as `make_input` reads an evaluation split, so
per-example predictions of all protocols line up. `make_input` itself is not used because it
returns model-scaled float images, while the SavedModel takes uint8.

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

from transfer_tf.data import split_manifests
from transfer_tf.data.pipeline import MAX_CYCLE, decode_crop
from transfer_tf.protocols import sweep

SPLITS = ("train", "val", "test")


class SignatureError(ValueError):
    """The SavedModel lacks the requested signature or output, or takes other inputs."""

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
    """Decode, central crop (87.5% of each side), bilinear resize to `size`; uint8 [H, W, 3]."""
    image = decode_crop(encoded, tf.zeros([2], tf.int64), training=False)
    image = tf.image.resize(image, size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def read_split(
    records_dir: str, dataset: str, split: str, size: tuple[int, int], batch_size: int
) -> tuple[tf.data.Dataset, dict]:
    """(batches of (uint8 images, labels, ids), the split's data manifest)."""
    (manifest,) = split_manifests(records_dir, dataset, split)
    multi_label, num_classes = manifest["multi_label"], manifest["num_classes"]
    folder = sweep.join(str(records_dir), dataset)
    paths = [sweep.join(folder, shard["file"]) for shard in manifest["shards"]]
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} is listed in {split}.manifest.json but missing; re-create the records "
                "with transfer-make-tfrecords"
            )
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if multi_label:
        spec["image/class/labels"] = tf.io.VarLenFeature(tf.int64)
    else:
        spec["image/class/label"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        if multi_label:
            positives = tf.sparse.to_dense(ex["image/class/labels"])
            hot = tf.reduce_sum(tf.one_hot(positives, num_classes, dtype=tf.int32), axis=0)
            label = tf.cast(tf.minimum(hot, 1), tf.int8)
        else:
            label = ex["image/class/label"]
        return eval_image(ex["image/encoded"], size), label, ex["image/id"]

    # The order of `make_input` for an evaluation split: shards interleaved one record at a time.
    ds = tf.data.Dataset.from_tensor_slices(paths).interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), MAX_CYCLE),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), manifest


def extract_split(
    fn, input_name: str, output_key: str, size, records_dir: str, dataset: str, split: str,
    *, batch_size: int = 64,
) -> tuple[dict[str, np.ndarray], dict]:  # fmt: skip
    """(features, labels and ids of one split streamed through the signature, data manifest)."""
    batches, manifest = read_split(records_dir, dataset, split, size, batch_size)
    features, labels, ids = [], [], []
    for images, label, image_id in batches:
        out = fn(**{input_name: images})[output_key].numpy()
        if out.ndim > 2:  # e.g. [B, 1, 1, D] from an un-squeezed pooling layer
            if any(s != 1 for s in out.shape[1:-1]):
                raise SignatureError(
                    f"output {output_key!r} has shape {out.shape}; features must be [batch, dim]"
                )
            out = out.reshape(len(out), -1)
        features.append(out.astype(np.float32))
        labels.append(label.numpy())
        ids.append(image_id.numpy())
    n = sum(len(f) for f in features)
    if n != manifest["num_examples"] or n == 0:
        raise ValueError(
            f"{sweep.join(str(records_dir), dataset)} split {split}: read {n} records, the "
            f"manifest lists {manifest['num_examples']}; re-create the records"
        )
    arrays = {
        "features": np.concatenate(features),
        "labels": np.concatenate(labels),
        "ids": np.array([i.decode("utf-8", "replace") for i in np.concatenate(ids)]),
    }
    return arrays, manifest


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
    log=print,
) -> dict:
    """Writes `<features_dir>/<split>.npz` per split and `manifest.json`; returns the manifest."""
    for split in splits:  # fail before loading the model if a split is missing
        split_manifests(records_dir, dataset, split)
    fn, input_name, size, output_key = load_signature(saved_model_dir, signature, output_key)
    sweep.makedirs(features_dir)
    manifest = {
        "model": model or os.path.basename(os.path.normpath(saved_model_dir)),
        "saved_model": str(saved_model_dir),
        "dataset": dataset,
        "records_dir": str(records_dir),
        "signature": signature,
        "input_key": input_name,
        "output_key": output_key,
        "image_size": list(size),
        "preprocessing": "central crop 87.5% of each side, bilinear resize, rounded to uint8",
        "splits": {},
    }
    for split in splits:
        arrays, data_manifest = extract_split(
            fn, input_name, output_key, size, records_dir, dataset, split, batch_size=batch_size
        )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        sweep.atomic_write_bytes(sweep.join(features_dir, f"{split}.npz"), buffer.getvalue())
        n, dim = arrays["features"].shape
        manifest["splits"][split] = n
        manifest.update(
            feature_dim=dim,
            metric=data_manifest.get("metric"),
            num_classes=data_manifest["num_classes"],
            multi_label=data_manifest["multi_label"],
        )
        log(f"{dataset} {split}: {n} examples, {dim}-d features via {signature}/{output_key}")
    text = json.dumps(manifest, indent=1) + "\n"
    sweep.atomic_write_bytes(sweep.join(features_dir, "manifest.json"), text.encode())
    return manifest
