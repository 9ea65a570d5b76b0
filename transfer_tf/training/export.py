"""SavedModel export: the network with its preprocessing inside the graph.

Signatures (a client sends uint8 RGB images already resized / cropped to the model's square size
S; `saved_model_cli show --all --dir <export_dir>` lists them):

    serving_default(images: uint8 [None, S, S, 3]) -> {"probabilities": [None, C] float32,
                                                         "logits": [None, C] float32}
    features(images: uint8 [None, S, S, 3])        -> {"features": [None, D] float32}
    serving_bytes(image_bytes: string [None])       -> {"probabilities", "logits", "features"}

`serving_bytes` takes encoded JPEG / PNG / GIF / BMP files and prepares them as evaluation does
(`transfer_tf.data.pipeline.preprocess_image`: central 87.5% crop, bilinear resize to S, rounded
to uint8), so TF Serving's REST API serves the SavedModel as is:
`POST /v1/models/<name>:predict` with `{"signature_name": "serving_bytes", "instances":
[{"b64": "<base64 JPEG>"}]}` (README, "Serving").

Probabilities are softmax (sigmoid for multi-label datasets). `features` is the global-pooled
penultimate layer, what `transfer-extract-features` and logistic regression read. Loading needs
TensorFlow only: `tf.saved_model.load(export_dir).signatures["features"](images=...)`.

An export is written into a hidden temporary folder beside `export_dir` and renamed into place,
so a killed export leaves no half SavedModel. Under a URL (`gs://`; object stores cannot rename
a folder at once) it is written in place with its info file last: a killed export leaves a
folder without it, which is not taken for an export (a rerun with `replace` moves it aside). Its info records a `fingerprint` of what it holds
(the recorded details and the weights' checksum); with `replace`, an export whose fingerprint
is the same is kept as it is, and one that differs is moved aside to
`<export_dir>.superseded-<time>/` with a note saying what replaced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid

import keras
import tensorflow as tf
from absl import logging

from transfer_tf import files
from transfer_tf.data.pipeline import preprocess_image
from transfer_tf.files import sha256_file
from transfer_tf.models import (
    build_model,
    checkpoint_classes,
    checkpoint_input,
    checkpoint_settings,
    preprocess,
)
from transfer_tf.models.checkpoints import read_checkpoint
from transfer_tf.run_dir import RunDir
from transfer_tf.training.builders import input_spec
from transfer_tf.training.saved_model_info import export_info_path, write_export_info
from transfer_tf.training.weights import restore_model_dir

SUPERSEDED_NOTE = "SUPERSEDED.txt"


class ServingModule(tf.Module):
    """A tf.Module holding the Keras model and the two signature functions."""

    def __init__(
        self, model: keras.Model, *, input_size: int, preprocessing: str, multi_label: bool = False
    ):
        super().__init__(name="transfer_tf_export")
        self.model = model
        spec = tf.TensorSpec([None, input_size, input_size, 3], tf.uint8, name="images")
        encoded = tf.TensorSpec([None], tf.string, name="image_bytes")

        def outputs(images):
            scaled = preprocess(tf.cast(images, tf.float32), preprocessing)
            out = self.model(scaled, training=False)
            logits = tf.cast(out["logits"], tf.float32)
            probabilities = tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits, axis=-1)
            return {
                "probabilities": probabilities,
                "logits": logits,
                "features": tf.cast(out["features"], tf.float32),
            }

        def decode(data):
            image = preprocess_image(
                data, tf.zeros([2, 2], tf.int32), image_size=input_size, training=False
            )
            return tf.cast(tf.round(image), tf.uint8)

        @tf.function(input_signature=[spec])
        def serving_default(images):
            out = outputs(images)
            return {"probabilities": out["probabilities"], "logits": out["logits"]}

        @tf.function(input_signature=[spec])
        def features(images):
            return {"features": outputs(images)["features"]}

        @tf.function(input_signature=[encoded])
        def serving_bytes(image_bytes):
            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.uint8)
            return outputs(images)

        self.serving_default = serving_default
        self.features = features
        self.serving_bytes = serving_bytes


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    *,
    input_size: int,
    preprocessing: str,
    multi_label: bool = False,
    info: dict | None = None,
    replace: bool = False,
) -> str:
    """Writes `model` as a SavedModel with the `serving_default` and `features` signatures.

    An `export_dir` that already holds files is an error, unless `replace`: then an export with
    the same fingerprint is kept and any other content is moved aside (module docstring)."""
    details = {
        "input_size": int(input_size),
        "preprocessing": preprocessing,
        "input_dtype": "uint8",
        "multi_label": bool(multi_label),
        "signatures": {
            "serving_default": ["probabilities", "logits"],
            "features": ["features"],
            "serving_bytes": ["probabilities", "logits", "features"],
        },
    }
    details.update(info or {})
    details["fingerprint"] = _fingerprint(details)
    existing = _existing_export(export_dir)
    if existing is not None:
        if not replace:
            raise FileExistsError(
                f"{export_dir} already holds a SavedModel (or other files); pass a new "
                "--export_dir, delete it, or pass --replace (keeps an unchanged export, moves "
                "another one aside)"
            )
        if existing.get("fingerprint") == details["fingerprint"]:
            logging.info(
                "%s already holds this export (fingerprint %s); kept",
                export_dir,
                details["fingerprint"],
            )
            return export_dir
    module = ServingModule(
        model, input_size=input_size, preprocessing=preprocessing, multi_label=multi_label
    )
    signatures = {
        "serving_default": module.serving_default,
        "features": module.features,
        "serving_bytes": module.serving_bytes,
    }
    if files.is_url(export_dir):
        if existing is not None:
            _move_aside(export_dir, existing, details)
        tf.saved_model.save(module, export_dir, signatures=signatures)
        write_export_info(export_dir, details)  # last: the mark of a whole export
        return export_dir
    parent, name = os.path.split(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        write_export_info(tmp, details)
        if existing is not None:
            _move_aside(export_dir, existing, details)
        elif os.path.isdir(export_dir):
            os.rmdir(export_dir)  # an empty folder (_existing_export: None)
        os.rename(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def _fingerprint(details: dict) -> str:
    text = json.dumps(
        {k: v for k, v in details.items() if k != "fingerprint"}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _existing_export(export_dir: str) -> dict | None:
    """The info of the export in `export_dir` ({} if it has none: not ours, a killed export, or
    a folder with other files), or None if there is nothing (no folder, or an empty one)."""
    if not files.isdir(export_dir) or not files.listdir(export_dir):
        return {} if files.exists(export_dir) and not files.isdir(export_dir) else None
    try:
        info = json.loads(files.read_bytes(export_info_path(export_dir)))
    except (OSError, ValueError, tf.errors.OpError):
        return {}
    return info if isinstance(info, dict) else {}


def _move_aside(export_dir: str, old: dict, new: dict) -> str:
    """Moves the superseded `export_dir` to `<export_dir>.superseded-<time>` with a note."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = export_dir.rstrip("/" if files.is_url(export_dir) else os.sep)
    aside = f"{base}.superseded-{stamp}"
    n = 1
    while files.exists(aside):
        n += 1
        aside = f"{base}.superseded-{stamp}-{n}"
    if files.isdir(export_dir):
        files.move_tree(export_dir, aside)
    else:
        os.rename(export_dir, aside)  # a file where the folder should be (local only)
    where = export_dir if files.is_url(export_dir) else os.path.abspath(export_dir)
    note = (
        f"This export was superseded on {time.strftime('%Y-%m-%d %H:%M:%S')}: a new one of "
        f"different content was written to {where}.\n"
        f"old fingerprint: {old.get('fingerprint')}  (source: {old.get('source')}, "
        f"step {old.get('step')})\n"
        f"new fingerprint: {new.get('fingerprint')}  (source: {new.get('source')}, "
        f"step {new.get('step')})\n"
    )
    if files.isdir(aside):
        files.atomic_write_text(files.join(aside, SUPERSEDED_NOTE), note)
    logging.info("moved the superseded export %s aside to %s", export_dir, aside)
    return aside


def _weights_sha256(path: str) -> str | None:
    """The checksum of a checkpoint: the file itself (.h5), else its .index (whose entries
    hold each tensor's CRC, so it changes with every weight)."""
    for candidate in (path, path + ".index"):
        if os.path.isfile(candidate):
            return sha256_file(candidate)
    return None


def export_model_dir(
    model_dir: str,
    export_dir: str,
    *,
    use_ema: bool = True,
    model_builder=None,
    replace: bool = False,
) -> str:
    """Exports the latest checkpoint of a training run (its EMA weights when it kept them)."""
    model, config = restore_model_dir(model_dir, model_builder, use_ema=use_ema)
    size, preprocessing = input_spec(config)
    latest = RunDir(model_dir).latest_checkpoint()
    return export_saved_model(
        model,
        export_dir,
        input_size=size,
        preprocessing=preprocessing,
        multi_label=config.multi_label,
        replace=replace,
        info={
            "source": "model_dir",
            "model_dir": os.path.abspath(model_dir),
            "model": config.model,
            "dataset": config.dataset,
            "num_classes": config.num_classes,
            "settings": config.settings,
            "ema": bool(use_ema and config.ema_decay > 0),
            "step": _checkpoint_step(model_dir),
            "weights_sha256": _weights_sha256(latest) if latest else None,
        },
    )


def export_registry_model(
    name: str,
    export_dir: str,
    *,
    weights: str | None = "imagenet",
    input_size: int | None = None,
    num_classes: int = 1000,
    replace: bool = False,
) -> str:
    """Exports a registry model as built: with offline ImageNet weights (`weights="imagenet"`,
    EfficientNet-Lite), a published checkpoint (`weights=PATH`, TF-slim prefix or Keras `.h5`,
    with the checkpoint's own input scaling) or random weights (`weights=None`)."""
    native_size, preprocessing = checkpoint_input(name, weights)
    size = int(input_size or native_size)
    info = {"source": "registry", "model": name, "weights": weights, "num_classes": num_classes}
    settings = None
    if weights not in (None, "imagenet"):
        checkpoint = read_checkpoint(weights)
        classes = checkpoint_classes(name, weights)
        if classes is not None and classes != num_classes:
            raise ValueError(
                f"checkpoint {checkpoint.path} has a {classes}-way classifier, not "
                f"{num_classes}-way: pass --num_classes={classes}"
            )
        settings = checkpoint_settings(checkpoint)
        info.update(
            source="checkpoint",
            weights=None,
            checkpoint=os.path.abspath(checkpoint.path),
            checkpoint_format=checkpoint.format,
            settings=settings.to_dict(),
            weights_sha256=_weights_sha256(checkpoint.path),
        )
    model = build_model(name, num_classes, settings, input_size=size, weights=weights)
    return export_saved_model(
        model,
        export_dir,
        input_size=size,
        preprocessing=preprocessing,
        info=info,
        replace=replace,
    )


def _checkpoint_step(model_dir: str) -> int | None:
    latest = RunDir(model_dir).latest_checkpoint()
    if not latest:
        return None
    try:
        return int(latest.rsplit("-", 1)[-1])
    except ValueError:
        return None
