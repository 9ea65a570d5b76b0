"""Every tensorflow-datasets entry end to end (tfds -> TFRecords -> make_input) under mock data."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from transfer_tf.data import (
    DATASETS,
    CountMismatchError,
    TfdsSource,
    make_input,
    read_manifest,
    write_tfrecords,
)
from transfer_tf.data.registry import Holdout
from transfer_tf.data.sources import SourceNotReadyError

TFDS_ENTRIES = [name for name, spec in DATASETS.items() if isinstance(spec.source, TfdsSource)]
N = 12  # mock examples per source split


def _fields_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Random examples of only the fields the converter reads (encoded image, label(s), id).

    tfds' own random mock cannot build VOC's nested 'objects' sequences nor Pets' head boxes
    (it draws boxes with min > max), so these two entries use this generator instead.
    """
    del decoders, read_config, shuffle_files
    spec = next(
        s.source
        for s in DATASETS.values()
        if isinstance(s.source, TfdsSource) and s.source.builder.split("/")[0] == self.name
    )
    label_feature = self.info.features[spec.label_key]
    multi = hasattr(label_feature, "feature")
    num_classes = (label_feature.feature if multi else label_feature).num_classes
    rng = np.random.default_rng(len(str(split)))

    def examples():
        for i in range(N):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)).save(buf, "JPEG")
            label = (
                np.unique(rng.integers(0, num_classes, 1 + i % 3))
                if multi
                else rng.integers(num_classes)
            )
            yield {
                spec.image_key: buf.getvalue(),
                spec.label_key: label,
                spec.id_key: f"{split}_{i:06d}",
            }

    return tf.data.Dataset.from_generator(
        examples,
        output_signature={
            spec.image_key: tf.TensorSpec([], tf.string),
            spec.label_key: tf.TensorSpec([None] if multi else [], tf.int64),
            spec.id_key: tf.TensorSpec([], tf.string),
        },
    )


def test_tfds_entries_are_the_expected_ones():
    assert set(TFDS_ENTRIES) == {
        "food101",
        "cifar10",
        "cifar100",
        "sun397",
        "voc2007",
        "dtd",
        "oxford_pets",
        "caltech101",
        "oxford_flowers102",
        "cassava",
        "eurosat",
        "imagenet2012",
    }


@pytest.mark.parametrize("name", TFDS_ENTRIES)
def test_tfds_entry_through_the_pipeline(name, tmp_path):
    spec = DATASETS[name]
    mock = dict(num_examples=N)
    if name in ("voc2007", "oxford_pets"):
        mock["as_dataset_fn"] = _fields_as_dataset
    with (
        tfds.testing.mock_data(**mock),
        pytest.raises(CountMismatchError, match=str(spec.test_size)),
    ):
        write_tfrecords(name, tmp_path, num_shards=2)  # 12 mock examples are not Table 1's sizes
    manifests = {s: read_manifest(tmp_path, name, s) for s in ("train", "val", "test")}
    # Splits: every source example lands in exactly one of our splits.
    sizes = {s: m["num_examples"] for s, m in manifests.items()}
    from_train = sizes["train"] + sum(
        sizes[s] for s in ("val", "test") if isinstance(getattr(spec, s), Holdout)
    )
    assert from_train == N
    for split in ("val", "test"):
        if isinstance(getattr(spec, split), str):
            assert sizes[split] == N
    for m in manifests.values():
        assert m["num_classes"] == spec.num_classes == len(m["class_names"])
        assert m["source"]["builder"] == spec.source.builder
        assert m["count_check"]["status"] == "failed"
        if not spec.multi_label:
            assert sum(m["counts_per_class"]) == m["num_examples"]
    # ImageNet's 10-per-class minival takes all 12 mock examples (1,000 classes): read val then.
    split = "train" if sizes["train"] else "val"
    manifest = manifests[split]
    want = sorted(lab for s in manifest["shards"] for lab in s["labels"])
    ds = make_input(
        tmp_path,
        name,
        split,
        image_size=16,
        preprocessing="inception",
        training=True,
        batch_size=4,
        seed=1,
    )
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (sizes[split], 16, 16, 3)
    assert np.isfinite(images).all() and images.min() >= -1.0 and images.max() <= 1.0
    if spec.multi_label:
        assert labels.shape == (sizes[split], spec.num_classes)
        assert sorted(map(sorted, (np.flatnonzero(row).tolist() for row in labels))) == sorted(want)
    else:
        assert sorted(labels.tolist()) == want


def test_unprepared_tfds_dataset_says_what_to_do(tmp_path):
    with pytest.raises(SourceNotReadyError, match="--download"):
        write_tfrecords("dtd", tmp_path / "out", data_dir=str(tmp_path / "tfds"))
