"""Published checkpoints: formats recognised by content, the generic matcher's conventions (TF-slim's
background class, conv-stored classifiers, a new head for fine-tuning, auxiliary heads,
bookkeeping tensors), bad input as one clear error, the `serving_bytes` signature, and fine-tuning
from a checkpoint. The per-family equivalence with reference nets is in test_checkpoints_*.py.

The checkpoints here hold Inception v1 weights under TF-slim's published names (its map is checked
against the `tf_slim` package's own network in test_checkpoints_slim.py), written with a TF1 Saver;
the expected values are the arrays written, transformed by hand.
"""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf
from encoded_images import encode
from reference.equivalence import write_tf_checkpoint

from transfer_tf.models import TrainingSettings, build_model, checkpoint_classes, checkpoint_input
from transfer_tf.models.checkpoints import CheckpointError, read_checkpoint
from transfer_tf.models.inception_v1 import SLIM_CHECKPOINT

SIZE = 64  # Inception v1's weights do not depend on the input size; small keeps the tests fast
HEAD = "InceptionV1/Logits/Conv2d_0c_1x1"


def _slim_tensors(seed=0, classes=1001):
    """Random Inception v1 weights (BN without γ, as slim's) under slim's names, with a
    `classes`-way 1x1-conv head."""
    model = build_model("inception_v1", 1000, TrainingSettings(bn_scale=False), input_size=SIZE)
    rng = np.random.default_rng(seed)
    names = SLIM_CHECKPOINT.names(model, None)
    tensors = {}
    for weight in model.weights:
        name = names[weight.path]
        shape = tuple(weight.shape)
        if name.startswith(HEAD):
            shape = (1, 1, shape[0], classes) if name.endswith("weights") else (classes,)
        low = 0.5 if name.endswith("moving_variance") else -0.5
        tensors[name] = rng.uniform(low, 1.0, shape).astype(np.float32)
    return tensors


@pytest.fixture(scope="module")
def slim_v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tensors = _slim_tensors()
    prefix = write_tf_checkpoint(str(root / "inception_v1.ckpt"), tensors)
    return root, prefix, tensors


def test_formats_are_recognised_by_content_not_by_name(slim_v1, tmp_path):
    root, prefix, tensors = slim_v1
    misnamed = write_tf_checkpoint(str(tmp_path / "weights.h5"), {"a/weights": np.ones(3)})
    assert read_checkpoint(misnamed).format == "tf_checkpoint"
    assert read_checkpoint(misnamed + ".index").format == "tf_checkpoint"
    with h5py.File(tmp_path / "model.ckpt", "w") as f:  # an HDF5 file with a checkpoint's name
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"dense/kernel:0"]
        f["dense"]["dense/kernel:0"] = np.arange(6.0).reshape(2, 3)
    h5 = read_checkpoint(str(tmp_path / "model.ckpt"))
    assert h5.format == "keras_h5" and h5.shapes == {"dense/kernel": (2, 3)}
    np.testing.assert_array_equal(h5.read("dense/kernel"), np.arange(6.0).reshape(2, 3))
    checkpoint = read_checkpoint(prefix)
    assert set(checkpoint.shapes) == set(tensors)


def test_slim_head_drops_the_background_class_and_reshapes_the_conv(slim_v1):
    _, prefix, tensors = slim_v1
    model = build_model("inception_v1", 1000, input_size=SIZE, weights=prefix)
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_array_equal(kernel, tensors[f"{HEAD}/weights"][0, 0, :, 1:])
    np.testing.assert_array_equal(bias, tensors[f"{HEAD}/biases"][1:])
    # BN γ follows the checkpoint (slim's Inception nets have none).
    bn = model.get_layer("Conv2d_1a_7x7_bn")
    assert not bn.scale
    np.testing.assert_array_equal(
        bn.moving_variance.numpy(), tensors["InceptionV1/Conv2d_1a_7x7/BatchNorm/moving_variance"]
    )
    assert checkpoint_classes("inception_v1", prefix) == 1000
    assert checkpoint_input("inception_v1", prefix) == (224, "inception")


def test_a_new_classifier_gets_the_trunk_only(slim_v1):
    _, prefix, tensors = slim_v1
    model = build_model("inception_v1", 10, input_size=SIZE, weights=prefix)
    np.testing.assert_array_equal(
        model.get_layer("Mixed_5c_b3_1x1_conv").kernel.numpy(),
        tensors["InceptionV1/Mixed_5c/Branch_3/Conv2d_0b_1x1/weights"],
    )
    assert model.get_layer("logits").kernel.shape == (1024, 10)


def test_bookkeeping_tensors_are_passed_over_but_nothing_else(tmp_path):
    tensors = _slim_tensors(seed=1)
    extra = {"global_step": np.int64(7), "InceptionV1/Conv2d_1a_7x7/weights/Momentum": np.ones(1)}
    prefix = write_tf_checkpoint(str(tmp_path / "a.ckpt"), {**tensors, **extra})
    build_model("inception_v1", 1000, input_size=SIZE, weights=prefix)

    stray = {**tensors, "InceptionV1/Extra_layer/weights": np.ones(2, np.float32)}
    prefix = write_tf_checkpoint(str(tmp_path / "b.ckpt"), stray)
    with pytest.raises(CheckpointError, match=r"1 checkpoint tensors unused \['InceptionV1/Extra"):
        build_model("inception_v1", 1000, input_size=SIZE, weights=prefix)

    missing = dict(tensors)
    del missing["InceptionV1/Mixed_4b/Branch_1/Conv2d_0b_3x3/weights"]
    prefix = write_tf_checkpoint(str(tmp_path / "c.ckpt"), missing)
    with pytest.raises(CheckpointError, match=r"1 model weights unmatched \['Mixed_4b_b1_3x3_conv"):
        build_model("inception_v1", 1000, input_size=SIZE, weights=prefix)


def test_bn_gamma_settings_that_the_checkpoint_lacks_are_named(slim_v1):
    _, prefix, _ = slim_v1
    with pytest.raises(CheckpointError, match=r"model weights unmatched.*BatchNorm/gamma"):
        build_model(
            "inception_v1", 1000, TrainingSettings(bn_scale=True), input_size=SIZE, weights=prefix
        )


def test_damaged_checkpoints_are_one_clear_error(slim_v1, tmp_path):
    _, prefix, _ = slim_v1
    data = f"{prefix}.data-00000-of-00001"
    # Only the .data file: the .index is missing.
    lonely = tmp_path / "lonely.ckpt.data-00000-of-00001"
    lonely.write_bytes(open(data, "rb").read())
    with pytest.raises(CheckpointError, match=r"lonely.ckpt.index is missing"):
        read_checkpoint(str(tmp_path / "lonely.ckpt"))
    with pytest.raises(CheckpointError, match=r"no_such.ckpt: no such file"):
        read_checkpoint(str(tmp_path / "no_such.ckpt"))
    # A truncated .data file: the index opens, reading a tensor fails, naming the file.
    truncated = tmp_path / "truncated.ckpt"
    (tmp_path / "truncated.ckpt.index").write_bytes(open(prefix + ".index", "rb").read())
    (tmp_path / "truncated.ckpt.data-00000-of-00001").write_bytes(open(data, "rb").read()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated.ckpt.*damaged or truncated"):
        build_model("inception_v1", 1000, input_size=SIZE, weights=str(truncated))
    # A truncated HDF5 file.
    with h5py.File(tmp_path / "full.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
        f["dense"]["kernel:0"] = np.zeros((100, 100))
    (tmp_path / "cut.h5").write_bytes((tmp_path / "full.h5").read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=r"cut.h5: cannot read it as an HDF5"):
        read_checkpoint(str(tmp_path / "cut.h5"))
    # A file that is neither format.
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.txt: neither an HDF5 file"):
        read_checkpoint(str(tmp_path / "notes.txt"))


def test_a_checkpoint_of_a_format_the_family_does_not_publish(tmp_path):
    with h5py.File(tmp_path / "inception_v1.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
        f["dense"]["kernel:0"] = np.zeros((2, 2))
    with pytest.raises(CheckpointError, match=r"inception_v1 has no published keras_h5 layout"):
        build_model("inception_v1", 1000, weights=str(tmp_path / "inception_v1.h5"))


def test_export_refuses_a_head_of_the_wrong_width(tmp_path):
    from transfer_tf.training.export import export_registry_model

    prefix = write_tf_checkpoint(str(tmp_path / "ten.ckpt"), _slim_tensors(classes=10))
    with pytest.raises(
        ValueError,
        match=r"ten.ckpt has a 10-way classifier, not 1000-way: pass "
        r"--num_classes=10",
    ):
        export_registry_model("inception_v1", str(tmp_path / "sm"), weights=prefix)
    assert not (tmp_path / "sm").exists()


def test_export_binary_bad_checkpoint_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "broken.ckpt.index").write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.export",
            "--model=inception_v1",
            f"--checkpoint={tmp_path / 'broken.ckpt'}",
            f"--export_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "broken.ckpt" in line]
    assert errors and "damaged or truncated" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_serving_bytes_decodes_crops_and_resizes_like_evaluation(slim_v1, tmp_path):
    """serving_bytes(PNG) == serving_default / features on the central 87.5% crop resized to S and
    rounded to uint8, computed here with tf.image directly."""
    from transfer_tf.training.export import export_registry_model

    _, prefix, _ = slim_v1
    export_dir = str(tmp_path / "sm")
    export_registry_model("inception_v1", export_dir, weights=prefix, input_size=SIZE)
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((80, 96), (64, 64))]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant([encode(i) for i in images]))
    expected = []
    for image in images:
        h, w = image.shape[:2]
        ch, cw = round(h * 0.875), round(w * 0.875)
        crop = image[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
        resized = tf.image.resize(crop.astype(np.float32), [SIZE, SIZE], method="bilinear")
        expected.append(np.round(np.clip(resized.numpy(), 0, 255)).astype(np.uint8))
    expected = tf.constant(np.stack(expected))
    logits = loaded.signatures["serving_default"](images=expected)["logits"].numpy()
    features = loaded.signatures["features"](images=expected)["features"].numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["features"].numpy(), features, rtol=1e-5, atol=1e-5)
    assert out["probabilities"].shape == (2, 1000)


@pytest.mark.slow
@pytest.mark.subprocess
def test_finetune_from_a_checkpoint_runs_to_its_final_cell(slim_v1, tmp_path):
    from transfer_tf import results
    from transfer_tf.data import write_tfrecords

    _, prefix, _ = slim_v1
    records = tmp_path / "records"
    write_tfrecords("sklearn_digits", records, max_per_class=6)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.finetune",
            "--model=inception_v1",
            f"--checkpoint={prefix}",
            "--input_size=32",
            "--dataset=sklearn_digits",
            f"--records_dir={records}",
            f"--results_dir={tmp_path / 'results'}",
            "--learning_rates=0.01",
            "--weight_decays=0",
            "--train_steps=4",
            "--batch_size=8",
            "--eval_every=2",
            "--checkpoint_every=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = results.load(str(tmp_path / "results"))
    assert set(frame["model"]) == {"inception_v1_checkpoint"}
    assert sorted(frame["stage"]) == ["final", "grid"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.finetune",
            "--model=inception_v1",
            f"--checkpoint={tmp_path / 'missing.ckpt'}",
            "--dataset=sklearn_digits",
            f"--records_dir={records}",
            f"--results_dir={tmp_path / 'bad'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert bad.returncode != 0 and "missing.ckpt: no such file" in bad.stderr
    assert not (tmp_path / "bad").exists()
