"""transfer-extract-features from a SavedModel exported here, on TFRecords written here."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf import results
from transfer_tf.data import make_input, write_tfrecords
from transfer_tf.data.tfrecords import manifest_path, write_manifest, write_split
from transfer_tf.protocols import features, logreg

SIZE = 24  # the SavedModel's input size
FEATURE_DIM = 5
NUM_CLASSES = 3
COUNTS = {"train": 7, "val": 3, "test": 5}


def _write_records(records_dir, dataset, examples_by_split, multi_label=False):
    """Records through the data layer (2 shards per split, each with its manifest)."""
    folder = records_dir / dataset
    for split, examples in examples_by_split.items():
        shards = write_split(
            folder,
            split,
            [(i, label, tf.io.encode_png(im).numpy(), "test") for i, im, label in examples],
            len(examples),
            num_shards=2,
            multi_label=multi_label,
        )
        manifest = dict(
            dataset=dataset,
            split=split,
            num_examples=len(examples),
            num_classes=NUM_CLASSES,
            multi_label=multi_label,
            metric="map11" if multi_label else "top1",
            shards=shards,
        )
        write_manifest(manifest_path(records_dir, dataset, split), manifest)


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
    """Oracle: numpy central crop (87.5% of each side, rounded; centred), TF bilinear resize,
    rounding to uint8, then the Keras model with the export's scaling."""
    h, w = image.shape[:2]
    ch, cw = max(1, int(np.round(h * 0.875))), max(1, int(np.round(w * 0.875)))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = image[top : top + ch, left : left + cw]
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
    _write_records(records, "toyset", examples)
    multi = {
        s: [(i, im, [c, (c + 1) % NUM_CLASSES]) for i, im, c in ex] for s, ex in examples.items()
    }
    _write_records(records, "toyvoc", multi, multi_label=True)
    write_tfrecords("sklearn_digits", records, max_per_class=2)  # an embedded registry dataset
    by_id = {i: (im, c) for ex in examples.values() for i, im, c in ex}
    return dict(model=model, export_dir=str(export_dir), records=str(records), by_id=by_id)


def test_features_match_the_model_on_eval_crops_in_make_input_order(exported, tmp_path):
    manifest = features.extract_features(
        exported["export_dir"],
        exported["records"],
        "toyset",
        str(tmp_path),
        batch_size=4,
        log=lambda _: None,
    )
    assert manifest["splits"] == COUNTS
    assert manifest["model"] == "toy_net" and manifest["dataset"] == "toyset"
    assert manifest["signature"] == "features" and manifest["output_key"] == "features"
    assert manifest["image_size"] == [SIZE, SIZE] and manifest["feature_dim"] == FEATURE_DIM
    assert manifest["multi_label"] is False and manifest["num_classes"] == NUM_CLASSES
    assert manifest["metric"] == "top1"
    for split in COUNTS:
        with np.load(tmp_path / f"{split}.npz") as data:
            feats, labels, ids = data["features"], data["labels"], data["ids"]
        assert feats.dtype == np.float32 and feats.shape == (COUNTS[split], FEATURE_DIM)
        assert sorted(ids) == sorted(i for i in exported["by_id"] if i.startswith(split))
        np.testing.assert_array_equal(labels, [exported["by_id"][i][1] for i in ids])
        expected = np.stack(
            [_expected_features(exported["model"], exported["by_id"][i][0]) for i in ids]
        )
        np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    # Same examples in the same order as the data layer's evaluation input (what fine-tuning
    # scores), so per-example predictions of the protocols line up.
    ds = make_input(
        exported["records"],
        "toyset",
        "test",
        image_size=SIZE,
        preprocessing="inception",
        training=False,
        batch_size=5,
    )
    images, labels = next(iter(ds))
    with np.load(tmp_path / "test.npz") as data:
        np.testing.assert_array_equal(labels.numpy(), data["labels"])
        ids = data["ids"]
    for k, image_id in enumerate(ids):  # the raw images in our order
        image = exported["by_id"][image_id][0]
        h, w = image.shape[:2]
        ch, cw = int(np.round(h * 0.875)), int(np.round(w * 0.875))
        crop = image[(h - ch) // 2 :][:ch, (w - cw) // 2 :][:, :cw].astype(np.float32)
        resized = tf.image.resize(crop, [SIZE, SIZE]).numpy() / 127.5 - 1.0
        np.testing.assert_allclose(images.numpy()[k], resized, atol=1e-4)


def test_other_signature_output_key_and_multi_label(exported, tmp_path):
    manifest = features.extract_features(
        exported["export_dir"],
        exported["records"],
        "toyset",
        str(tmp_path / "logits"),
        signature="serving_default",
        output_key="logits",
        splits=["test"],
        log=lambda _: None,
    )
    logits, _ = logreg.load_features(str(tmp_path / "logits"), "test")
    with np.load(tmp_path / "logits" / "test.npz") as data:
        ids = data["ids"]
    assert manifest["feature_dim"] == NUM_CLASSES and logits.shape == (5, NUM_CLASSES)
    x = np.stack([_expected_features(exported["model"], exported["by_id"][i][0]) for i in ids])
    expected = exported["model"].layers[-1](x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)

    manifest = features.extract_features(
        exported["export_dir"],
        exported["records"],
        "toyvoc",
        str(tmp_path / "voc"),
        splits=["val"],
        log=lambda _: None,
    )
    assert manifest["multi_label"] is True and manifest["metric"] == "map11"
    with np.load(tmp_path / "voc" / "val.npz") as data:
        multi_hot, ids = data["labels"], data["ids"]
    expected = np.zeros((3, NUM_CLASSES), np.int8)
    for row, image_id in enumerate(ids):
        c = exported["by_id"][image_id][1]
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
    with pytest.raises(FileNotFoundError, match="transfer-make-tfrecords --dataset=nope"):
        features.extract_features(
            exported["export_dir"], exported["records"], "nope", str(tmp_path)
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        features.load_signature(str(tmp_path / "no_model"))


@pytest.mark.subprocess
def test_cli_on_an_embedded_dataset_and_missing_signature_exit(exported, tmp_path):
    base = [
        sys.executable,
        "-m",
        "transfer_tf.bin.extract_features",
        f"--saved_model={exported['export_dir']}",
        f"--records_dir={exported['records']}",
        "--dataset=sklearn_digits",
        f"--features_dir={tmp_path / 'digits'}",
    ]
    renamed = subprocess.run(base + ["--model=toy_net_fair"], capture_output=True, text=True)
    assert renamed.returncode == 1 and renamed.stderr.strip().splitlines()[-1].startswith(
        "transfer-extract-features: error: flag --model=toy_net_fair: --model is now --model_label"
    ), renamed.stderr
    proc = subprocess.run(base + ["--model_label=toy_net_fair"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "digits" / "manifest.json").read_text())
    assert manifest["model"] == "toy_net_fair" and manifest["metric"] == "top1"
    assert manifest["splits"] == {"train": 20, "val": 20, "test": 20}
    assert sorted(os.listdir(tmp_path / "digits")) == [
        "manifest.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]
    _, labels = logreg.load_features(str(tmp_path / "digits"), "train")
    np.testing.assert_array_equal(np.bincount(labels), [2] * 10)

    # The features feed transfer-logreg directly (model, dataset and metric from the manifest).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.logreg",
            f"--features_dir={tmp_path / 'digits'}",
            f"--results_dir={tmp_path / 'results'}",
            "--num_l2=3",
            "--l2_min=1e-3",
            "--l2_max=1",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    frame = results.load(str(tmp_path / "results"))
    assert sorted(frame.stage) == ["final", "grid", "grid", "grid"]
    assert set(frame.model) == {"toy_net_fair"} and set(frame.dataset) == {"sklearn_digits"}
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    with np.load(tmp_path / "digits" / "test.npz") as data:
        np.testing.assert_array_equal(preds["ids"], data["ids"])
        np.testing.assert_array_equal(preds["y_true"], data["labels"])

    proc = subprocess.run(base + ["--signature=pool5"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no signature 'pool5'" in proc.stderr and "'serving_default'" in proc.stderr


def test_gathered_features_are_the_signature_on_each_read_batch(exported):
    """extract_split writes each batch into one array, converting a batch after the next one is
    dispatched: bit for bit what the signature gives on the batches read_split yields (last batch
    partial)."""
    source = features.load_signature(exported["export_dir"])
    arrays, _ = features.extract_split(source, exported["records"], "toyset", "train", batch_size=3)
    batches, _ = features.read_split(exported["records"], "toyset", "train", source.size, 3)
    expected = np.concatenate([source.features(images) for images, _, _ in batches])
    assert arrays["features"].dtype == np.float32 and arrays["features"].shape == (7, FEATURE_DIM)
    np.testing.assert_array_equal(arrays["features"], expected)
