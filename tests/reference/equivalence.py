"""Shared by the checkpoint tests: run a reference in its own process, export our model from the
checkpoint it saved, and compare logits through the SavedModel's uint8 input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
# Max |logit difference| allowed, relative to the reference's logit scale (max |logit|).
RELATIVE_TOLERANCE = 1e-4

# The published scalings, written out here independently of transfer_tf/models/preprocessing.py.
SCALINGS = {
    "inception": lambda x: x / 127.5 - 1.0,
    "vgg": lambda x: x - np.array([123.68, 116.78, 103.94], np.float32),
    "torch": lambda x: (
        (x / 255.0 - np.array([0.485, 0.456, 0.406], np.float32))
        / np.array([0.229, 0.224, 0.225], np.float32)
    ),
}


def uint8_images(size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    """Smooth random images (a random low-resolution pattern upsampled), so that activations are
    image-like rather than white noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)
    images = tf.image.resize(low, [size, size], method="bilinear").numpy()
    noise = rng.normal(0, 12, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def run_reference(script: str, out_dir: str, images: np.ndarray, *args: str) -> dict:
    """Runs `tests/reference/<script>` in a fresh process (TF1 graphs / other Keras state stay out
    of the test process); returns its reference.npz."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "images.npy")
    np.save(path, images.astype(np.float32))
    command = [
        sys.executable,
        os.path.join(HERE, script),
        f"--out_dir={out_dir}",
        f"--images={path}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with np.load(os.path.join(out_dir, "reference.npz")) as data:
        return dict(data)


def exported_logits(model: str, checkpoint: str, export_dir: str, images: np.ndarray) -> dict:
    """`transfer-export --model --checkpoint` as a library call, then the SavedModel's signatures
    on the uint8 images (a fresh load, as a client would)."""
    from transfer_tf.training.export import export_registry_model

    export_registry_model(model, export_dir, weights=checkpoint)
    loaded = tf.saved_model.load(export_dir)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    return {k: v.numpy() for k, v in out.items()}


def assert_logits_close(ours: np.ndarray, reference: np.ndarray, what: str) -> float:
    """Asserts max |ours - reference| <= RELATIVE_TOLERANCE * max |reference|; returns the
    relative difference."""
    assert ours.shape == reference.shape, (what, ours.shape, reference.shape)
    scale = float(np.abs(reference).max())
    assert scale > 0, f"{what}: reference logits are all zero"
    difference = float(np.abs(ours - reference).max()) / scale
    assert difference <= RELATIVE_TOLERANCE, (
        f"{what}: max |logit difference| {difference:.2e} of the logit scale {scale:.3g}"
    )
    return difference


def write_tf_checkpoint(prefix: str, tensors: dict[str, np.ndarray]) -> str:
    """Writes `tensors` as a TF1 `Saver` checkpoint (the TF-slim zoo's format: `prefix.index` and
    `prefix.data-00000-of-00001`) under exactly the given variable names."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.Variable(value, name=name) for name, value in sorted(tensors.items())
        ]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)
    return prefix
