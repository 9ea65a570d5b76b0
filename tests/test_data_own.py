"""Your own data: image folders and CSV files as datasets (transfer-make-tfrecords --image_folder /
--csv), every image format to RGB, and bad input as one-line errors with nothing half-written."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer_tf.data import (
    UserDataError,
    get_dataset,
    make_input,
    make_user_dataset,
    read_csv,
    read_manifest,
    scan_image_folder,
)
from transfer_tf.data.images import prepare_image
from transfer_tf.data.pipeline import default_flip
from transfer_tf.data.registry import Holdout, UserSource
from transfer_tf.data.user_spec import own_dataset_flags

QUIET = lambda _: None  # noqa: E731


def _image(seed: int, size=(20, 24)) -> np.ndarray:
    """A smooth colour image (JPEG keeps it within a few grey levels)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.RandomState(seed)
    a, b, c = rng.uniform(0.05, 0.3, 3)
    return (
        np.stack(
            [128 + 100 * np.sin(a * x + seed), 128 + 100 * np.cos(b * y), 60 + 3 * c * (x + y)], -1
        )
        .clip(0, 255)
        .astype(np.uint8)
    )


def _save(array: np.ndarray, path, fmt="PNG", **kw) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kw)


def _folder(root, counts: dict[str, int], fmt="PNG", ext=".png", offset=0) -> dict[str, np.ndarray]:
    """root/<class>/<k>.png; returns id -> pixels."""
    pixels = {}
    for ci, (name, n) in enumerate(counts.items()):
        for k in range(n):
            array = _image(offset + 100 * ci + k)
            _save(array, root / name / f"{k:02d}{ext}", fmt)
            pixels[f"{root.name}/{name}/{k:02d}{ext}"] = array
    return pixels


def _records(records_dir, name, split):
    """(ids, labels, uint8 images) of a split, in record order, decoded by TensorFlow."""
    manifest = read_manifest(records_dir, name, split)
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/class/labels": tf.io.VarLenFeature(tf.int64),
    }
    ids, labels, images = [], [], []
    for shard in manifest["shards"]:
        for record in tf.data.TFRecordDataset(str(records_dir / name / shard["file"])):
            ex = tf.io.parse_single_example(record, spec)
            ids.append(ex["image/id"].numpy().decode())
            single = int(ex["image/class/label"])
            multi = tuple(tf.sparse.to_dense(ex["image/class/labels"]).numpy().tolist())
            labels.append(single if single >= 0 else multi)
            images.append(tf.io.decode_image(ex["image/encoded"], channels=3).numpy())
    return ids, labels, images


def _holdout_oracle(labels_by_index: list[int], fraction: float, seed: int, pool) -> list[int]:
    """Fang et al.'s per-class draw, written out: classes in label order, one RandomState."""
    rng = np.random.RandomState(seed)
    chosen = []
    for c in sorted(set(labels_by_index[i] for i in pool)):
        members = np.asarray([i for i in pool if labels_by_index[i] == c])
        chosen += list(rng.choice(members, int(fraction * len(members)), replace=False))
    return sorted(chosen)


# ---- image folders ---------------------------------------------------------------------------


def test_class_folders_draw_stratified_holdouts_and_write_the_spec(tmp_path):
    root = tmp_path / "photos"
    counts = {"zebra": 12, "Apple": 9, "cat": 10}  # sorted: Apple, cat, zebra
    pixels = _folder(root, counts)
    records = tmp_path / "records"
    content = make_user_dataset(
        "mine",
        records,
        scan_image_folder(root),
        val_fraction=0.25,
        test_fraction=0.2,
        seed=3,
        mirror_invariant=False,
        log=QUIET,
    )
    names = ["Apple", "cat", "zebra"]
    assert content["class_names"] == names and content["metric"] == "top1"

    # The oracle: the registry's Holdout rule on the files in sorted path order, test first.
    ids = sorted(f"{n}/{k:02d}.png" for n, c in counts.items() for k in range(c))
    labels = [names.index(i.split("/")[0]) for i in ids]
    test = _holdout_oracle(labels, 0.2, 3, list(range(len(ids))))
    rest = [i for i in range(len(ids)) if i not in test]
    val = _holdout_oracle(labels, 0.25, 3, rest)
    train = [i for i in rest if i not in val]
    expected = {"train": train, "val": val, "test": test}
    per_class = {"test": [1, 2, 2], "val": [2, 2, 2], "train": [6, 6, 8]}  # int() of each class
    for split, indices in expected.items():
        got_ids, got_labels, images = _records(records, "mine", split)
        assert sorted(got_ids) == sorted(ids[i] for i in indices)
        assert np.bincount(got_labels, minlength=3).tolist() == per_class[split]
        for image_id, label, image in zip(got_ids, got_labels, images, strict=True):
            assert names[label] == image_id.split("/")[0]
            np.testing.assert_array_equal(image, pixels[f"photos/{image_id}"])  # PNG kept exact
        m = read_manifest(records, "mine", split)
        assert m["class_names"] == names and m["count_check"]["status"] == "passed"
        assert m["skipped_files"] == []
        assert content["counts"][split] == len(indices)

    spec = get_dataset("mine", records_dir=records)
    assert spec.source == UserSource("class_folders", str(root))
    assert spec.val == Holdout(0.25, 3) and spec.test == Holdout(0.2, 3)
    assert (spec.num_classes, spec.metric, spec.train_size, spec.test_size) == (3, "top1", 26, 5)
    assert spec.mirror_invariant is False and default_flip("mine", records) is False
    on_disk = json.loads((records / "mine" / "dataset_spec.json").read_text())
    assert (
        on_disk["splits"]["val"]["rule"]
        == "fixed-seed holdout of 25% (seed 3) of source split 'all'"
    )
    with pytest.raises(KeyError, match="mine/dataset_spec.json does not exist"):
        get_dataset("mine", records_dir=tmp_path)

    # make_input reads it by name: eval order, labels of the ids.
    images, batch_labels = next(
        iter(
            make_input(
                records,
                "mine",
                "test",
                image_size=8,
                preprocessing="unit",
                training=False,
                batch_size=5,
            )
        )
    )
    assert images.shape == (5, 8, 8, 3) and float(tf.reduce_max(images)) <= 1.0
    test_ids, test_labels, _ = _records(records, "mine", "test")
    assert batch_labels.numpy().tolist() == test_labels

    # Remade with the same options: the same bytes (fixed seeds), replacing the old folder.
    shas = {s: [x["sha256"] for x in read_manifest(records, "mine", s)["shards"]] for s in expected}
    make_user_dataset(
        "mine",
        records,
        scan_image_folder(root),
        val_fraction=0.25,
        test_fraction=0.2,
        seed=3,
        mirror_invariant=False,
        log=QUIET,
    )
    for split, sha in shas.items():
        assert [x["sha256"] for x in read_manifest(records, "mine", split)["shards"]] == sha
    assert sorted(os.listdir(records)) == ["mine"]


def test_user_split_folders_with_unicode_names(tmp_path):
    root = tmp_path / "data"
    _folder(root / "train", {"café": 6, "日本": 6})
    _folder(root / "test", {"café": 2, "日本": 1}, offset=50)
    _save(_image(7), root / "train" / "café" / "naïve ü.png")
    listing = scan_image_folder(root)
    assert listing.layout == "split_folders"
    records = tmp_path / "records"
    content = make_user_dataset("unicode", records, listing, log=QUIET)
    assert content["class_names"] == ["café", "日本"]
    assert content["counts"] == {
        "train": 11,
        "val": 2,
        "test": 3,
    }  # val: int(0.2 * 7), int(0.2 * 6)
    spec = get_dataset("unicode", records)
    assert spec.train == "train" and spec.test == "test" and spec.val == Holdout(0.2, 0)
    ids, labels, _ = _records(records, "unicode", "test")
    assert sorted(ids) == ["test/café/00.png", "test/café/01.png", "test/日本/00.png"]
    all_ids = [i for s in ("train", "val") for i in _records(records, "unicode", s)[0]]
    assert "train/café/naïve ü.png" in all_ids and len(all_ids) == 13


def test_every_format_becomes_the_rgb_pixels_it_shows(tmp_path):
    a = _image(1, (16, 22))

    def encoded(image, fmt, **kw):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kw)
        return buffer.getvalue()

    def decoded(data):  # what the input pipeline sees
        return tf.io.decode_image(prepare_image(data, "x"), channels=3).numpy()

    # Lossless formats: exact.
    np.testing.assert_array_equal(decoded(encoded(Image.fromarray(a), "BMP")), a)
    wide = np.random.RandomState(0).randint(0, 65536, (5, 7, 3)).astype(np.uint16)
    png48 = tf.io.encode_png(tf.constant(wide)).numpy()  # 16-bit RGB
    np.testing.assert_array_equal(decoded(png48), (wide >> 8).astype(np.uint8))
    gray16 = wide[..., :1]
    want = np.repeat((gray16 >> 8).astype(np.uint8), 3, axis=-1)
    np.testing.assert_array_equal(decoded(tf.io.encode_png(tf.constant(gray16)).numpy()), want)
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30]], np.uint8)
    index = np.random.RandomState(1).randint(0, 3, (6, 9)).astype(np.uint8)
    p_image = Image.fromarray(index, "P")
    p_image.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(decoded(encoded(p_image, "PNG")), palette[index])
    gray_alpha = Image.fromarray(np.stack([a[..., 0], a[..., 1]], -1), "LA")  # alpha dropped
    np.testing.assert_array_equal(decoded(encoded(gray_alpha, "PNG")), np.repeat(a[..., :1], 3, -1))
    frames = [Image.fromarray(np.full((8, 8, 3), c, np.uint8)) for c in ((200, 0, 0), (0, 0, 200))]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(decoded(gif), np.full((8, 8, 3), (200, 0, 0), np.uint8))

    # JPEG: progressive and baseline kept as they are; CMYK converted; EXIF orientation applied.
    for kw in ({}, {"progressive": True}):
        data = encoded(Image.fromarray(a), "JPEG", quality=95, **kw)
        assert prepare_image(data, "x") == data
        assert np.abs(decoded(data).astype(int) - a).mean() < 3
    cmyk = encoded(Image.fromarray(a).convert("CMYK"), "JPEG", quality=95)
    assert np.abs(decoded(cmyk).astype(int) - a).mean() < 3
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    rotated = encoded(Image.fromarray(a), "JPEG", quality=95, exif=exif)
    upright = np.asarray(Image.open(io.BytesIO(rotated)).convert("RGB"))
    np.testing.assert_array_equal(decoded(rotated), np.rot90(upright, k=-1))
    assert decoded(rotated).shape == (22, 16, 3)


# ---- CSV ---------------------------------------------------------------------------------------


def test_csv_multi_label_with_split_column(tmp_path):
    images = tmp_path / "imgs"
    rows = ["path,labels,split"]
    tags = ["sky|sea", "sea", "sky", "tree|sky", "tree", "sea|tree"]
    for k in range(18):
        _save(_image(k), images / f"{k}.png")
        split = "test" if k >= 15 else "train"
        rows.append(f"imgs/{k}.png,{tags[k % 6]},{split}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    records = tmp_path / "records"
    printed = []
    content = make_user_dataset(
        "tags", records, read_csv(tmp_path / "tags.csv"), log=printed.append
    )
    assert content["class_names"] == ["sea", "sky", "tree"] and content["metric"] == "map11"
    assert content["counts"] == {"train": 12, "val": 3, "test": 3}  # val: int(0.2 * 15) uniform
    val_counts = content["splits"]["val"]["counts_per_class"]
    assert val_counts[2] == 0 and printed == [
        "note: no val image has class(es) tree; map11 on val averages over the classes present"
    ]
    spec = get_dataset("tags", records)
    assert spec.multi_label and spec.train == "train" and spec.val == Holdout(0.2, 0)
    ids, labels, _ = _records(records, "tags", "test")
    assert sorted(zip(ids, labels, strict=True)) == [
        ("imgs/15.png", (1, 2)),
        ("imgs/16.png", (2,)),
        ("imgs/17.png", (0, 2)),
    ]
    _, multi_hot = next(
        iter(
            make_input(
                records,
                "tags",
                "test",
                image_size=8,
                preprocessing="inception",
                training=False,
                batch_size=3,
            )
        )
    )
    want = np.zeros((3, 3), np.float32)
    for row, label in enumerate(labels):
        want[row, list(label)] = 1
    np.testing.assert_array_equal(multi_hot.numpy(), want)


# ---- bad input -----------------------------------------------------------------------------------


def _two_classes(root, n=8):
    return _folder(root, {"a": n, "b": n})


def _jpeg(path, seed=0):
    _save(_image(seed), path, "JPEG", quality=90)


def _bad_empty_class(tmp):
    _two_classes(tmp / "in")
    (tmp / "in" / "c").mkdir()
    return scan_image_folder, tmp / "in", r"class folder .*in/c is empty"


def _bad_one_class(tmp):
    _folder(tmp / "in", {"only": 8})
    return scan_image_folder, tmp / "in", r"1 class \(only\); classification needs at least two"


def _bad_small_class(tmp):
    _folder(tmp / "in", {"a": 8, "b": 5})
    return (
        scan_image_folder,
        tmp / "in",
        r"class 'b' has 5 image\(s\), so its val split is empty.*at least 6 images per class",
    )


def _bad_text_file(tmp):
    _two_classes(tmp / "in")
    (tmp / "in" / "a" / "notes.txt").write_text("not a picture")
    return scan_image_folder, tmp / "in", r"in/a/notes.txt: not an image file.*--skip_unreadable"


def _bad_truncated_jpeg(tmp):
    _two_classes(tmp / "in")
    _jpeg(tmp / "in" / "b" / "x.jpg")
    data = (tmp / "in" / "b" / "x.jpg").read_bytes()
    (tmp / "in" / "b" / "x.jpg").write_bytes(data[: len(data) * 2 // 3])
    return scan_image_folder, tmp / "in", r"in/b/x.jpg: the image is truncated or corrupt"


def _bad_zero_bytes(tmp):
    _two_classes(tmp / "in")
    (tmp / "in" / "b" / "empty.jpg").write_bytes(b"")
    return scan_image_folder, tmp / "in", r"in/b/empty.jpg: the file is empty \(0 bytes\)"


def _csv(tmp, lines):
    _two_classes(tmp / "img")
    (tmp / "d.csv").write_text("\n".join(["path,label", *lines]) + "\n")
    return tmp / "d.csv"


def _bad_csv_duplicate(tmp):
    path = _csv(
        tmp, [f"img/a/{k:02d}.png,a" for k in range(8)] + ["img/b/00.png,b", "./img/a/03.png,b"]
    )
    return read_csv, path, r"d.csv line 11: './img/a/03.png' is listed twice \(first on line 5\)"


def _bad_csv_missing_file(tmp):
    path = _csv(tmp, ["img/a/00.png,a", "img/a/nope.png,b"])
    return read_csv, path, r"d.csv line 3: image 'img/a/nope.png' does not exist"


def _bad_unknown_label_in_user_split(tmp):
    _folder(tmp / "in" / "train", {"a": 6, "b": 6})
    _folder(tmp / "in" / "test", {"a": 2, "c": 2})
    return (
        scan_image_folder,
        tmp / "in",
        r"label 'c' of test/c/00.png \(test split\) is not a class of the train split \(a, b\)",
    )


def _bad_unknown_label_in_csv_split(tmp):
    _two_classes(tmp / "img")
    lines = [f"img/a/{k:02d}.png,a,train" for k in range(6)] + [
        f"img/b/{k:02d}.png,b,train" for k in range(6)
    ]
    (tmp / "d.csv").write_text(
        "\n".join(["path,label,split", *lines, "img/b/07.png,dog,val"]) + "\n"
    )
    return read_csv, tmp / "d.csv", r"label 'dog' of img/b/07.png \(val split\) is not a class"


BAD = [
    _bad_empty_class,
    _bad_one_class,
    _bad_small_class,
    _bad_text_file,
    _bad_truncated_jpeg,
    _bad_zero_bytes,
    _bad_csv_duplicate,
    _bad_csv_missing_file,
    _bad_unknown_label_in_user_split,
    _bad_unknown_label_in_csv_split,
]


@pytest.mark.parametrize("case", BAD, ids=lambda f: f.__name__[5:])
def test_bad_input_is_a_one_line_error_and_nothing_is_written(case, tmp_path):
    scan, path, message = case(tmp_path)
    records = tmp_path / "records"
    with pytest.raises(UserDataError, match=message) as error:
        make_user_dataset("mine", records, scan(path), log=QUIET)
    assert "\n" not in str(error.value)
    assert not records.exists() or os.listdir(records) == []


def test_a_failed_remake_leaves_the_old_records(tmp_path, monkeypatch):
    _two_classes(tmp_path / "in")
    records = tmp_path / "records"
    make_user_dataset("mine", records, scan_image_folder(tmp_path / "in"), log=QUIET)
    before = {p.name: p.read_bytes() for p in (records / "mine").iterdir()}
    _folder(tmp_path / "in", {"c": 8})

    from transfer_tf.data import tfrecords

    def broken(*args, **kwargs):  # the disk fills up half-way through the train split
        raise OSError("No space left on device")

    monkeypatch.setattr(tfrecords, "write_split", broken)
    with pytest.raises(OSError, match="No space left"):
        make_user_dataset("mine", records, scan_image_folder(tmp_path / "in"), log=QUIET)
    assert sorted(os.listdir(records)) == ["mine"]  # no temporary folder left behind
    assert {p.name: p.read_bytes() for p in (records / "mine").iterdir()} == before


def test_skip_unreadable_lists_every_skipped_file(tmp_path):
    _two_classes(tmp_path / "in")
    (tmp_path / "in" / "a" / "zero.jpg").write_bytes(b"")
    (tmp_path / "in" / "b" / "readme.txt").write_text("hello")
    printed = []
    content = make_user_dataset(
        "mine",
        tmp_path / "records",
        scan_image_folder(tmp_path / "in"),
        skip_unreadable=True,
        log=printed.append,
    )
    skipped = [(s["path"], s["split"]) for s in content["skipped_files"]]
    assert skipped == [("a/zero.jpg", "all"), ("b/readme.txt", "all")]
    assert "empty" in content["skipped_files"][0]["reason"]
    assert printed == [
        "skipped 2 unreadable file(s) (listed in dataset_spec.json and the "
        "manifests as skipped_files)"
    ]
    for split in ("train", "val", "test"):
        m = read_manifest(tmp_path / "records", "mine", split)
        assert m["skipped_files"] == content["skipped_files"]
    assert sum(content["counts"].values()) == 16


def test_names_and_options_are_checked(tmp_path):
    _two_classes(tmp_path / "in")
    listing = scan_image_folder(tmp_path / "in")
    for kwargs, message in [
        ({"name": "cifar10"}, "--dataset=cifar10 is a registry dataset"),
        ({"name": "../up"}, "a dataset name is a folder name"),
        ({"metric": "map11"}, "map11 scores multi-label data"),
        ({"metric": "top5"}, "--metric='top5': choose one of top1, mean_per_class, map11"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "their sum must be below 1"),
    ]:
        options = {"name": "mine", **kwargs}
        with pytest.raises(UserDataError, match=message):
            make_user_dataset(options.pop("name"), tmp_path / "r", listing, log=QUIET, **options)
    (tmp_path / "r" / "taken").mkdir(parents=True)
    with pytest.raises(UserDataError, match="taken exists and is not a dataset made from"):
        make_user_dataset("taken", tmp_path / "r", listing, log=QUIET)
    (tmp_path / "mixed" / "train" / "a").mkdir(parents=True)
    (tmp_path / "mixed" / "dogs").mkdir()
    with pytest.raises(UserDataError, match=r"mixes split folders \(train\) with \['dogs'\]"):
        scan_image_folder(tmp_path / "mixed")


@pytest.mark.subprocess
def test_cli_makes_checks_and_refuses_in_one_line(tmp_path):
    _two_classes(tmp_path / "photos")
    base = [
        sys.executable,
        "-m",
        "transfer_tf.bin.make_tfrecords",
        "--dataset=holiday",
        f"--records_dir={tmp_path / 'records'}",
    ]

    def run(*flags):
        return subprocess.run(base + list(flags), capture_output=True, text=True)

    # The flags a study's --own_datasets entry gives the records step.
    name, own_flags = own_dataset_flags(
        f"holiday={tmp_path / 'photos'},metric=mean_per_class,seed=1,mirror_invariant=false"
    )
    assert name == "holiday" and own_flags == [
        f"--image_folder={tmp_path / 'photos'}",
        "--metric=mean_per_class",
        "--seed=1",
        "--nomirror_invariant",
    ]
    made = run(*own_flags)
    assert made.returncode == 0, made.stderr
    assert "holiday/test: 2 examples in 1 shard(s); count check: passed" in made.stdout
    assert "holiday: 2 classes, metric mean_per_class" in made.stdout
    spec = json.loads((tmp_path / "records" / "holiday" / "dataset_spec.json").read_text())
    assert spec["metric"] == "mean_per_class" and spec["options"]["seed"] == 1
    assert spec["spec"]["mirror_invariant"] is False
    assert spec["command"].startswith("transfer-make-tfrecords --dataset=holiday")

    again = run()  # transfer-study's records step: the name is found beside the records
    assert again.returncode == 0, again.stderr
    assert "holiday: made from" in again.stdout and "(train 12, val 2, test 2)" in again.stdout

    listed = run("--list")
    assert (
        listed.returncode == 0
        and "holiday                [user] classes=2 train=12 val=2 test=2 metric=mean_per_class"
        in listed.stdout
    )

    (tmp_path / "records" / "holiday" / "val.manifest.json").unlink()
    missing = run()
    assert missing.returncode == 1 and "the val records are missing" in missing.stderr
    assert "re-create them with: transfer-make-tfrecords --dataset=holiday" in missing.stderr

    (tmp_path / "photos" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    bad = run(f"--image_folder={tmp_path / 'photos'}")
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("transfer-make-")]
    assert len(errors) == 1 and "broken.jpg" in errors[0], bad.stderr
    assert (
        errors[0].startswith("transfer-make-tfrecords: error: ") and "Traceback" not in bad.stderr
    )


def test_own_dataset_entries_of_a_study(tmp_path):
    (tmp_path / "tags.csv").write_text("path,labels\n")
    name, flags = own_dataset_flags(f"tags={tmp_path / 'tags.csv'},val_fraction=0.1")
    assert name == "tags" and flags == [f"--csv={tmp_path / 'tags.csv'}", "--val_fraction=0.1"]
    for entry, message in [
        ("dtd=" + str(tmp_path), "--dataset=dtd is a registry dataset"),
        ("mine", "expected NAME=PATH"),
        (f"mine={tmp_path / 'nope'}", "nope does not exist"),
        (f"mine={tmp_path},seed=x", "seed='x' is not a int"),
        (f"mine={tmp_path},flip=true", "'flip=true' is not option=value with option one of"),
        (f"mine={tmp_path},skip_unreadable=yes", "skip_unreadable is true or false"),
    ]:
        with pytest.raises(UserDataError, match=message):
            own_dataset_flags(entry)
