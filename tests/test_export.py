"""transfer-export: SavedModels with `serving_default` and `features`, preprocessing in the graph.

Two exports: a short training run of a registry network (its EMA weights) and EfficientNet-Lite0
with its offline ImageNet weights. `saved_model_cli show --all` must list both signatures; a
fresh process that imports only TensorFlow must get the Keras model's features (max abs diff
< 1e-5) from uint8 images.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.models import get_spec, preprocess

pytestmark = pytest.mark.subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAVED_MODEL_CLI = pathlib.Path(sys.executable).with_name("saved_model_cli")

LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    out = {}
    for name, export_dir, images_path in json.loads(sys.argv[1]):
        loaded = tf.saved_model.load(export_dir)
        images = tf.constant(np.load(images_path))
        serving = loaded.signatures["serving_default"](images=images)
        features = loaded.signatures["features"](images=images)
        out[name] = {
            "signatures": sorted(loaded.signatures.keys()),
            "serving_keys": sorted(serving.keys()),
            "features": features["features"].numpy().tolist(),
            "logits": serving["logits"].numpy().tolist(),
            "probabilities": serving["probabilities"].numpy().tolist(),
        }
    assert not [m for m in sys.modules if m.startswith("transfer_tf")]
    print("RESULT " + json.dumps(out))
    """
)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Three steps of MobileNet v2 at 32x32 on scikit-learn digits, with an EMA that differs from
    the raw weights (decay 0.5), written by the real data layer and training loop. BN momentum
    0.5 moves the moving statistics off their initial values so the features are O(1)."""
    from transfer_tf.data import write_tfrecords
    from transfer_tf.training import TrainConfig, train
    from transfer_tf.training.config import dataset_fields

    root = tmp_path_factory.mktemp("export")
    write_tfrecords("sklearn_digits", root / "records", splits=("train",))
    config = TrainConfig(
        model="mobilenet_v2",
        dataset="sklearn_digits",
        records_dir=str(root / "records"),
        input_size=32,
        batch_size=16,
        train_steps=3,
        learning_rate=0.5,
        ema_decay=0.5,
        bn_momentum=0.5,
        eval_split=None,
        checkpoint_every=3,
        **dataset_fields("sklearn_digits"),
    )
    train(config, str(root / "run"))
    return root / "run"


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    from transfer_tf.training.export import export_registry_model

    root = tmp_path_factory.mktemp("saved")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.export",
            f"--model_dir={trained_run}",
            f"--export_dir={root / 'run_export'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signatures: serving_default, features" in proc.stdout
    export_registry_model("efficientnet_lite0", str(root / "lite0"), weights="imagenet")
    rng = np.random.default_rng(0)
    images = {
        "run": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "lite0": rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8),
    }
    jobs = []
    for name, export_dir in (("run", root / "run_export"), ("lite0", root / "lite0")):
        np.save(root / f"{name}.npy", images[name])
        jobs.append([name, str(export_dir), str(root / f"{name}.npy")])
    (root / "loader.py").write_text(LOADER)
    proc = subprocess.run(
        [sys.executable, str(root / "loader.py"), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return root, images, json.loads(line[len("RESULT ") :])


def test_saved_model_cli_lists_the_three_signatures(exports):
    root, _, _ = exports
    proc = subprocess.run(
        [str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(root / "run_export")],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    for signature in ("serving_default", "features", "serving_bytes"):
        assert f"signature_def['{signature}']" in text
    assert "inputs['image_bytes']" in text and "dtype: DT_STRING" in text
    assert text.count("dtype: DT_UINT8") == 2 and text.count("shape: (-1, 32, 32, 3)") == 2
    assert "outputs['probabilities']" in text and "outputs['logits']" in text
    assert "outputs['features']" in text and "shape: (-1, 1280)" in text
    info = json.loads(
        (root / "run_export" / "assets.extra" / "transfer_tf_export.json").read_text()
    )
    assert info["ema"] is True and info["step"] == 3 and info["preprocessing"] == "inception"


def test_fresh_process_gets_the_keras_models_features_from_the_ema_weights(exports, trained_run):
    from transfer_tf.training.weights import restore_model_dir

    _, images, loaded = exports
    got = loaded["run"]
    assert got["signatures"] == ["features", "serving_bytes", "serving_default"]
    assert got["serving_keys"] == ["logits", "probabilities"]
    model, config = restore_model_dir(str(trained_run))  # EMA averages
    x = preprocess(images["run"].astype(np.float32), "inception")
    want = model(x, training=False)
    assert np.abs(want["features"]).max() > 0.1  # a scale at which 1e-5 is a strict bound
    assert np.abs(np.array(got["features"]) - want["features"].numpy()).max() < 1e-5
    assert np.abs(np.array(got["logits"]) - want["logits"].numpy()).max() < 1e-5
    probabilities = np.array(got["probabilities"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(want["logits"]).numpy(), atol=1e-6)
    # The export holds the averages, not the last raw weights (EMA decay 0.5 makes them differ).
    raw, _ = restore_model_dir(str(trained_run), use_ema=False)
    raw_features = raw(x, training=False)["features"].numpy()
    assert np.abs(np.array(got["features"]) - raw_features).max() > 1e-2


def test_efficientnet_lite0_imagenet_export_matches_keras(exports):
    from transfer_tf.models import build_model

    _, images, loaded = exports
    got = loaded["lite0"]
    assert got["signatures"] == ["features", "serving_bytes", "serving_default"]
    model = build_model("efficientnet_lite0", 1000, weights="imagenet")
    x = preprocess(images["lite0"].astype(np.float32), get_spec("efficientnet_lite0").preprocessing)
    want = model(x, training=False)
    assert np.array(got["features"]).shape == (2, 1280)
    assert np.abs(want["features"]).max() > 0.1
    assert np.abs(np.array(got["features"]) - want["features"].numpy()).max() < 1e-5
    assert np.array(got["probabilities"]).shape == (2, 1000)


def test_export_refuses_bad_input(trained_run, exports, tmp_path):
    from transfer_tf.training.export import export_model_dir

    root, _, _ = exports
    with pytest.raises(FileExistsError, match="already holds a SavedModel"):
        export_model_dir(str(trained_run), str(root / "run_export"))
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.json").write_text((trained_run / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        export_model_dir(str(tmp_path / "empty_run"), str(tmp_path / "out"))
    proc = subprocess.run(
        [sys.executable, "-m", "transfer_tf.bin.export", f"--export_dir={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.returncode != 0 and "exactly one of --model_dir" in proc.stderr
