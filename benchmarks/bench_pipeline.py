"""Benchmark: the TFRecord input pipeline against the same preprocessing on in-memory tensors.

Three tf.data pipelines produce the same training batches (Inception crop + flip, resize to
--image_size, Inception scaling), from --num_images synthetic JPEGs of --height x --width:

  records   transfer_tf.data.make_input over sharded TFRecords (file reads, parsing, per-shard
            integrity checks, image checks, shuffle, decode, augmentation, batching, prefetch)
  memory    the encoded JPEG bytes held in memory (`from_tensor_slices`), the same shuffle and
            the same per-example function (decode + crop + resize + flip) and scaling
  decoded   already-decoded uint8 images in memory; the same crop / resize / flip / scaling,
            no decoding (shows what JPEG decoding itself costs)

Printed: images/s of each (median of --repeats timed passes of --batches batches, after a
warm-up pass, runs interleaved) and the ratios records/memory (the goal: >= 0.95, the pipeline
adds nothing measurable) and records/decoded.

  python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from transfer_tf.data.pipeline import (  # noqa: E402
    _crop_window,
    _element_seeds,
    make_input,
    preprocess_image,
)
from transfer_tf.data.tfrecords import write_manifest, write_split  # noqa: E402
from transfer_tf.models import preprocess  # noqa: E402


def synthetic_jpegs(n, height, width, seed=0):
    """Smooth random images (JPEG sizes like photographs', not like noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def records_pipeline(root, args):
    return make_input(
        root,
        "bench",
        "train",
        image_size=args.image_size,
        preprocessing="inception",
        training=True,
        batch_size=args.batch_size,
        seed=0,
        repeat=True,
    )


def memory_pipeline(images, labels, args):
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=0).repeat().enumerate()

    def element(index, item):
        data, label = item
        return preprocess_image(
            data, _element_seeds(0, index), image_size=args.image_size, training=True
        ), label

    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(args.batch_size, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, y: (preprocess(x, "inception"), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def decoded_pipeline(decoded, labels, args):
    ds = tf.data.Dataset.from_tensor_slices((decoded, labels))
    ds = ds.shuffle(len(labels), seed=0).repeat().enumerate()

    def element(index, item):
        image, label = item
        seeds = _element_seeds(0, index)
        window = _crop_window(tf.shape(image)[:2], seeds[0], True)
        image = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
        image = tf.image.resize(image, [args.image_size] * 2)
        flip = tf.random.stateless_uniform([], seed=seeds[1]) < 0.5
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        return tf.clip_by_value(image, 0.0, 255.0), label

    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(args.batch_size, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, y: (preprocess(x, "inception"), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def images_per_second(iterator, batches, batch_size):
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    images.numpy()
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=512)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    jpegs = synthetic_jpegs(args.num_images, args.height, args.width)
    labels = np.arange(args.num_images, dtype=np.int32) % 10
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = write_split(
            root / "bench",
            "train",
            ((f"{i}", int(labels[i]), b, f"{i}") for i, b in enumerate(jpegs)),
            len(jpegs),
            num_shards=8,
        )
        write_manifest(
            root / "bench" / "train.manifest.json",
            {
                "dataset": "bench",
                "split": "train",
                "num_examples": len(jpegs),
                "num_classes": 10,
                "multi_label": False,
                "class_names": [str(c) for c in range(10)],
                "shards": shards,
            },
        )
        decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs])
        pipelines = {
            "records": iter(records_pipeline(root, args)),
            "memory": iter(memory_pipeline(tf.constant(jpegs), labels, args)),
            "decoded": iter(decoded_pipeline(decoded, labels, args)),
        }
        rates = {name: [] for name in pipelines}
        for it in pipelines.values():  # warm-up: tracing, autotuning, page cache
            images_per_second(it, args.batches, args.batch_size)
        for _ in range(args.repeats):
            for name, it in pipelines.items():
                rates[name].append(images_per_second(it, args.batches, args.batch_size))
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"{args.num_images} JPEGs {args.height}x{args.width} -> {args.image_size}x{args.image_size}, "
        f"batch {args.batch_size}, {os.cpu_count()} CPUs, TF {tf.__version__}"
    )
    for name, rate in median.items():
        runs = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"  {name:8s} {rate:8.1f} images/s  (runs: {runs})")
    print(f"ratio records / memory  = {median['records'] / median['memory']:.3f}  (goal >= 0.95)")
    print(
        f"ratio records / decoded = {median['records'] / median['decoded']:.3f}  "
        "(the cost of decoding JPEGs)"
    )


if __name__ == "__main__":
    main()
