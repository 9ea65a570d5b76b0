"""Penultimate-layer features of a dataset from a fixed network (Sec. 4.1).

The network is a `FeatureSource`: uint8 RGB images of one size -> features [N, D].
- A SavedModel (`load_signature`): its `features` signature by default, or any signature and
  output key. A transfer-export SavedModel takes uint8 images of a fixed size and scales them
  inside. A SavedModel exported elsewhere (e.g. a TF Hub image feature-vector model) may take
  float images of any size: `input_size` and `scaling` (`pipeline.scale_images`: "unit" for
  TF Hub's [0, 1], "none" for [0, 255], or a model preprocessing such as "inception") say what
  the SavedModel does not record.
- A Keras model file (`keras_source.load_keras_features`): a named layer's output.
Images get the evaluation preprocessing of Supp. A.2 — the data layer's central crop keeping
87.5% of each side (`transfer_tf.data.pipeline.decode_crop`), then a bilinear resize to the
source's input size — and are rounded back to uint8 before the source's own scaling.

Records are read through the data layer's checked reader (`pipeline.read_examples`: shards
checked against their manifests, labels in range, damaged records and images named by shard and
record id) in the same order as `make_input` reads an evaluation split, so per-example
predictions of all protocols line up. `make_input` itself is not used because it returns
model-scaled float images, while the SavedModel takes uint8.

Output, per split: `<features_dir>/<split>.npz` with `features` float32 [N, D], `labels` (int64
[N], or int8 multi-hot [N, C] for multi-label datasets) and `ids` (the records' `image/id`), plus
`manifest.json`. The records are streamed; memory grows only with the output arrays.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from transfer_tf import files
from transfer_tf.data import split_manifests
from transfer_tf.data.pipeline import decode_crop, explain_read_error, read_examples, scale_images

SPLITS = ("train", "val", "test")


class SignatureError(ValueError):
    """The SavedModel lacks the requested signature or output, or takes other inputs."""


@dataclasses.dataclass
class FeatureSource:
    """A fixed network: `features(uint8 images [B, H, W, 3]) -> float32 [B, D]` at `size`.

    `description` goes into the features manifest (what the source is, how it scales);
    `label` is the default model label (the SavedModel folder or Keras file name).
    """

    call: Callable[[tf.Tensor], tf.Tensor]
    size: tuple[int, int]
    label: str
    description: dict
    owner: Any = None  # keeps a loaded SavedModel alive while its functions are used

    def features(self, images: tf.Tensor) -> np.ndarray:
        return self.as_array(self.call(images))

    def as_array(self, out) -> np.ndarray:
        """float32 [B, D] of what `call` returned (no copy when it is float32 [B, D])."""
        out = np.asarray(out)
        if out.ndim > 2:  # e.g. [B, 1, 1, D] from an un-squeezed pooling layer
            if any(s != 1 for s in out.shape[1:-1]):
                raise SignatureError(
                    f"{self.label}: the features have shape {out.shape}; they must be "
                    "[batch, dim] (or [batch, 1, 1, dim])"
                )
            out = out.reshape(len(out), -1)
        return out.astype(np.float32, copy=False)


def input_scaler(dtype: tf.DType, scaling: str | None, what: str):
    """uint8 images -> the input a source takes: as they are (uint8 inputs, which scale inside),
    or float images scaled by `scaling` (required for float inputs)."""
    if dtype == tf.uint8:
        if scaling is not None:
            raise SignatureError(
                f"{what} takes uint8 images and scales them itself; drop --scaling={scaling}"
            )
        return lambda images: images
    if not dtype.is_floating:
        raise SignatureError(f"{what} takes {dtype.name} images; features need uint8 or float")
    if scaling is None:
        raise SignatureError(
            f"{what} takes {dtype.name} images: say how it expects pixels scaled with "
            "--scaling (unit: [0, 1] as TF Hub image models; none: [0, 255]; or a model "
            "preprocessing such as inception: [-1, 1])"
        )
    scale_images(tf.zeros([1, 1, 1, 3]), scaling)  # an unknown name fails here, not mid-split
    return lambda images: tf.cast(scale_images(images, scaling), dtype)


def input_hw(shape, input_size: int | None, what: str) -> tuple[int, int]:
    """(H, W) of a source: its own static size, else `input_size`; they must agree."""
    height, width = shape[1], shape[2]
    if height is None or width is None:
        if not input_size:
            raise SignatureError(f"{what} does not fix its input size ({shape}); pass --input_size")
        return int(input_size), int(input_size)
    if input_size and (int(height), int(width)) != (int(input_size), int(input_size)):
        raise SignatureError(
            f"{what} takes {height}x{width} images; --input_size={input_size} differs (drop it)"
        )
    return int(height), int(width)


# What TensorFlow raises for a SavedModel whose files are damaged or incomplete (a truncated
# variables file surfaces as IndexError "Read less bytes than requested").
DAMAGED_SAVED_MODEL_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)


def load_saved_model(saved_model_dir: str):
    """`tf.saved_model.load`, with a damaged SavedModel as one ValueError naming the folder."""
    try:
        return tf.saved_model.load(saved_model_dir)
    except DAMAGED_SAVED_MODEL_ERRORS as e:
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise ValueError(
            f"SavedModel {saved_model_dir} cannot be loaded ({type(e).__name__}: {first.strip()}):"
            " its files are damaged or incomplete; export it again (transfer-export)"
        ) from None


def load_signature(
    saved_model_dir: str,
    signature: str = "features",
    output_key: str | None = None,
    *,
    input_size: int | None = None,
    scaling: str | None = None,
) -> FeatureSource:
    """A SavedModel signature that takes one batch of images, as a `FeatureSource`."""
    if not tf.io.gfile.exists(saved_model_dir):
        raise FileNotFoundError(f"--saved_model {saved_model_dir} does not exist")
    loaded = load_saved_model(saved_model_dir)
    if signature not in loaded.signatures:
        raise SignatureError(
            f"SavedModel {saved_model_dir} has no signature {signature!r}; it has "
            f"{sorted(loaded.signatures)}. Pass one of them with --signature."
        )
    fn = loaded.signatures[signature]
    _, inputs = fn.structured_input_signature
    what = f"signature {signature!r} of {saved_model_dir}"
    if len(inputs) != 1:
        raise SignatureError(
            f"{what} takes inputs {sorted(inputs)}; feature extraction needs exactly one input, "
            "a batch of images"
        )
    ((input_name, spec),) = inputs.items()
    if spec.shape.rank != 4 or spec.shape[-1] not in (3, None):
        raise SignatureError(
            f"{what} takes {input_name}: {spec}; feature extraction feeds RGB images "
            "[batch, height, width, 3]"
        )
    to_input = input_scaler(spec.dtype, scaling, what)
    size = input_hw(spec.shape, input_size, what)
    outputs = fn.structured_outputs
    if output_key is None:
        output_key = (
            "features" if "features" in outputs or len(outputs) != 1 else next(iter(outputs))
        )
    if output_key not in outputs:
        raise SignatureError(
            f"{what} has outputs {sorted(outputs)}, not {output_key!r}; pass one of them with "
            "--output_key"
        )

    def call(images):
        return fn(**{input_name: to_input(images)})[output_key]

    description = {
        "kind": "saved_model",
        "saved_model": str(saved_model_dir),
        "signature": signature,
        "input_key": input_name,
        "input_dtype": spec.dtype.name,
        "output_key": output_key,
        "scaling": scaling or "inside the SavedModel",
    }
    label = os.path.basename(os.path.normpath(saved_model_dir))
    return FeatureSource(call, size, label, description, owner=loaded)


def eval_image(encoded: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Decode, central crop (87.5% of each side), bilinear resize to `size`; uint8 [H, W, 3]."""
    image = decode_crop(encoded, tf.zeros([2], tf.int64), training=False)
    image = tf.image.resize(image, size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def read_split(
    records_dir: str, dataset: str, split: str, size: tuple[int, int], batch_size: int
) -> tuple[tf.data.Dataset, dict]:
    """(batches of (uint8 images, labels, ids), the split's data manifest), read through the
    data layer's checked reader (`pipeline.read_examples`, as training reads) in its order."""
    (manifest,) = split_manifests(records_dir, dataset, split)
    multi_label, num_classes = manifest["multi_label"], manifest["num_classes"]

    def prepare(ex):
        if multi_label:
            positives = tf.sparse.to_dense(ex["image/class/labels"])
            hot = tf.reduce_sum(tf.one_hot(positives, num_classes, dtype=tf.int32), axis=0)
            label = tf.cast(tf.minimum(hot, 1), tf.int8)
        else:
            label = ex["image/class/label"]
        return eval_image(ex["image/encoded"], size), label, ex["image/id"]

    ds = read_examples(records_dir, dataset, [manifest])
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), manifest


def extract_split(
    source: FeatureSource, records_dir: str, dataset: str, split: str, *, batch_size: int = 64
) -> tuple[dict[str, np.ndarray], dict]:
    """(features, labels and ids of one split streamed through `source`, data manifest).

    Each batch's features are written into one [N, D] array as they arrive (no list of batches
    to concatenate), and a batch is converted only after the next one has been handed to the
    network, so a device computes while the host copies. A damaged record or image stops it
    with an error naming the shard and the record (`pipeline.explain_read_error`)."""
    batches, manifest = read_split(records_dir, dataset, split, source.size, batch_size)
    expected = int(manifest["num_examples"])
    gathered = {"features": None, "n": 0}
    labels, ids = [], []

    def store(out):
        array = source.as_array(out)
        start, stop = gathered["n"], gathered["n"] + len(array)
        if gathered["features"] is None:
            gathered["features"] = np.empty((expected, array.shape[1]), np.float32)
        if stop <= expected:
            gathered["features"][start:stop] = array
        gathered["n"] = stop

    pending = None
    try:
        for images, label, image_id in batches:
            out = source.call(images)
            if pending is not None:
                store(pending)
            pending = out
            labels.append(label.numpy())
            ids.append(image_id.numpy())
        if pending is not None:
            store(pending)
    except tf.errors.OpError as e:
        explained = explain_read_error(e, records_dir, dataset, split)
        if explained is None:
            raise
        raise explained from None
    n = gathered["n"]
    if n != expected or n == 0:
        raise ValueError(
            f"{files.join(str(records_dir), dataset)} split {split}: read {n} records, the "
            f"manifest lists {manifest['num_examples']}; re-create the records"
        )
    arrays = {
        "features": gathered["features"],
        "labels": np.concatenate(labels),
        "ids": np.array([i.decode("utf-8", "replace") for i in np.concatenate(ids)]),
    }
    return arrays, manifest


def extract_features(
    source: str | FeatureSource,
    records_dir: str,
    dataset: str,
    features_dir: str,
    *,
    signature: str = "features",
    output_key: str | None = None,
    input_size: int | None = None,
    scaling: str | None = None,
    splits=SPLITS,
    batch_size: int = 64,
    model: str | None = None,
    log=print,
) -> dict:
    """Writes `<features_dir>/<split>.npz` per split and `manifest.json`; returns the manifest.

    `source`: a SavedModel directory (opened with `signature`, `output_key`, `input_size`,
    `scaling`: `load_signature`) or an opened `FeatureSource` (e.g. a Keras model file).
    """
    for split in splits:  # fail before loading the model if a split is missing
        split_manifests(records_dir, dataset, split)
    if not isinstance(source, FeatureSource):
        source = load_signature(
            source, signature, output_key, input_size=input_size, scaling=scaling
        )
    files.makedirs(features_dir)
    manifest = {
        "model": model or source.label,
        **source.description,
        "dataset": dataset,
        "records_dir": str(records_dir),
        "image_size": list(source.size),
        "preprocessing": "central crop 87.5% of each side, bilinear resize, rounded to uint8",
        "splits": {},
    }
    via = "/".join(
        str(source.description[k])
        for k in ("signature", "output_key", "feature_layer")
        if k in source.description
    )
    for split in splits:
        arrays, data_manifest = extract_split(
            source, records_dir, dataset, split, batch_size=batch_size
        )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = files.join(features_dir, f"{split}.npz")
        # A local file takes the buffer's memory as it is; gfile (gs://) wants bytes.
        files.atomic_write_bytes(
            path, buffer.getvalue() if files.is_url(path) else buffer.getbuffer()
        )
        del buffer
        n, dim = arrays["features"].shape
        manifest["splits"][split] = n
        manifest.update(
            feature_dim=dim,
            metric=data_manifest.get("metric"),
            num_classes=data_manifest["num_classes"],
            multi_label=data_manifest["multi_label"],
        )
        log(f"{dataset} {split}: {n} examples, {dim}-d features via {via}")
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    files.atomic_write_bytes(files.join(features_dir, "manifest.json"), text.encode())
    return manifest
