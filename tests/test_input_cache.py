"""make_input(cache_decoded=...): the decoded cache gives exactly the batches of the uncached
pipeline (same seed, two epochs with repeat), resumes from a checkpointed iterator, and "auto"
decides by a size estimate."""

import numpy as np
import pytest
import tensorflow as tf
from encoded_images import encode
from PIL import Image

from transfer_tf.data import make_input
from transfer_tf.data.pipeline import decoded_cache_bytes, use_decoded_cache
from transfer_tf.data.tfrecords import split_manifests, write_manifest, write_split

NUM_CLASSES = 3


def _smooth(rng, h, w):
    small = rng.integers(0, 256, (max(1, h // 6), max(1, w // 6), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _write(root, split, examples, multi_label=False):
    shards = write_split(
        root / "mix",
        split,
        ((i, lab, b, i) for i, lab, b in examples),
        len(examples),
        num_shards=3,
        multi_label=multi_label,
    )
    manifest = {
        "dataset": "mix",
        "split": split,
        "num_examples": len(examples),
        "num_classes": NUM_CLASSES,
        "multi_label": multi_label,
        "class_names": [str(c) for c in range(NUM_CLASSES)],
        "shards": shards,
    }
    write_manifest(root / "mix" / f"{split}.manifest.json", manifest)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """PNGs (RGB, RGBA, gray) and chroma-subsampled JPEGs (4:2:0 and 4:2:2, where decoding only
    the crop window differs from cropping the decoded image), odd sizes."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    examples = []
    for k in range(15):
        array = _smooth(rng, 37 + 3 * k, 53 - 2 * k)
        fmt, kw = [
            ("PNG", {}),
            ("PNG", dict(mode="RGBA")),
            ("PNG", dict(mode="L")),
            ("JPEG", dict(quality=90, subsampling=2)),
            ("JPEG", dict(quality=80, subsampling=1)),
        ][k % 5]
        data = encode(array, fmt, **kw)
        examples.append((f"ex{k:02d}", k % NUM_CLASSES, data))
    _write(root, "train", examples)
    return root


def _batches(root, n, **kw):
    args = dict(image_size=16, preprocessing="inception", batch_size=4, seed=3)
    return [
        (x.numpy(), y.numpy()) for x, y in make_input(root, "mix", "train", **args, **kw).take(n)
    ]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize(
    "kw",
    [
        dict(training=True, repeat=True),  # 8 batches of 4: two epochs of 15 and more
        dict(training=True, repeat=True, per_class=3, drop_remainder=True),
        dict(training=False, repeat=True),
    ],
    ids=["train", "per_class", "eval"],
)
def test_cached_batches_equal_uncached(mixed, kw):
    n = 8 if kw.get("per_class") is None else 6
    off = _batches(mixed, n, cache_decoded="off", **kw)
    on = _batches(mixed, n, cache_decoded="on", **kw)
    _assert_same(off, on)
    # Two epochs differ (reshuffled and re-augmented), so the cache is not replaying epoch 1.
    if kw["training"]:
        assert not np.array_equal(off[0][0], off[n // 2][0])


def test_cached_iterator_resumes_from_a_checkpoint(mixed, tmp_path):
    kw = dict(
        image_size=16, preprocessing="inception", batch_size=4, seed=1, training=True, repeat=True
    )
    it = iter(make_input(mixed, "mix", "train", cache_decoded="on", **kw))
    for _ in range(3):
        next(it)
    path = tf.train.Checkpoint(it=it).save(str(tmp_path / "ckpt"))
    expected = [(x.numpy(), y.numpy()) for x, y in (next(it) for _ in range(5))]
    resumed = iter(make_input(mixed, "mix", "train", cache_decoded="on", **kw))
    tf.train.Checkpoint(it=resumed).restore(path)
    got = [(x.numpy(), y.numpy()) for x, y in (next(resumed) for _ in range(5))]
    _assert_same(expected, got)
    uncached = iter(make_input(mixed, "mix", "train", cache_decoded="off", **kw))
    _assert_same(
        expected, [(x.numpy(), y.numpy()) for x, y in (next(uncached) for _ in range(8))][3:]
    )


def test_multi_label_cached(tmp_path):
    rng = np.random.default_rng(1)
    examples = [
        (f"m{k}", [k % 3, (k + 1) % 3], encode(_smooth(rng, 30, 40), "PNG" if k % 2 else "JPEG"))
        for k in range(6)
    ]
    _write(tmp_path, "train", examples, multi_label=True)
    kw = dict(training=True, repeat=True)
    _assert_same(
        _batches(tmp_path, 4, cache_decoded="off", **kw),
        _batches(tmp_path, 4, cache_decoded="on", **kw),
    )


def test_auto_decides_by_the_estimated_size(mixed):
    manifests = split_manifests(mixed, "mix", "train")
    keep = np.ones(15, bool)
    # The sample covers the split: the estimate is exact (PNG: h x w x 3; JPEG: its bytes).
    size = decoded_cache_bytes(mixed, "mix", manifests, keep)
    exact = 0
    for k in range(15):
        h, w = 37 + 3 * k, 53 - 2 * k
        exact += h * w * 3 if k % 5 < 3 else 0
    jpeg_bytes = size - exact
    assert 0 < jpeg_bytes < 6 * 37 * 53  # the 6 JPEGs count their encoded lengths
    assert use_decoded_cache("auto", mixed, "mix", manifests, keep, budget=size)
    assert not use_decoded_cache("auto", mixed, "mix", manifests, keep, budget=size - 1)
    assert use_decoded_cache("on", mixed, "mix", manifests, keep, budget=0)
    assert not use_decoded_cache("off", mixed, "mix", manifests, keep, budget=1 << 40)
    with pytest.raises(ValueError, match="cache_decoded='sometimes'"):
        use_decoded_cache("sometimes", mixed, "mix", manifests, keep, budget=0)
    # Through make_input: a tiny budget reads uncached, a large one cached; same batches.
    kw = dict(training=True, repeat=True)
    _assert_same(
        _batches(mixed, 5, cache_decoded="auto", cache_budget_bytes=1, **kw),
        _batches(mixed, 5, cache_decoded="auto", cache_budget_bytes=1 << 30, **kw),
    )
