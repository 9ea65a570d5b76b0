"""Sources from outside the registry (a TF Hub-style SavedModel, a .keras file) and the whole path a
user takes with their own photos: folder / CSV -> records -> features -> logistic regression ->
report, with no code edits and no registry entry."""

import json
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from transfer_tf import results
from transfer_tf.data import get_dataset, make_user_dataset, read_csv, scan_image_folder
from transfer_tf.metrics import METRICS
from transfer_tf.protocols import features, keras_source, logreg
from transfer_tf.study import model_table
from transfer_tf.study.external import parse_external_source

SIZE = 32  # the toy sources' input size
QUIET = lambda _: None  # noqa: E731
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # real photos shipped with scikit-image
DATASETS = ("my_photos", "my_split_photos", "my_panels")


def _crops(name: str, count: int, seed: int, side=(96, 160)):
    image = getattr(skimage.data, name)()
    rng = np.random.RandomState(seed)
    for _ in range(count):
        s = rng.randint(*side)
        y, x = rng.randint(0, image.shape[0] - s), rng.randint(0, image.shape[1] - s)
        yield image[y : y + s, x : x + s]


def _save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Three datasets of real photos, made as transfer-make-tfrecords makes them."""
    root = tmp_path_factory.mktemp("own")
    for k, name in enumerate(PHOTOS):  # ROOT/<class>/<image>
        for i, crop in enumerate(_crops(name, 10, seed=k)):
            _save(crop, root / "photos" / name / f"{i:02d}.{'png' if i % 3 else 'jpg'}")
    for k, name in enumerate(PHOTOS):  # ROOT/{train,val,test}/<class>/<image>
        crops = list(_crops(name, 9, seed=10 + k))
        for i, crop in enumerate(crops):
            split = "train" if i < 5 else "val" if i < 7 else "test"
            _save(crop, root / "split_photos" / split / name / f"{i}.jpg")
    # A CSV of two-photo panels, multi-label: each panel shows the classes it was cut from.
    pairs = [
        ("chelsea",),
        ("coffee",),
        ("rocket",),
        ("chelsea", "coffee"),
        ("coffee", "rocket"),
        ("chelsea", "rocket"),
    ]
    rows = ["path,labels,split"]
    for i in range(24):
        names = pairs[i % 6]
        parts = [next(iter(_crops(n, 1, seed=100 + i, side=(80, 81)))) for n in names]
        _save(np.concatenate(parts, axis=1), root / "panels" / f"p{i:02d}.jpg")
        rows.append(f"panels/p{i:02d}.jpg,{'|'.join(names)},{'test' if i >= 18 else 'train'}")
    (root / "panels.csv").write_text("\n".join(rows) + "\n")

    records = root / "records"
    make_user_dataset("my_photos", records, scan_image_folder(root / "photos"), log=QUIET)
    make_user_dataset(
        "my_split_photos", records, scan_image_folder(root / "split_photos"), log=QUIET
    )
    make_user_dataset("my_panels", records, read_csv(root / "panels.csv"), log=QUIET)
    return root


# ---- toy sources from outside the registry -----------------------------------------------------


def _toy_net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input([None, None, 3])
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))


class _HubStyle(tf.Module):
    """A TF Hub image feature-vector model's interface: float32 images in [0, 1] of any size,
    signature "image_feature_vector", input "inputs", output "feature_vector"."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.trunk = keras.Model(net.input, net.get_layer("pool").output)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="inputs")])
    def image_feature_vector(self, inputs):
        return {"feature_vector": self.trunk(inputs * 2.0 - 1.0), "other": inputs[:, 0, 0]}


def _eval_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Oracle of the evaluation input: central 87.5% crop, bilinear resize, rounded to uint8."""
    h, w = image.shape[:2]
    ch, cw = int(np.round(h * 0.875)), int(np.round(w * 0.875))
    crop = image[(h - ch) // 2 :][:ch, (w - cw) // 2 :][:, :cw].astype(np.float32)
    resized = tf.image.resize(crop, [size, size], method="bilinear").numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def _photo(root, image_id):
    # The records keep a plain JPEG / PNG file as it is: decoded as the input pipeline does.
    return tf.io.decode_image((root / "photos" / image_id).read_bytes(), channels=3).numpy()


@pytest.fixture(scope="module")
def toys(own):
    net = _toy_net()
    hub_dir = own / "hub_style"
    module = _HubStyle(net)
    tf.saved_model.save(
        module, str(hub_dir), signatures={"image_feature_vector": module.image_feature_vector}
    )
    net.save(str(own / "toy.keras"))
    return dict(net=net, hub=str(hub_dir), keras=str(own / "toy.keras"))


def test_tf_hub_style_saved_model_with_flags_for_size_scaling_and_key(own, toys, tmp_path):
    manifest = features.extract_features(
        toys["hub"],
        str(own / "records"),
        "my_photos",
        str(tmp_path),
        signature="image_feature_vector",
        output_key="feature_vector",
        input_size=SIZE,
        scaling="unit",
        splits=["test"],
        log=QUIET,
        model="hub_toy",
    )
    assert manifest["image_size"] == [SIZE, SIZE] and manifest["input_dtype"] == "float32"
    assert (manifest["scaling"], manifest["output_key"], manifest["input_key"]) == (
        "unit",
        "feature_vector",
        "inputs",
    )
    assert manifest["metric"] == "top1" and manifest["num_classes"] == 4
    with np.load(tmp_path / "test.npz") as data:
        feats, ids, labels = data["features"], data["ids"], data["labels"]
    assert feats.shape == (8, 6) and sorted(np.bincount(labels)) == [2, 2, 2, 2]
    trunk = keras.Model(toys["net"].input, toys["net"].get_layer("pool").output)
    x = np.stack([_eval_uint8(_photo(own, i), SIZE) for i in ids]).astype(np.float32)
    np.testing.assert_allclose(feats, trunk(x / 255.0 * 2.0 - 1.0).numpy(), rtol=1e-4, atol=1e-5)

    # What the SavedModel does not record must be given, and what it does must not be.
    hub = toys["hub"]
    with pytest.raises(features.SignatureError, match="does not fix its input size.*--input_size"):
        features.load_signature(hub, "image_feature_vector", "feature_vector", scaling="unit")
    with pytest.raises(features.SignatureError, match="takes float32 images.*--scaling"):
        features.load_signature(hub, "image_feature_vector", "feature_vector", input_size=SIZE)
    with pytest.raises(features.SignatureError, match=r"outputs \['feature_vector', 'other'\]"):
        features.load_signature(
            hub, "image_feature_vector", "features", input_size=SIZE, scaling="unit"
        )
    with pytest.raises(ValueError, match="unknown scaling 'percent'; choose none, unit or"):
        features.load_signature(
            hub, "image_feature_vector", "feature_vector", input_size=SIZE, scaling="percent"
        )


def test_keras_file_as_fixed_features_and_as_the_start_of_fine_tuning(own, toys, tmp_path):
    source = keras_source.load_keras_features(
        toys["keras"], "pool", scaling="inception", input_size=SIZE
    )
    manifest = features.extract_features(
        source, str(own / "records"), "my_photos", str(tmp_path / "pool"), splits=["val"], log=QUIET
    )
    assert manifest["model"] == "toy" and manifest["feature_layer"] == "pool"
    with np.load(tmp_path / "pool" / "val.npz") as data:
        pooled, ids = data["features"], data["ids"]
    trunk = keras.Model(toys["net"].input, toys["net"].get_layer("pool").output)
    x = np.stack([_eval_uint8(_photo(own, i), SIZE) for i in ids]).astype(np.float32)
    np.testing.assert_allclose(pooled, trunk(x / 127.5 - 1.0).numpy(), rtol=1e-4, atol=1e-5)
    # A convolutional map is global-average-pooled: the same as the model's own pooling layer.
    conv = keras_source.load_keras_features(
        toys["keras"], "conv", scaling="inception", input_size=SIZE
    )
    assert conv.description["pooling"] == "global average"
    np.testing.assert_allclose(conv.features(tf.constant(x.astype(np.uint8))), pooled, atol=1e-5)
    with pytest.raises(features.SignatureError, match=r"no layer named 'fc7'.*pool \(None, 6\)"):
        keras_source.load_keras_features(toys["keras"], "fc7", scaling="none", input_size=SIZE)
    with pytest.raises(features.SignatureError, match="takes float32 images.*--scaling"):
        keras_source.load_keras_features(toys["keras"], "pool", scaling=None, input_size=SIZE)

    # Fine-tuning starts from the file's weights up to the layer, with a new zero classifier.
    backbone = keras_source.keras_backbone(toys["keras"], "pool", 4, input_size=SIZE)
    assert set(backbone.output) == {"logits", "features"}
    np.testing.assert_array_equal(backbone.get_layer("logits").get_weights()[0], np.zeros((6, 4)))
    out = backbone(x / 127.5 - 1.0)
    np.testing.assert_allclose(out["features"], pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["logits"], np.zeros((len(x), 4)))

    # A short fine-tune on the user's dataset through the training loop.
    from transfer_tf.training import TrainConfig, Trainer

    spec = get_dataset("my_photos", records_dir=own / "records")
    config = TrainConfig(
        model="toy_keras",
        dataset="my_photos",
        records_dir=str(own / "records"),
        num_classes=spec.num_classes,
        metric=spec.metric,
        input_size=SIZE,
        preprocessing="inception",
        train_split="train",
        eval_split="val",
        batch_size=8,
        train_steps=4,
        learning_rate=0.05,
        optimizer="sgd_nesterov",
        lr_schedule="cosine",
        checkpoint_every=4,
        log_every=2,
        eval_every=0,
    )
    trainer = Trainer(
        config,
        str(tmp_path / "run"),
        model_builder=keras_source.keras_model_builder(toys["keras"], "pool"),
    )
    result = trainer.train()
    assert result.step == 4 and 0.0 <= result.final_metric <= 1.0
    tuned = trainer.model
    assert np.abs(tuned.get_layer("logits").get_weights()[0]).sum() > 0
    y_true, scores = trainer.predict("test")
    assert scores.shape == (8, 4) and sorted(np.bincount(y_true)) == [2, 2, 2, 2]


def test_model_table_takes_a_given_source_accuracy(tmp_path):
    models, given = model_table.parse_models(
        [
            "efficientnet_lite0:efficientnet_lite0:public",
            "hub_toy::external:0.5",
            "keras_toy::external:0.25",
        ],
        top1_sources=["hub_toy=model card"],
        source_datasets=["keras_toy=places365"],
    )
    path = model_table.write_model_table(str(tmp_path), models, given)
    table = pd.read_csv(path).set_index("model")
    assert table.loc["hub_toy", "source_top1"] == 0.5
    assert table.loc["hub_toy", "top1_source"] == "model card"
    assert table.loc["keras_toy", "top1_source"] == model_table.GIVEN_SOURCE
    assert table.loc["keras_toy", "source_dataset"] == "places365"
    assert table.loc["efficientnet_lite0", "settings"] == "public"
    assert 0.7 < table.loc["efficientnet_lite0", "source_top1"] < 0.8  # published, registry
    with pytest.raises(
        ValueError, match=r"must be a fraction in \[0, 1\] \(e.g. 0.762 for 76.2%\)"
    ):
        model_table.write_model_table(
            str(tmp_path), *model_table.parse_models(["x::external:76.2"])
        )
    with pytest.raises(ValueError, match="give its source top-1"):
        model_table.write_model_table(str(tmp_path), [("x", "", "external")])


def test_external_source_entries_of_a_study(toys):
    hub = parse_external_source(
        f"hub_net={toys['hub']},signature=image_feature_vector,output_key=feature_vector,"
        "input_size=224,scaling=unit,top1=0.803,top1_source=its model card"
    )
    assert hub.extract_flags() == [
        f"--saved_model={toys['hub']}",
        "--model_label=hub_net",
        "--signature=image_feature_vector",
        "--output_key=feature_vector",
        "--input_size=224",
        "--scaling=unit",
    ]
    assert hub.model_table_entry() == "hub_net::external:0.803"
    assert hub.given() == {"top1": "0.803", "top1_source": "its model card"}
    net = parse_external_source(f"my_net={toys['keras']},feature_layer=pool,scaling=none")
    assert net.extract_flags() == [
        f"--keras_model={toys['keras']}",
        "--model_label=my_net",
        "--feature_layer=pool",
        "--scaling=none",
    ]
    assert net.model_table_entry() == "my_net::external" and net.given() is None
    for entry, message in [
        ("no_path", "expected LABEL=PATH"),
        ("x=/no/such/model", "/no/such/model does not exist"),
        (f"x={toys['keras']}", "a .keras file needs feature_layer=NAME"),
        (f"x={toys['hub']},feature_layer=pool", "feature_layer is for .keras files"),
        (f"x={toys['hub']},size=3", "'size=3' is not option=value"),
        (f"x={toys['hub']},top1=80.3", r"must be a fraction in \[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_external_source(entry)


# ---- end to end, as a user ----------------------------------------------------------------------


def _run(*argv):
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_own_photos_to_a_report_with_no_code_edits(own, toys, tmp_path):
    from transfer_tf.training.export import export_registry_model

    records, study = own / "records", tmp_path
    lite0 = export_registry_model("efficientnet_lite0", str(study / "saved_models" / "lite0"))
    source = features.load_signature(lite0)
    for name in DATASETS:
        features.extract_features(
            source,
            str(records),
            name,
            str(study / "features" / "lite0" / name),
            log=QUIET,
            model="efficientnet_lite0",
        )
    # transfer-extract-features finds the user's dataset by name in --records_dir and reads a TF
    # Hub-style SavedModel with the flags of a study's --external_models entry.
    hub = parse_external_source(
        f"hub_toy={toys['hub']},signature=image_feature_vector,output_key=feature_vector,"
        f"input_size={SIZE},scaling=unit,top1=0.5,top1_source=a TF Hub model card"
    )
    net = parse_external_source(
        f"keras_toy={toys['keras']},feature_layer=pool,scaling=inception,input_size={SIZE},top1=0.3"
    )
    for entry in (hub, net):
        _run(
            "transfer_tf.bin.extract_features",
            *entry.extract_flags(),
            f"--records_dir={records}",
            "--dataset=my_photos",
            f"--features_dir={study / 'features' / entry.label / 'my_photos'}",
        )
    externals = {
        "hub_toy": features.load_signature(
            toys["hub"], "image_feature_vector", "feature_vector", input_size=SIZE, scaling="unit"
        ),
        "keras_toy": keras_source.load_keras_features(
            toys["keras"], "pool", scaling="inception", input_size=SIZE
        ),
    }
    for label, external in externals.items():
        for name in DATASETS:
            if name != "my_photos":  # made by the CLI above
                features.extract_features(
                    external,
                    str(records),
                    name,
                    str(study / "features" / label / name),
                    log=QUIET,
                    model=label,
                )
    for label, external in externals.items():  # the CLI's features are the in-process ones
        with np.load(study / "features" / label / "my_photos" / "test.npz") as data:
            cli_features = data["features"]
        again = features.extract_split(external, str(records), "my_photos", "test")[0]
        np.testing.assert_allclose(cli_features, again["features"], rtol=1e-5, atol=1e-6)
    keras_manifest = json.loads((study / "features/keras_toy/my_photos/manifest.json").read_text())
    assert keras_manifest["kind"] == "keras" and keras_manifest["feature_layer"] == "pool"

    out = _run(
        "transfer_tf.bin.logreg",
        f"--features_dir={study / 'features/lite0/my_photos'}",
        f"--results_dir={study / 'results'}",
        "--architecture=efficientnet_lite0",
        "--settings=public",
        "--num_l2=7",
    )
    assert "logreg efficientnet_lite0 my_photos" in out
    runs = [("lite0", "my_split_photos"), ("lite0", "my_panels")]
    runs += [(label, name) for label in externals for name in DATASETS]
    for label, name in runs:
        settings = "public" if label == "lite0" else "external"
        folder = str(study / "features" / label / name)
        manifest = logreg.load_manifest(folder)
        logreg.run_logreg(
            {s: logreg.load_features(folder, s) for s in ("train", "val", "test")},
            str(study / "results"),
            model=manifest["model"],
            dataset=name,
            metric=manifest["metric"],
            settings=settings,
            l2s=logreg.l2_grid(7, 1e-4, 1e2),
            architecture="efficientnet_lite0" if label == "lite0" else None,
            progress=False,
            test_ids=logreg.load_ids(folder, "test"),
        )
    # A short fine-tune on the user's photos, from the .keras file, through the binary.
    out = _run(
        "transfer_tf.bin.finetune",
        f"--init_keras_model={toys['keras']}",
        "--feature_layer=pool",
        "--scaling=inception",
        f"--input_size={SIZE}",
        "--dataset=my_photos",
        f"--records_dir={records}",
        f"--results_dir={study / 'results'}",
        "--model_label=keras_toy",
        "--learning_rates=0.05",
        "--weight_decays=0",
        "--train_steps=4",
        "--batch_size=8",
        "--eval_every=2",
        "--checkpoint_every=4",
    )
    assert "finetune: best learning_rate=0.05" in out
    _run(
        "transfer_tf.study.model_table",
        f"--study_dir={study}",
        "--model=efficientnet_lite0:efficientnet_lite0:public",
        f"--model={hub.model_table_entry()}",
        f"--model={net.model_table_entry()}",
        f"--top1_source=hub_toy={hub.option('top1_source')}",
    )
    _run(
        "transfer_tf.bin.analyze",
        f"--results_dir={study / 'results'}",
        f"--model_table={study / 'model_table.csv'}",
        f"--output_dir={study / 'report'}",
        "--num_bootstrap=50",
        "--permutation_samples=100",
    )

    frame = results.load(str(study / "results"))
    tuned = frame[(frame.protocol == "finetune") & (frame.stage == "final")]
    assert list(tuned["model"]) == ["keras_toy"] and list(tuned["settings"]) == ["external"]
    assert 0.0 <= tuned["test_metric"].iloc[0] <= 1.0 and tuned["metric"].iloc[0] == "top1"
    frame = frame[frame.protocol == "logreg"]
    final = frame[frame.stage == "final"].set_index(["model", "dataset"])
    models = ("efficientnet_lite0", "hub_toy", "keras_toy")
    assert set(final.index) == {(m, d) for m in models for d in DATASETS}
    # ImageNet features tell the four photos apart; the panels are scored with 11-point mAP.
    assert final.loc[("efficientnet_lite0", "my_photos"), "test_metric"] >= 0.875
    assert final.loc[("efficientnet_lite0", "my_split_photos"), "test_metric"] >= 0.875
    panels = final.loc[("efficientnet_lite0", "my_panels")]
    assert panels["metric"] == "map11"
    predictions = results.load_predictions(panels["predictions_path"])
    assert predictions["y_true"].shape == (6, 3)
    assert panels["test_metric"] == pytest.approx(
        METRICS["map11"](predictions["y_true"], predictions["y_pred"])
    )
    assert panels["test_metric"] > 0.5
    # The report: every model x dataset, the source accuracies from the model table, and the
    # correlation of source accuracy with transfer accuracy over the three sources.
    best = pd.read_csv(study / "report" / "best_test_metric.csv").set_index(["model", "dataset"])
    assert set(best.index) == set(final.index)
    assert best.loc[("hub_toy", "my_photos"), "source_top1"] == 0.5
    assert best.loc[("keras_toy", "my_panels"), "source_top1"] == 0.3
    table = pd.read_csv(study / "model_table.csv").set_index("model")
    assert table.loc["hub_toy", "top1_source"] == "a TF Hub model card"
    headline = json.loads((study / "report" / "headline.json").read_text())
    fits = [fit for key, fit in headline["correlations"].items() if key.startswith("logreg")]
    assert fits and fits[0]["n_models"] == 3 and -1.0 <= fits[0]["r"] <= 1.0
    report = (study / "report" / "report.md").read_text()
    assert "my_photos" in report and "hub_toy" in report
    spec = json.loads((records / "my_panels" / "dataset_spec.json").read_text())
    assert spec["class_names"] == ["chelsea", "coffee", "rocket"] and spec["metric"] == "map11"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_study_of_own_photos_with_external_sources(own, toys, tmp_path):
    """transfer-study with the user's photo folder as the target, the TF-Hub-style SavedModel
    (another signature name and output key) and the .keras file as sources: features, logistic
    regression, a short fine-tune of the .keras file, the model table and the report."""
    grid = tmp_path / "tiny_grid.cfg"
    grid.write_text(
        "--learning_rates=0.05\n--weight_decays=0\n--train_steps=4\n--batch_size=8\n"
        "--eval_every=2\n--checkpoint_every=4\n"
    )
    study = tmp_path / "study"
    out = _run(
        "transfer_tf.bin.study",
        f"--study_dir={study}",
        "--target_datasets=",
        f"--own_datasets=my_photos={own / 'photos'}",
        f"--external_models=hub_toy={toys['hub']},signature=image_feature_vector,"
        f"output_key=feature_vector,input_size={SIZE},scaling=unit,top1=0.5,top1_source=a card",
        f"--external_models=keras_toy={toys['keras']},feature_layer=pool,input_size={SIZE},"
        "scaling=inception,top1=0.3",
        "--finetune_models=keras_toy",
        f"--finetune_flagfile={grid}",
        "--logreg_num_l2=5",
        "--analyze_flags=--num_bootstrap=50,--permutation_samples=100",
    )
    assert "report" in out
    frame = results.load(str(study / "results"))
    final = frame[frame.stage == "final"]
    assert sorted(zip(final.protocol, final.model, strict=True)) == [
        ("finetune", "keras_toy"),
        ("logreg", "hub_toy"),
        ("logreg", "keras_toy"),
    ]
    assert set(final.dataset) == {"my_photos"} and set(final.settings) == {"external"}
    table = pd.read_csv(study / "model_table.csv").set_index("model")
    assert table.loc["hub_toy", "source_top1"] == 0.5
    assert table.loc["hub_toy", "top1_source"] == "a card"
    assert (study / "report" / "report.html").exists()
