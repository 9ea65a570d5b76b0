"""Fine-tuning and training from scratch end to end on an embedded dataset (scikit-learn digits),
with tiny grids and few steps, through the real registry network (MobileNet v1 at 32x32), data
layer, training loop and sweep machinery.

Fine-tuning starts from a short Fashion-MNIST pretraining run; its sweep is SIGKILLed after the
first cell finished and rerun: every cell must exist exactly once, the best validation cell must
be the one retrained on train+val, and the test metric must be what the saved predictions give.
"""

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from transfer_tf import results
from transfer_tf.metrics import METRICS

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

STEPS = 8


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transfer_tf.data import write_tfrecords
    from transfer_tf.training import TrainConfig, train
    from transfer_tf.training.config import dataset_fields

    root = tmp_path_factory.mktemp("finetune")
    records = root / "records"
    write_tfrecords("sklearn_digits", records)
    write_tfrecords("fashion_mnist", records, max_per_class=20, splits=("train",))
    pretrain_dir = root / "pretrain"
    config = TrainConfig(
        model="mobilenet_v1",
        dataset="fashion_mnist",
        records_dir=str(records),
        input_size=32,
        batch_size=32,
        train_steps=4,
        learning_rate=0.1,
        ema_decay=0.9,
        bn_momentum=0.9,
        eval_split=None,
        checkpoint_every=4,
        **dataset_fields("fashion_mnist"),
    )
    train(config, str(pretrain_dir))
    return root, records, pretrain_dir


def test_init_from_pretraining_copies_the_trunk_and_zeroes_a_new_classifier(setup):
    from transfer_tf.models import build_model
    from transfer_tf.training import weights

    _, _, pretrain_dir = setup
    source, _ = weights.restore_model_dir(str(pretrain_dir))  # EMA averages
    target = build_model("mobilenet_v1", 7, input_size=32)
    copied = weights.init_from_model_dir(target, str(pretrain_dir))
    weights.zero_classifier(target)
    trunk = weights.trunk_weights(target)
    assert copied == len(trunk) == len(weights.trunk_weights(source)) > 50
    for s, t in zip(weights.trunk_weights(source), trunk, strict=True):
        np.testing.assert_array_equal(t.numpy(), s.numpy())
    logits = target.get_layer("logits")
    assert logits.kernel.shape == (1024, 7)
    assert not np.any(logits.kernel.numpy()) and not np.any(logits.bias.numpy())

    wrong_size = build_model("mobilenet_v1", 7, input_size=64)  # same weights, different size...
    weights.init_from_model_dir(wrong_size, str(pretrain_dir))  # ...fully convolutional: allowed
    other = build_model("mobilenet_v2", 7, input_size=32)
    with pytest.raises(ValueError, match=r"same --model and --input_size"):
        weights.init_from_model_dir(other, str(pretrain_dir))


def test_finetune_sweep_killed_and_rerun_runs_every_cell_once(setup):
    root, records, pretrain_dir = setup
    results_dir = root / "results"
    command = [
        sys.executable,
        "-m",
        "transfer_tf.bin.finetune",
        f"--init_model_dir={pretrain_dir}",
        "--dataset=sklearn_digits",
        f"--records_dir={records}",
        f"--results_dir={results_dir}",
        "--learning_rates=0.01,0.1",
        "--weight_decays=1e-4",
        f"--train_steps={STEPS}",
        "--batch_size=32",
        "--eval_every=4",
        "--checkpoint_every=2",
        "--log_every=4",
    ]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    cells_dir = results_dir / "finetune"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if cells_dir.exists() and any(n.endswith(".json") for n in os.listdir(cells_dir)):
            break
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0][-3000:]
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "[1/2]" in second.stdout and "(done before)" in second.stdout.splitlines()[0]

    frame = results.load(str(results_dir))
    assert len(frame) == 3 and frame["cell_id"].is_unique
    grid = frame[frame["stage"] == "grid"].sort_values("hp.learning_rate")
    final = frame[frame["stage"] == "final"].iloc[0]
    assert list(grid["hp.learning_rate"]) == [0.01, 0.1]
    assert set(frame["protocol"]) == {"finetune"} and set(frame["model"]) == {"mobilenet_v1_fair"}
    assert set(frame["architecture"]) == {"mobilenet_v1"} and set(frame["settings"]) == {"fair"}
    assert (grid["steps"] == STEPS).all() and final["steps"] == STEPS
    for history in grid["history"]:
        # Every eval_every (4) and, for Fig. 8, at doubling steps from 8 // 400 -> 1.
        assert [h["step"] for h in history] == [1, 2, 4, 8]
        assert [h["epoch"] for h in history] == pytest.approx(
            [s / history[-1]["step"] * history[-1]["epoch"] for s in (1, 2, 4, 8)]
        )
        assert all(0.0 <= h["val_metric"] <= 1.0 for h in history)
    best = grid.loc[grid["val_metric"].idxmax()]
    assert final["hp.learning_rate"] == best["hp.learning_rate"]
    assert np.isnan(final["val_metric"]) and grid["test_metric"].isna().all()
    predictions = np.load(final["predictions_path"])
    assert len(predictions["y_true"]) == 355  # the test split of scikit-learn digits
    assert len(set(predictions["ids"])) == 355  # one id per test image, for paired tests
    assert final["test_metric"] == pytest.approx(
        METRICS["top1"](predictions["y_true"], predictions["y_pred"])
    )
    assert f"final top1 on test {final['test_metric']:.4f}" in second.stdout
    # The final run's config: SGD Nesterov, cosine, wd / lr, BN momentum from steps per epoch.
    config = json.loads(
        (results_dir / "runs" / "finetune" / final["cell_id"] / "config.json").read_text()
    )
    assert config["optimizer"] == "sgd_nesterov" and config["lr_schedule"] == "cosine"
    assert config["weight_decay"] == pytest.approx(1e-4 / final["hp.learning_rate"])
    assert config["init"] == "model_dir" and config["train_split"] == "train+val"
    assert config["bn_momentum"] == "auto" and config["ema_decay"] == 0.0


def test_scratch_sweep_with_per_class_subset(setup):
    from transfer_tf.protocols import finetune
    from transfer_tf.protocols.finetune_grid import scratch_grid
    from transfer_tf.protocols.sources import source_from_registry

    root, records, _ = setup
    source = source_from_registry(
        "mobilenet_v1",
        weights=None,
        input_size=32,
        settings={"bn_scale": True, "dropout_rate": 0.2, "aux_head": False, "label_smoothing": 0.1},
    )
    assert source.settings_label == "custom" and source.init == "random"
    recipe = finetune.make_recipe(
        "scratch",
        source,
        dataset="sklearn_digits",
        grid=scratch_grid(1, 1),
        train_steps=6,
        batch_size=16,
        per_class=5,
    )
    result = finetune.run_sweep(
        recipe,
        records_dir=str(records),
        results_dir=str(root / "results"),
        options=finetune.RunOptions(eval_every=3, keep_runs=True),
        progress=False,
    )
    assert result.best_hparams["learning_rate"] == pytest.approx(10**-1.5)
    assert result.best_hparams["weight_decay"] == pytest.approx(10**-3.25)
    assert (
        result.best_hparams["dropout_rate"] == 0.2 and result.best_hparams["label_smoothing"] == 0.1
    )
    assert result.final["stage"] == "final" and result.final["per_class"] == 5
    assert 0.0 <= result.test_metric <= 1.0
    grid_dir = root / "results" / "runs" / "scratch" / result.grid[0]["cell_id"]
    config = json.loads((grid_dir / "config.json").read_text())
    assert config["init"] == "random" and config["num_train_examples"] == 50  # 5 x 10 classes
    # BN momentum max(1 - 10/s, 0.9) with s = ceil(50 / 16) = 4 steps per epoch -> 0.9.
    assert config["bn_momentum"] == "auto"
    frame = results.load(str(root / "results" / "scratch"))
    assert len(frame) == 2 and set(frame["per_class"]) == {5}


def test_sweep_flags_reject_bad_input(setup):
    from transfer_tf.bin import sweep

    root, records, pretrain_dir = setup
    flags = types.SimpleNamespace(
        dataset="sklearn_digits",
        records_dir=str(records),
        results_dir=str(root / "bad"),
        cpu_devices=1,
        dropout_rate=None,
        aux_head=None,
        label_smoothing=None,
        init_model_dir=None,
        init_saved_model=None,
        init_keras_model=None,
        feature_layer=None,
        scaling=None,
        model="mobilenet_v1",
        weights=None,
        checkpoint=None,
        model_label=None,
        input_size=None,
        bn_scale=True,
        learning_rates=None,
        weight_decays=None,
        num_learning_rates=1,
        num_weight_decays=1,
        no_decay_cell=True,
        train_steps=2,
        batch_size=8,
        per_class=None,
        seed=0,
        work_dir=None,
        eval_every=None,
        checkpoint_every=None,
        log_every=None,
        keep_runs=False,
    )
    with pytest.raises(ValueError, match="fine-tuning needs pretrained weights"):
        sweep.sweep_from_flags("finetune", flags)
    flags.init_model_dir, flags.model = str(pretrain_dir), None
    flags.input_size = 64
    with pytest.raises(ValueError, match="--input_size=64 differs from the pretraining run's 32"):
        sweep.sweep_from_flags("finetune", flags)
    flags.input_size, flags.learning_rates = None, ["0.1"]
    with pytest.raises(ValueError, match="both --learning_rates and --weight_decays"):
        sweep.sweep_from_flags("finetune", flags)
    flags.model, flags.init_model_dir, flags.learning_rates = "mobilenet_v1", None, None
    flags.dataset = "no_such_dataset"
    with pytest.raises(ValueError, match="no_such_dataset"):
        sweep.sweep_from_flags("scratch", flags)
    assert not (root / "bad").exists()


def test_finetune_from_an_exported_saved_model(setup):
    """A transfer-export SavedModel is a fine-tuning source: its network is rebuilt from the
    registry with the SavedModel's own weights (features equal the `features` signature's), and
    a one-cell sweep from it runs to its final cell."""
    import tensorflow as tf

    from transfer_tf.models import build_model, preprocess
    from transfer_tf.training import weights
    from transfer_tf.training.export import export_model_dir

    root, records, pretrain_dir = setup
    export_dir = str(root / "exported")
    export_model_dir(str(pretrain_dir), export_dir)
    target = build_model("mobilenet_v1", 10, input_size=32)
    copied = weights.init_from_saved_model(target, export_dir)
    assert copied == len(weights.trunk_weights(target)) > 50
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    expected = (
        tf.saved_model.load(export_dir)
        .signatures["features"](images=tf.constant(images))["features"]
        .numpy()
    )
    got = target(preprocess(tf.cast(images, tf.float32), "inception"), training=False)["features"]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="only SavedModels written by transfer-export"):
        weights.init_from_saved_model(target, str(root))

    results_dir = root / "from_saved_model"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.finetune",
            f"--init_saved_model={export_dir}",
            "--dataset=sklearn_digits",
            f"--records_dir={records}",
            f"--results_dir={results_dir}",
            "--learning_rates=0.1",
            "--weight_decays=0",
            f"--train_steps={STEPS}",
            "--batch_size=16",
            "--eval_every=4",
            "--checkpoint_every=4",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = results.load(str(results_dir))
    assert sorted(frame["stage"]) == ["final", "grid"]
    assert set(frame["model"]) == {"mobilenet_v1_fair"} and set(frame["settings"]) == {"fair"}
    assert frame["test_metric"].dropna().between(0, 1).all()
    both = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.finetune",
            f"--init_saved_model={export_dir}",
            f"--init_model_dir={pretrain_dir}",
            "--dataset=sklearn_digits",
            f"--records_dir={records}",
            f"--results_dir={results_dir}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode != 0 and "not both" in both.stderr


def test_cache_decoded_gives_the_same_cells(setup):
    """--cache_decoded changes how the training input is read, not what it yields: the same
    cell ids, validation metric and history with the cache on and off."""
    from transfer_tf.protocols import finetune
    from transfer_tf.protocols.finetune_grid import scratch_grid
    from transfer_tf.protocols.sources import source_from_registry

    root, records, _ = setup
    settings = {"bn_scale": True, "dropout_rate": 0.0, "aux_head": False, "label_smoothing": 0.0}
    source = source_from_registry("mobilenet_v1", weights=None, input_size=32, settings=settings)
    recipe = finetune.make_recipe(
        "scratch",
        source,
        dataset="sklearn_digits",
        grid=scratch_grid(1, 1),
        train_steps=4,
        batch_size=16,
        per_class=None,
    )
    cells = {}
    for mode in ("off", "on"):
        result = finetune.run_sweep(
            recipe,
            records_dir=str(records),
            results_dir=str(root / f"cache_{mode}"),
            options=finetune.RunOptions(eval_every=2, cache_decoded=mode),
            progress=False,
            scope="grid",
        )
        (cells[mode],) = result.grid
    for key in ("cell_id", "hparams", "val_metric", "history", "steps"):
        assert cells["on"][key] == cells["off"][key], key
