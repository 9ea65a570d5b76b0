"""Every manual-download entry through a small fake folder in its official layout."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.io import savemat

from transfer_tf.data import (
    DATASETS,
    CountMismatchError,
    ManualSource,
    make_input,
    read_manifest,
    write_tfrecords,
)
from transfer_tf.data.manual import CCT20_CATEGORIES, ManualDataError

MANUAL = [name for name, spec in DATASETS.items() if isinstance(spec.source, ManualSource)]
RNG = np.random.default_rng(0)


def _image(path, fmt="JPEG", mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (9, 11) if mode == "L" else (9, 11, 3)
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(path, format=fmt)


def _lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# Each fake returns (manual_dir, {source split: {id: label}}) for what the reader should find.


def fake_birdsnap(tmp):
    root = tmp / "birdsnap"
    species = [f"{i}\tBird {i}\tAvis {i}\tBird_{i}" for i in range(1, 501)]
    _lines(root / "species.txt", ["id\tcommon\tscientific\tdir", *species])
    rows, tests, want = [], [], {"train": {}, "test": {}}
    for sid in (1, 2, 3):
        for k in range(3):
            path = f"Bird_{sid}/{k}.jpg"
            rows.append(f"http://x/{sid}{k}\tmd5\t{path}\t{sid}\t1\t2\t3\t4")
            _image(root / "download" / "images" / path)
            split = "test" if k == 0 else "train"
            if split == "test":
                tests.append(path)
            want[split][path] = sid - 1
    _lines(root / "images.txt", ["url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2", *rows])
    _lines(root / "test_images.txt", ["path", *tests])
    return tmp, want


def fake_fgvc_aircraft(tmp):
    data = tmp / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "Falcon 2000", *(f"V{i}" for i in range(98))]
    _lines(data / "variants.txt", variants)
    want = {}
    for split, offset in (("train", 0), ("val", 100), ("test", 200)):
        lines, want[split] = [], {}
        for k, variant in enumerate(["707-320", "Falcon 2000", "707-320"]):
            image_id = f"{offset + k:07d}"
            lines.append(f"{image_id} {variant}")
            _image(data / "images" / f"{image_id}.jpg")
            want[split][image_id] = variants.index(variant)
        _lines(data / f"images_variant_{split}.txt", lines)
    return tmp / "fgvc-aircraft-2013b", want


def _cars_annos(path, rows):
    dtype = [
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("fname", "O"),
    ]
    annos = np.array([(1, 2, 8, 7, cls, fname) for fname, cls in rows], dtype=dtype)
    savemat(path, {"annotations": annos.reshape(1, -1)})


def fake_stanford_cars(tmp):
    root = tmp / "cars"
    (root / "devkit").mkdir(parents=True)
    names = np.array([f"Make Model {i}" for i in range(196)], dtype=object)
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    want = {"train": {}, "test": {}}
    for split, folder, annos in (
        ("train", "cars_train", root / "devkit" / "cars_train_annos.mat"),
        ("test", "cars_test", root / "cars_test_annos_withlabels.mat"),
    ):
        rows = [(f"{k + 1:05d}.jpg", cls) for k, cls in enumerate([1, 196, 5, 1])]
        for fname, cls in rows:
            _image(root / folder / fname)
            want[split][f"{folder}/{fname}"] = cls - 1
        _cars_annos(annos, rows)
    return root, want


def fake_caltech_camera_traps(tmp):
    root = tmp / "CCT-20"
    want = {}
    for split in ("train", "cis_val", "cis_test"):
        annotations, want[split] = [], {}
        for k, category in enumerate([1, 99, 30, 33]):  # 30 = empty frame: dropped
            image_id = f"{split}-{k}"
            annotations.append({"id": k, "image_id": image_id, "category_id": category})
            _image(root / "eccv_18_all_images_sm" / f"{image_id}.jpg")
            if category != 30:
                want[split][image_id] = CCT20_CATEGORIES.index(category)
        doc = {
            "images": [],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "opossum"}, {"id": 30, "name": "empty"}],
        }
        path = root / "eccv_18_annotation_files" / f"{split}_annotations.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
    return tmp, want


def fake_aptos2019(tmp):
    root = tmp / "aptos2019-blindness-detection"
    rows, want = ["id_code,diagnosis"], {"train": {}}
    for k in range(25):
        code = f"a{k:03x}"
        rows.append(f"{code},{k % 5}")
        _image(root / "train_images" / f"{code}.png", fmt="PNG")
        want["train"][code] = k % 5
    _lines(root / "train.csv", rows)
    return root, want


def fake_human_protein_atlas(tmp):
    root = tmp / "hpa"
    rows, want = ["Id,Target"], {"train": {}}
    for k in range(10):
        image_id = f"id-{k}"
        targets = sorted({k % 28, (3 * k + 1) % 28})
        rows.append(f"{image_id},{' '.join(map(str, targets))}")
        for stain in ("red", "green", "blue", "yellow"):
            _image(root / "train" / f"{image_id}_{stain}.png", fmt="PNG", mode="L")
        want["train"][image_id] = tuple(targets)
    _lines(root / "train.csv", rows)
    return root, want


def fake_siim_isic(tmp):
    root = tmp / "jpeg-melanoma-512x512"
    rows = ["image_name,patient_id,sex,target,tfrecord"]
    folds = {}
    for k in range(20):
        name, fold = f"ISIC_{k:07d}", (k % 5) if k < 19 else -1  # fold -1: in no split
        rows.append(f"{name},P{k // 2},male,{k % 2},{fold}")
        _image(root / "train" / f"{name}.jpg")
        folds[name] = fold
    _lines(root / "train.csv", rows)
    # Oracle: Fang et al.'s melanoma.py fold choice.
    np.random.seed(23)
    train_folds = np.random.choice(
        sorted({f for f in folds.values() if f >= 0}), size=4, replace=False
    ).tolist()
    labels = {name: int(name[-1]) % 2 for name in folds}
    want = {
        "train": {n: labels[n] for n, f in folds.items() if f in train_folds},
        "test": {n: labels[n] for n, f in folds.items() if f >= 0 and f not in train_folds},
    }
    return tmp, want


FAKES = {name[len("fake_") :]: fn for name, fn in globals().items() if name.startswith("fake_")}


def test_every_manual_entry_has_a_fake():
    assert set(MANUAL) == set(FAKES)


def _ids_and_labels(tmp, name, splits, multi_label):
    out = {}
    for split in splits:
        manifest = read_manifest(tmp, name, split)
        for shard in manifest["shards"]:
            for record, label in zip(
                tf.data.TFRecordDataset(str(tmp / name / shard["file"])),
                shard["labels"],
                strict=True,
            ):
                ex = tf.train.Example.FromString(record.numpy()).features.feature
                example_id = ex["image/id"].bytes_list.value[0].decode()
                stored = (
                    tuple(ex["image/class/labels"].int64_list.value)
                    if multi_label
                    else ex["image/class/label"].int64_list.value[0]
                )
                assert stored == (tuple(label) if multi_label else label)
                out[example_id] = stored
    return out


@pytest.mark.parametrize("name", MANUAL)
def test_manual_entry_through_the_pipeline(name, tmp_path):
    spec = DATASETS[name]
    manual_dir, want = FAKES[name](tmp_path / "download")
    records = tmp_path / "records"
    try:
        write_tfrecords(name, records, manual_dir=manual_dir)
        status = "passed"
    except CountMismatchError:
        status = "failed"
    # A few fake images fail the count check, unless the registry has no sizes (SIIM-ISIC) and
    # every class has training examples.
    classes = {c for label in want[spec.train].values() for c in np.ravel(label)}
    sized = spec.train_size is not None or spec.test_size is not None
    assert status == ("failed" if sized or len(classes) < spec.num_classes else "passed")
    assert read_manifest(records, name, "test")["count_check"]["status"] == status
    # Our splits partition the source splits: train (+ its holdouts) and any creators' splits.
    from_train = {}
    for split in ("train", "val", "test"):
        if getattr(spec, split) == spec.train or not isinstance(getattr(spec, split), str):
            from_train.update(_ids_and_labels(records, name, [split], spec.multi_label))
        else:
            assert (
                _ids_and_labels(records, name, [split], spec.multi_label)
                == want[getattr(spec, split)]
            )
    assert from_train == want[spec.train]
    ds = make_input(
        records,
        name,
        "train+val",
        image_size=10,
        preprocessing="inception",
        training=True,
        batch_size=4,
    )
    n = sum(int(y.shape[0]) for _, y in ds)
    assert (
        n
        == read_manifest(records, name, "train")["num_examples"]
        + read_manifest(records, name, "val")["num_examples"]
    )


def test_hpa_rgb_is_the_red_green_blue_stains(tmp_path):
    manual_dir, _ = fake_human_protein_atlas(tmp_path / "download")
    write_tfrecords("human_protein_atlas", tmp_path / "r", manual_dir=manual_dir, max_per_class=50)
    manifest = read_manifest(tmp_path / "r", "human_protein_atlas", "train")
    record = next(
        iter(
            tf.data.TFRecordDataset(
                str(tmp_path / "r" / "human_protein_atlas" / manifest["shards"][0]["file"])
            )
        )
    )
    ex = tf.train.Example.FromString(record.numpy()).features.feature
    image = tf.io.decode_png(ex["image/encoded"].bytes_list.value[0]).numpy()
    base = manual_dir / "train" / ex["image/id"].bytes_list.value[0].decode()
    for c, stain in enumerate(("red", "green", "blue")):
        np.testing.assert_array_equal(image[..., c], np.asarray(Image.open(f"{base}_{stain}.png")))


def test_no_manual_dir_names_the_source(tmp_path):
    with pytest.raises(ManualDataError, match="fgvc-aircraft-2013b.tar.gz"):
        write_tfrecords("fgvc_aircraft", tmp_path)


def test_wrong_folder_names_the_missing_files(tmp_path):
    manual_dir, _ = fake_fgvc_aircraft(tmp_path / "download")
    (manual_dir / "data" / "images_variant_val.txt").unlink()
    with pytest.raises(ManualDataError, match="images_variant_val.txt"):
        write_tfrecords("fgvc_aircraft", tmp_path / "r", manual_dir=manual_dir)
    with pytest.raises(ManualDataError, match="does not contain devkit/cars_meta.mat"):
        write_tfrecords("stanford_cars", tmp_path / "r", manual_dir=tmp_path)


def test_missing_images_are_named_or_recorded(tmp_path):
    manual_dir, want = fake_birdsnap(tmp_path / "download")
    gone = manual_dir / "birdsnap" / "download" / "images" / "Bird_2" / "1.jpg"
    gone.unlink()
    with pytest.raises(ManualDataError, match="Bird_2/1.jpg"):
        write_tfrecords("birdsnap", tmp_path / "r", manual_dir=manual_dir)
    manifests = write_tfrecords(
        "birdsnap", tmp_path / "r", manual_dir=manual_dir, allow_missing=True, max_per_class=10
    )
    assert manifests["train"]["missing_files"] == ["Bird_2/1.jpg"]
    assert (
        manifests["train"]["num_examples"] + manifests["val"]["num_examples"]
        == len(want["train"]) - 1
    )


def test_corrupt_source_image_names_the_file(tmp_path):
    manual_dir, _ = fake_aptos2019(tmp_path / "download")
    bad = manual_dir / "train_images" / "a003.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match="a003.png cannot be decoded"):
        write_tfrecords("aptos2019", tmp_path / "r", manual_dir=manual_dir, max_per_class=10)
