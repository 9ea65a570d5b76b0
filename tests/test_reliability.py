"""Reliability (issue 20), in process: a result is never stale, bad data never hangs or passes
silently, a damaged cell file counts as unfinished, an export is never half written or wedged,
two runs never share a cell or a study folder, names and values are checked when planned.

Each test is one BAD case that behaved wrongly before: it asserts what happens now.
"""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf import files, results
from transfer_tf.data import make_input
from transfer_tf.data.tfrecords import (
    JPEG_END,
    JPEG_START,
    CorruptRecordsError,
    encode_example,
    manifest_path,
    write_manifest,
    write_split,
)
from transfer_tf.protocols import features, finetune, sweep
from transfer_tf.protocols.recipe import GridPoint, SweepRecipe
from transfer_tf.protocols.sources import Source

NUM_CLASSES = 3
COUNTS = {"train": 6, "val": 3, "test": 3}


def _png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).numpy()


def _manifest(dataset, split, shards, num_classes=NUM_CLASSES):
    return dict(
        dataset=dataset,
        split=split,
        num_examples=sum(s["num_examples"] for s in shards),
        num_classes=num_classes,
        multi_label=False,
        metric="top1",
        class_names=[str(c) for c in range(num_classes)],
        shards=shards,
    )


def _write_records(root, dataset="toy", *, seed=0, splits=COUNTS, num_shards=2):
    """Records through the data layer: 2 shards per split, labels i % 3, each with its manifest."""
    for split, n in splits.items():
        examples = [
            (f"{split}-{i}", i % NUM_CLASSES, _png(seed * 100 + i), "test") for i in range(n)
        ]
        shards = write_split(
            root / dataset, split, examples, n, num_shards=num_shards, num_classes=NUM_CLASSES
        )
        write_manifest(manifest_path(root, dataset, split), _manifest(dataset, split, shards))


def _write_raw(root, dataset, split, records, labels, num_classes=NUM_CLASSES):
    """One shard of serialized examples as given (no validation), with a manifest that lists
    `labels` and the shard's true size and checksum."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    shard = {
        "file": path.name,
        "num_examples": len(records),
        "bytes": path.stat().st_size,
        "sha256": files.sha256_file(str(path)),
        "labels": labels,
    }
    write_manifest(
        manifest_path(root, dataset, split), _manifest(dataset, split, [shard], num_classes)
    )
    return path


def _source():
    """A fixed 'network': the mean colour of each 8x8 image."""
    return features.FeatureSource(
        call=lambda images: tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]),
        size=(8, 8),
        label="mean_rgb",
        description={},
    )


# ---- no stale results -------------------------------------------------------------------------


def _cell(c=1.0, **kw):
    cell = dict(
        protocol="logreg",
        model="m",
        architecture="a",
        settings="fair",
        dataset="d",
        metric="top1",
        stage="grid",
        hparams={"l2": 1.0 / c, "C": c},
        seed=0,
        per_class=None,
    )
    cell.update(kw)
    return cell


def test_a_finished_cell_computed_from_other_inputs_runs_again(tmp_path, capsys):
    calls = []

    def run_fn(cell):
        calls.append(cell["hparams"]["C"])
        return {"val_metric": 0.5 + len(calls) / 100}

    cells = [_cell(1.0), _cell(2.0)]
    first = {"train.npz": "aaaa", "val.npz": "bbbb", "test.npz": "cccc"}
    records = sweep.run_cells(cells, str(tmp_path), run_fn, inputs=first)
    assert calls == [1.0, 2.0] and all(r["inputs"] == first for r in records)
    sweep.run_cells(cells, str(tmp_path), run_fn, inputs=first, progress=False)
    assert calls == [1.0, 2.0]  # same inputs: done before
    capsys.readouterr()
    changed = {**first, "val.npz": "dddd"}
    again = sweep.run_cells(cells, str(tmp_path), run_fn, inputs=changed)
    assert calls == [1.0, 2.0, 1.0, 2.0]
    assert [r["val_metric"] for r in again] == [0.53, 0.54]
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == f"cell {sweep.cell_id(cells[0])}: val.npz changed since it ran; running it again"
    )
    on_disk = json.loads((tmp_path / "logreg" / f"{sweep.cell_id(cells[0])}.json").read_text())
    assert on_disk["inputs"] == changed and on_disk["val_metric"] == 0.53
    assert set(results.load(str(tmp_path))["cell_id"]) == {sweep.cell_id(c) for c in cells}
    # A JSON written before inputs were recorded is kept (nothing to compare it with).
    legacy = tmp_path / "logreg" / f"{sweep.cell_id(cells[0])}.json"
    legacy.write_text(json.dumps({k: v for k, v in on_disk.items() if k != "inputs"}))
    sweep.run_cells(cells, str(tmp_path), run_fn, inputs=first, progress=False)
    assert calls == [1.0, 2.0, 1.0, 2.0, 2.0]


def test_file_fingerprints_follow_the_bytes(tmp_path):
    path = tmp_path / "train.npz"

    def fingerprint(**arrays):
        np.savez(path, **arrays)
        return sweep.file_fingerprints({"train.npz": str(path)})

    x, y = np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 0, 1])
    a = fingerprint(features=x, labels=y)
    assert fingerprint(features=x, labels=y) == a  # numpy writes the same bytes again
    b = fingerprint(features=x + 1e-3, labels=y)
    assert b != a and sweep.changed_inputs(a, b) == ["train.npz"]
    assert fingerprint(features=x, labels=y[::-1]) not in (a, b)
    assert sweep.changed_inputs(None, b) == [] and sweep.changed_inputs(a, None) == []


def _fake_checkpoint(model_dir, content: bytes):
    ckpt = model_dir / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
    )
    (ckpt / "ckpt-1.index").write_bytes(content)
    (ckpt / "ckpt-1.data-00000-of-00001").write_bytes(content)


def test_finetune_cells_run_again_after_new_records_or_a_retrained_source(tmp_path, monkeypatch):
    records = tmp_path / "records"
    _write_records(records)
    source_dir = tmp_path / "pretrain"
    _fake_checkpoint(source_dir, b"weights v1")
    source = Source(
        architecture="mobilenet_v1",
        init="model_dir",
        settings={},
        label="m_fair",
        settings_label="fair",
        input_size=32,
        init_model_dir=str(source_dir),
    )
    recipe = SweepRecipe(
        protocol="finetune",
        source=source,
        dataset="toy",
        metric="top1",
        grid=(GridPoint(0.1, 0.0),),
        train_steps=2,
    )
    seen = []

    def fake_run_cell(cell, records_dir, options, model_dir, strategy):
        # What a resumed Trainer would find: a checkpoint left in the cell's model_dir.
        seen.append((cell.stage, sorted(n for n in os.listdir(model_dir) if n != "inputs.json")))
        with open(os.path.join(model_dir, "ckpt-from-this-run"), "w") as f:
            f.write("x")
        if cell.stage == "grid":
            return {"val_metric": 0.5, "steps": 2, "history": []}
        return {"test_metric": 0.25 + len(seen) / 100, "steps": 2, "history": []}

    monkeypatch.setattr(finetune, "run_cell", fake_run_cell)

    def sweep_once():
        return finetune.run_sweep(
            recipe,
            records_dir=str(records),
            results_dir=str(tmp_path / "results"),
            strategy=object(),
            progress=False,
        )

    first = sweep_once()
    assert [s for s, _ in seen] == ["grid", "final"] and first.test_metric == 0.27
    assert set(first.final["inputs"]) == {"records", "source"}
    sweep_once()
    assert len(seen) == 2  # unchanged inputs: every cell done before
    _write_records(records, seed=1, splits={"train": 6})  # new training images
    second = sweep_once()
    assert len(seen) == 4 and second.test_metric == 0.29
    assert second.final["inputs"]["records"] != first.final["inputs"]["records"]
    assert seen[3] == ("final", [])  # the final cell's old checkpoint was not resumed
    _fake_checkpoint(source_dir, b"weights v2: retrained")
    third = sweep_once()
    assert len(seen) == 6 and third.final["inputs"]["source"] != second.final["inputs"]["source"]
    assert seen[5] == ("final", [])
    assert len(results.load(str(tmp_path / "results"))) == 2  # rewritten in place, one per cell
    # A shard listed in the manifest but missing: refused before any cell runs.
    shard = json.loads(manifest_path(records, "toy", "val").read_text())["shards"][1]["file"]
    os.remove(records / "toy" / shard)
    with pytest.raises(CorruptRecordsError, match=f"{shard} is listed in .*val.manifest.json"):
        sweep_once()
    assert len(seen) == 6


# ---- bad data never hangs and is always named ----------------------------------------------


@pytest.mark.timeout(60)
def test_a_missing_shard_is_an_error_before_reading_not_a_hang(tmp_path):
    _write_records(tmp_path, splits={"train": 6})
    shard = json.loads(manifest_path(tmp_path, "toy", "train").read_text())["shards"][0]["file"]
    os.remove(tmp_path / "toy" / shard)
    for training in (True, False):
        with pytest.raises(CorruptRecordsError, match=f"shard .*{shard} is listed in .* missing"):
            make_input(
                tmp_path,
                "toy",
                "train",
                image_size=8,
                preprocessing="inception",
                training=training,
                batch_size=2,
                repeat=training,
            )
    with pytest.raises(CorruptRecordsError, match=shard):
        features.extract_split(_source(), str(tmp_path), "toy", "train")


def test_a_manifest_whose_counts_disagree_with_its_shards_is_one_clear_error(tmp_path):
    _write_records(tmp_path, splits={"train": 6})
    path = manifest_path(tmp_path, "toy", "train")
    manifest = json.loads(path.read_text())
    manifest["num_examples"] = 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptRecordsError, match="says 7 examples but its shards list 6"):
        make_input(
            tmp_path,
            "toy",
            "train",
            image_size=8,
            preprocessing="inception",
            training=False,
            batch_size=2,
        )


def test_extraction_names_the_shard_and_record_of_truncated_or_corrupt_shards(tmp_path):
    _write_records(tmp_path, splits={"train": 6}, num_shards=2)
    arrays, _ = features.extract_split(_source(), str(tmp_path), "toy", "train", batch_size=4)
    assert arrays["features"].shape == (6, 3) and list(arrays["labels"]) == [0, 0, 1, 1, 2, 2]
    assert list(arrays["ids"]) == [f"train-{i}" for i in (0, 3, 1, 4, 2, 5)]  # shards interleaved
    shard = (
        tmp_path
        / "toy"
        / json.loads(manifest_path(tmp_path, "toy", "train").read_text())["shards"][1]["file"]
    )
    whole = shard.read_bytes()
    record = len(whole) // 3
    data = bytearray(whole)
    data[record + 40] ^= 0xFF  # inside the second record's payload: its CRC fails
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordsError) as err:
        features.extract_split(_source(), str(tmp_path), "toy", "train", batch_size=4)
    assert str(shard) in str(err.value) and "record number 1" in str(err.value)
    assert "1 of 3 records readable" in str(err.value)
    shard.write_bytes(whole[: record + 10])  # truncated inside the second record
    with pytest.raises(CorruptRecordsError) as err:
        features.extract_split(_source(), str(tmp_path), "toy", "train", batch_size=4)
    message = str(err.value)
    assert str(shard) in message and "truncated" in message
    assert "record number 1" in message and "id train-" in message


def test_an_undecodable_image_is_named_by_shard_and_record_id_in_extraction(tmp_path):
    good = [encode_example(_png(i), "png", 12, 12, f"ok-{i}", i % 3, False) for i in range(3)]
    # A JPEG's start and end markers around garbage: the cheap check passes, decoding fails.
    bad = encode_example(
        JPEG_START + b"\x00garbage" * 20 + JPEG_END, "jpeg", 12, 12, "broken-photo-7", 1, False
    )
    path = _write_raw(tmp_path, "toy", "train", [*good[:2], bad, good[2]], [0, 1, 1, 2])
    with pytest.raises(CorruptRecordsError) as err:
        features.extract_split(_source(), str(tmp_path), "toy", "train", batch_size=2)
    message = str(err.value)
    assert str(path) in message and "broken-photo-7" in message and "does not decode" in message


def test_a_label_outside_the_classes_is_refused_at_write_and_at_read(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"example 'x-42' \(photo.jpg\) has label 42, outside "
        r"\[0, 10\)",
    ):
        write_split(
            tmp_path / "w", "train", [("x-42", 42, _png(0), "photo.jpg")], 1, num_classes=10
        )
    records = [
        encode_example(_png(i), "png", 12, 12, f"r{i}", label, False)
        for i, label in enumerate([3, 42, 7])
    ]
    # The manifest lists the label: refused before reading.
    _write_raw(tmp_path, "listed", "train", records, [3, 42, 7], num_classes=10)
    with pytest.raises(
        CorruptRecordsError,
        match="record number 1 of shard .* has label 42, "
        r"outside \[0, 10\)",
    ):
        make_input(
            tmp_path,
            "listed",
            "train",
            image_size=8,
            preprocessing="inception",
            training=False,
            batch_size=2,
        )
    # The manifest hides it: the record itself is refused, by id, in training and in extraction.
    path = _write_raw(tmp_path, "hidden", "train", records, [3, 4, 7], num_classes=10)
    ds = make_input(
        tmp_path,
        "hidden",
        "train",
        image_size=8,
        preprocessing="inception",
        training=True,
        batch_size=2,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r'label \[42\] of record id \\"r1'):
        for _ in ds:
            pass
    with pytest.raises(
        CorruptRecordsError, match=rf'label \[42\] of record id "r1" in shard "{path}"'
    ):
        features.extract_split(_source(), str(tmp_path), "hidden", "train")


# ---- damaged cell files ------------------------------------------------------------------------


def test_a_damaged_predictions_file_or_cell_json_is_an_unfinished_cell(tmp_path):
    calls = []

    def run_fn(cell):
        calls.append(cell["stage"])
        if cell["stage"] == "final":
            return {
                "test_metric": 0.5,
                "predictions": {"y_true": np.arange(50), "y_pred": np.arange(50)},
            }
        return {"val_metric": 0.5}

    cells = [_cell(1.0), _cell(1.0, stage="final")]
    sweep.run_cells(cells, str(tmp_path), run_fn, progress=False)
    final_id, grid_id = sweep.cell_id(cells[1]), sweep.cell_id(cells[0])
    predictions = tmp_path / "logreg" / f"{final_id}.predictions.npz"
    whole = predictions.read_bytes()
    predictions.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "logreg" / f"{grid_id}.json").write_text('{"cell_id": "x", "proto')
    frame = results.load(str(tmp_path))
    assert frame.empty and len(frame.attrs[results.UNREADABLE]) == 2
    reasons = dict(frame.attrs[results.UNREADABLE])
    assert "does not read" in reasons[str(predictions).replace(".predictions.npz", ".json")]
    sweep.run_cells(cells, str(tmp_path), run_fn, progress=False)  # the rerun repairs both
    assert calls == ["grid", "final", "grid", "final"]
    frame = results.load(str(tmp_path))
    assert len(frame) == 2 and frame.attrs[results.UNREADABLE] == []
    final = frame[frame.stage == "final"].iloc[0]
    np.testing.assert_array_equal(
        results.load_predictions(final.predictions_path)["y_pred"], np.arange(50)
    )


# ---- locks ---------------------------------------------------------------------------------------


def test_a_cell_or_a_study_folder_in_use_by_another_run_is_refused(tmp_path):
    from transfer_tf.study.steps import study_lock

    cell = _cell(1.0)
    lock = files.exclusive_lock(str(tmp_path / ".locks" / f"{sweep.cell_id(cell)}.lock"), "x", "")
    with lock, pytest.raises(files.BusyError) as err:  # another run computes this cell
        sweep.run_cells([cell], str(tmp_path), lambda c: {"val_metric": 1.0}, progress=False)
    assert (
        f"sweep cell {sweep.cell_id(cell)} in {tmp_path} is in use by another process (pid "
        f"{os.getpid()} since" in str(err.value)
    )
    assert "pass another --results_dir" in str(err.value)
    sweep.run_cells([cell], str(tmp_path), lambda c: {"val_metric": 1.0}, progress=False)  # free
    with study_lock(str(tmp_path)), pytest.raises(files.BusyError, match="study folder .* in use"):
        with study_lock(str(tmp_path)):
            pass


# ---- exports: temporary folder, kept when unchanged, superseded ones moved aside ----------------


def _tiny_model(scale: float):
    inputs = keras.Input([8, 8, 3])
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(scale))
    return keras.Model(inputs, {"features": pooled, "logits": dense(pooled)})


def test_export_into_an_existing_export_keeps_it_or_moves_it_aside(tmp_path):
    from transfer_tf.training.export import SUPERSEDED_NOTE, export_saved_model

    export_dir = tmp_path / "saved_models" / "m"
    kwargs = dict(input_size=8, preprocessing="inception")
    export_saved_model(_tiny_model(1.0), str(export_dir), info={"step": 1}, **kwargs)
    pb = export_dir / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already holds a SavedModel.*--replace"):
        export_saved_model(_tiny_model(1.0), str(export_dir), info={"step": 1}, **kwargs)
    # What a resumed study does (export steps pass --replace): the same export is kept.
    export_saved_model(_tiny_model(1.0), str(export_dir), info={"step": 1}, replace=True, **kwargs)
    assert pb.stat().st_mtime_ns == before
    old_info = json.loads((export_dir / "assets.extra" / "transfer_tf_export.json").read_text())
    # A retrained source: the old export moves aside with a note, the new one takes its place.
    time.sleep(0.01)
    export_saved_model(_tiny_model(2.0), str(export_dir), info={"step": 2}, replace=True, **kwargs)
    info = json.loads((export_dir / "assets.extra" / "transfer_tf_export.json").read_text())
    assert info["step"] == 2 and info["fingerprint"] != old_info["fingerprint"]
    (aside,) = [p for p in export_dir.parent.iterdir() if p.name.startswith("m.superseded-")]
    note = (aside / SUPERSEDED_NOTE).read_text()
    assert old_info["fingerprint"] in note and info["fingerprint"] in note
    assert (aside / "saved_model.pb").exists()
    assert sorted(p.name for p in export_dir.parent.iterdir()) == ["m", aside.name]  # no tmp
    loaded = tf.saved_model.load(str(export_dir))
    logits = loaded.signatures["serving_default"](
        images=tf.fill([1, 8, 8, 3], tf.constant(255, tf.uint8))
    )
    np.testing.assert_allclose(logits["logits"].numpy(), [[6.0, 6.0]], rtol=1e-6)  # 3 x 1 x 2


def test_an_export_under_a_url_is_whole_or_marked_incomplete(monkeypatch):
    """Object stores (gs://) cannot rename a folder at once: an export there is written in place
    with its info last; a killed one is no export, and a rerun with replace moves it aside. The
    in-memory `ram://` file system of tf.io.gfile stands in for gs://."""
    from transfer_tf.training import export
    from transfer_tf.training.saved_model_info import read_export_info

    export_dir = f"ram://exports-{time.time_ns()}/m"
    kwargs = dict(input_size=8, preprocessing="inception")
    export.export_saved_model(_tiny_model(1.0), export_dir, info={"step": 1}, **kwargs)
    assert read_export_info(export_dir)["step"] == 1
    with pytest.raises(FileExistsError, match="already holds a SavedModel"):
        export.export_saved_model(_tiny_model(1.0), export_dir, info={"step": 1}, **kwargs)

    def killed(*args, **kw):
        raise KeyboardInterrupt  # after the SavedModel, before its info

    monkeypatch.setattr(export, "write_export_info", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(_tiny_model(2.0), export_dir, info={"step": 2}, replace=True,
                                  **kwargs)  # fmt: skip
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="transfer_tf_export.json is missing"):
        read_export_info(export_dir)  # the half export is not taken for one
    export.export_saved_model(
        _tiny_model(3.0), export_dir, info={"step": 3}, replace=True, **kwargs
    )
    assert read_export_info(export_dir)["step"] == 3
    parent = export_dir.rsplit("/", 1)[0]
    asides = sorted(n for n in tf.io.gfile.listdir(parent) if "superseded" in n)
    assert len(asides) == 2  # step 1's export, then the killed one, each with its note
    for aside in asides:
        assert tf.io.gfile.exists(f"{parent}/{aside.rstrip('/')}/{export.SUPERSEDED_NOTE}")
    loaded = tf.saved_model.load(export_dir)
    logits = loaded.signatures["serving_default"](
        images=tf.fill([1, 8, 8, 3], tf.constant(255, tf.uint8))
    )
    np.testing.assert_allclose(logits["logits"].numpy(), [[9.0, 9.0]], rtol=1e-6)  # 3 x 1 x 3


# ---- the study checks names when it plans ------------------------------------------------------


def test_the_study_checks_names_when_it_plans_before_creating_anything(tmp_path):
    from transfer_tf.study import plan

    study_dir = tmp_path / "study"
    for kwargs, message in (
        (
            dict(target_datasets=("sklearn_digitz",)),
            "--target_datasets: unknown dataset 'sklearn_digitz'",
        ),
        (
            dict(pretrain_models=("mobilenet_v9",)),
            r"--pretrain_models: unknown model\(s\) "
            r"\['mobilenet_v9'\]",
        ),
        (
            dict(pretrain_models=("mobilenet_v1",), source_dataset="fashion_mnits"),
            "--source_dataset: unknown dataset 'fashion_mnits'",
        ),
        (dict(public_models=("efficientnet_lite9",)), "--public_models: unknown model"),
        (dict(scratch_models=("resnet_51",)), "--scratch_models: unknown model"),
    ):
        with pytest.raises(ValueError, match=message):
            plan.plan_study(plan.StudyConfig(study_dir=str(study_dir), **kwargs))
    assert not study_dir.exists()
    steps = plan.plan_study(
        plan.StudyConfig(
            study_dir=str(study_dir),
            public_models=("efficientnet_lite0",),
            pretrain_models=("mobilenet_v1",),
            pretrain_settings=("fair",),
        )
    )
    exports = [s for s in steps if s.argv[0] == "transfer-export"]
    assert len(exports) == 2 and all("--replace" in s.argv for s in exports)


# ---- one line per error --------------------------------------------------------------------------


@pytest.mark.subprocess
def test_sigterm_stops_a_binary_with_one_line(tmp_path):
    """A scheduler's stop (SIGTERM) ends a binary as Ctrl-C does: one line, exit 143."""
    import signal
    import subprocess
    import sys

    started = tmp_path / "started"
    code = (
        "import pathlib, sys, time\n"
        "from transfer_tf.bin import cli\n"
        "def main(argv):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
        "    time.sleep(60)\n"
        "sys.argv = ['transfer-x']\n"
        "cli.run('transfer-x', main)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines() == ["transfer-x: terminated; rerun the same command to resume"]


def test_the_binaries_error_line_and_what_stays_a_traceback(capsys, monkeypatch):
    from transfer_tf.bin import cli

    def fails_with(error):
        def main(argv):
            raise error

        return cli.guard("transfer-x", main)

    cases = [
        (
            ValueError("shard a.tfrecord is missing; re-create it\nmore detail"),
            "transfer-x: error: shard a.tfrecord is missing; re-create it",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/data/x.npz"),
            "transfer-x: error: /data/x.npz: no such file or directory; check the path the flags "
            "name",
        ),
        (
            KeyError("unknown dataset 'digitz'; known datasets: ..."),
            "transfer-x: error: unknown dataset 'digitz'; known datasets: ...",
        ),
        (
            tf.errors.InvalidArgumentError(
                None,
                None,
                "assertion failed: [transfer_tf: label [42] "
                'of record id \\"r1\\" in shard \\"s\\"]\n\t [[{{node A}}]]',
            ),
            'transfer-x: error: label [42] of record id "r1" in shard "s"',
        ),
        (
            tf.errors.DataLossError(None, None, "truncated record at 12\nstack"),
            "transfer-x: error: DataLossError: truncated record at 12; check the files the flags "
            "name",
        ),
        (
            files.BusyError("study folder /s is in use by another process (pid 7); wait"),
            "transfer-x: error: study folder /s is in use by another process (pid 7); wait",
        ),
    ]
    for error, line in cases:
        with pytest.raises(SystemExit) as exit_:
            fails_with(error)([])
        assert exit_.value.code == 1
        assert capsys.readouterr().err.splitlines() == [line]
    with pytest.raises(SystemExit) as exit_:
        fails_with(KeyboardInterrupt())([])
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "transfer-x: interrupted; rerun the same command to resume\n"
    with pytest.raises(SystemExit) as exit_:
        fails_with(cli.Terminated())([])
    assert exit_.value.code == 143
    assert capsys.readouterr().err == "transfer-x: terminated; rerun the same command to resume\n"
    for bug in (RuntimeError("a bug"), KeyError("feature_dim"), AttributeError("x")):
        with pytest.raises(type(bug)):  # a bug keeps its traceback
            fails_with(bug)([])
    monkeypatch.setenv("TRANSFER_TF_TRACEBACK", "1")
    with pytest.raises(ValueError):
        fails_with(ValueError("bad value"))([])
