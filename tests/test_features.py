"""transfer-extract-features from a SavedModel exported here, on TFRecords written here."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.protocols import features, logreg

SIZE = 24  # the SavedModel's input size
FEATURE_DIM = 5
NUM_CLASSES = 3
COUNTS = {"train": 7, "val": 3, "test": 5}


def _write_records(records_dir, dataset, images_by_split, multi_label=False):
    """TFRecords in the docs/DESIGN.md layout, 2 shards per split."""
    folder = records_dir / dataset
    folder.mkdir(parents=True)
    for split, examples in images_by_split.items():
        shards = [examples[0::2], examples[1::2]]
        for i, shard in enumerate(shards):
            with tf.io.TFRecordWriter(str(folder / f"{split}-{i}-of-2.tfrecord")) as writer:
                for image_id, image, label in shard:
                    feature = {
                        "image/encoded": _bytes(tf.io.encode_png(image).numpy()),
                        "image/format": _bytes(b"png"),
                        "image/id": _bytes(image_id.encode()),
                        "image/height": _ints([image.shape[0]]),
                        "image/width": _ints([image.shape[1]]),
                    }
                    if multi_label:
                        feature["image/class/labels"] = _ints(label)
                    else:
                        feature["image/class/label"] = _ints([label])
                    ex = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(ex.SerializeToString())
    # File order: shard 0 then shard 1.
    return {split: ex[0::2] + ex[1::2] for split, ex in images_by_split.items()}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


class _Export(tf.Module):
    """Signatures as transfer-export writes them: uint8 images in, scaling inside the graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def _run(self, images):
        return self.model(tf.cast(images, tf.float32) / 127.5 - 1.0)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="images")])
    def serving_default(self, images):
        out = self._run(images)
        return {"logits": out["logits"], "probabilities": tf.nn.softmax(out["logits"])}

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="images")])
    def features(self, images):
        return {"features": self._run(images)["features"]}


def _tiny_model():
    inputs = keras.Input([SIZE, SIZE, 3])
    x = keras.layers.Conv2D(FEATURE_DIM, 3, activation="relu")(inputs)
    feats = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(NUM_CLASSES)(feats)
    return keras.Model(inputs, {"features": feats, "logits": logits})


def _expected_features(model, image):
    """Oracle: numpy central crop (Inception's 87.5% box), TF bilinear resize, the Keras model."""
    h, w = image.shape[:2]
    top, left = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
    crop = image[top : h - top, left : w - left]
    resized = tf.image.resize(crop.astype(np.float32), [SIZE, SIZE], method="bilinear").numpy()
    uint8 = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    x = uint8[None].astype(np.float32) / 127.5 - 1.0
    return model(x)["features"].numpy()[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    export_dir = root / "toy_net"
    module = _Export(model)
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={"serving_default": module.serving_default, "features": module.features},
    )
    rng = np.random.default_rng(0)
    examples = {}
    for split, n in COUNTS.items():
        examples[split] = [
            (
                f"{split}/{i}",
                rng.integers(0, 256, size=(30 + 3 * i, 41 - 2 * i, 3), dtype=np.uint8),
                i % NUM_CLASSES,
            )
            for i in range(n)
        ]
    records = root / "records"
    ordered = _write_records(records, "toyset", examples)
    multi = {
        s: [(i, im, [c, (c + 1) % NUM_CLASSES]) for i, im, c in ex] for s, ex in examples.items()
    }
    _write_records(records, "toyvoc", multi, multi_label=True)
    return dict(root=root, model=model, export_dir=str(export_dir), records=str(records),
                ordered=ordered)  # fmt: skip


def test_extract_features_end_to_end_cli(exported, tmp_path):
    out = tmp_path / "feats"
    proc = subprocess.run(
        [sys.executable, "-m", "transfer_tf.bin.extract_features",
         f"--saved_model={exported['export_dir']}", f"--records_dir={exported['records']}",
         "--dataset=toyset", f"--features_dir={out}", "--batch_size=4"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == COUNTS
    assert manifest["model"] == "toy_net" and manifest["dataset"] == "toyset"
    assert manifest["signature"] == "features" and manifest["output_key"] == "features"
    assert manifest["image_size"] == [SIZE, SIZE] and manifest["feature_dim"] == FEATURE_DIM
    assert manifest["multi_label"] is False and manifest["num_classes"] == NUM_CLASSES
    for split, examples in exported["ordered"].items():
        with np.load(out / f"{split}.npz") as data:
            assert data["features"].dtype == np.float32
            assert data["features"].shape == (COUNTS[split], FEATURE_DIM)
            np.testing.assert_array_equal(data["labels"], [c for _, _, c in examples])
            np.testing.assert_array_equal(data["ids"], [i for i, _, _ in examples])
            expected = np.stack(
                [_expected_features(exported["model"], im) for _, im, _ in examples]
            )
            np.testing.assert_allclose(data["features"], expected, rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(out)) == ["manifest.json", "test.npz", "train.npz", "val.npz"]


def test_other_signature_output_key_and_multi_label(exported, tmp_path):
    manifest = features.extract_features(
        exported["export_dir"], exported["records"], "toyset", str(tmp_path / "logits"),
        signature="serving_default", output_key="logits", splits=["test"], log=lambda _: None,
    )  # fmt: skip
    examples = exported["ordered"]["test"]
    logits, labels = logreg.load_features(str(tmp_path / "logits"), "test")
    assert manifest["feature_dim"] == NUM_CLASSES and logits.shape == (5, NUM_CLASSES)
    x = np.stack([_expected_features(exported["model"], im) for _, im, _ in examples])
    expected = exported["model"].layers[-1](x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)

    features.extract_features(
        exported["export_dir"], exported["records"], "toyvoc", str(tmp_path / "voc"),
        splits=["val"], num_classes=NUM_CLASSES, log=lambda _: None,
    )  # fmt: skip
    _, multi_hot = logreg.load_features(str(tmp_path / "voc"), "val")
    expected = np.zeros((3, NUM_CLASSES), np.int8)
    for row, (_, _, c) in enumerate(exported["ordered"]["val"]):
        expected[row, [c, (c + 1) % NUM_CLASSES]] = 1
    np.testing.assert_array_equal(multi_hot, expected)


def test_bad_input_is_a_clear_error(exported, tmp_path):
    with pytest.raises(
        features.SignatureError,
        match=r"no signature 'penultimate'.*\['features', 'serving_default'\]",
    ):
        features.load_signature(exported["export_dir"], "penultimate")
    with pytest.raises(features.SignatureError, match=r"outputs \['logits', 'probabilities'\]"):
        features.load_signature(exported["export_dir"], "serving_default", "features")
    with pytest.raises(FileNotFoundError, match="no TFRecords match"):
        features.extract_features(
            exported["export_dir"], exported["records"], "nope", str(tmp_path)
        )
    with pytest.raises(ValueError, match="multi-label.*--num_classes"):
        features.extract_features(
            exported["export_dir"], exported["records"], "toyvoc", str(tmp_path / "v"),
            splits=["val"], log=lambda _: None,
        )  # fmt: skip


@pytest.mark.subprocess
def test_cli_missing_signature_exits_nonzero_listing_signatures(exported, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "transfer_tf.bin.extract_features",
         f"--saved_model={exported['export_dir']}", f"--records_dir={exported['records']}",
         "--dataset=toyset", f"--features_dir={tmp_path}", "--signature=pool5"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "no signature 'pool5'" in proc.stderr and "'serving_default'" in proc.stderr
