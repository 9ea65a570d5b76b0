"""Reliability (issue 20) through the binaries: one line per error (`<binary>: error: ...`, exit
1, no traceback, no usage text), values checked when the flags are parsed, a damaged cell never a
traceback in transfer-analyze, a damaged SavedModel named, two studies never in one folder, and
Ctrl-C stops a study's running step.

Each subprocess costs a TensorFlow import (~10 s here) unless the binary parses its flags first.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from transfer_tf import files
from transfer_tf.protocols import sweep
from transfer_tf.study.steps import study_lock

pytestmark = [pytest.mark.subprocess]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL (the package chooses)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
    return {**env, "CUDA_VISIBLE_DEVICES": "", **extra}


def _run(module, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


def _one_error_line(proc, binary):
    """The process failed with exactly one line on stderr, `<binary>: error: ...`."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{binary}: error: "), lines[0]
    return lines[0]


def test_bad_flag_values_are_one_line_at_parse_time():
    for module, binary, flag in (
        ("transfer_tf.bin.make_tfrecords", "transfer-make-tfrecords", "--num_shards=0"),
        ("transfer_tf.bin.make_tfrecords", "transfer-make-tfrecords", "--max_per_class=-3"),
        ("transfer_tf.bin.study", "transfer-study", "--max_concurrent=0"),
        ("transfer_tf.bin.study", "transfer-study", "--subset_sizes=10,0"),
        ("transfer_tf.bin.extract_features", "transfer-extract-features", "--batch_size=0"),
        ("transfer_tf.bin.finetune", "transfer-finetune", "--train_steps=0"),
    ):
        line = _one_error_line(_run(module, flag), binary)
        assert f"flag {flag.split('=')[0]}=" in line, line


def test_a_truncated_saved_model_is_one_line_naming_it(tmp_path):
    import tensorflow as tf

    from transfer_tf.data.tfrecords import manifest_path, write_manifest, write_split

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones([3, 4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.uint8, name="images")])
        def features(self, images):
            pooled = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])
            return {"features": pooled @ self.w}

    net = Net()
    saved = tmp_path / "net"
    tf.saved_model.save(net, str(saved), signatures={"features": net.features})
    data = saved / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    png = tf.io.encode_png(np.zeros([8, 8, 3], np.uint8)).numpy()
    shards = write_split(
        tmp_path / "rec" / "toy", "val", [("a", 0, png, "a"), ("b", 1, png, "b")], 2, num_classes=2
    )
    write_manifest(
        manifest_path(tmp_path / "rec", "toy", "val"),
        dict(
            dataset="toy",
            split="val",
            num_examples=2,
            num_classes=2,
            multi_label=False,
            metric="top1",
            shards=shards,
        ),
    )
    proc = _run(
        "transfer_tf.bin.extract_features",
        f"--saved_model={saved}",
        f"--records_dir={tmp_path / 'rec'}",
        "--dataset=toy",
        "--splits=val",
        f"--features_dir={tmp_path / 'features'}",
    )
    # One line: neither a traceback nor TensorFlow's "failed call to cuInit" on a CPU machine.
    line = _one_error_line(proc, "transfer-extract-features")
    assert f"SavedModel {saved} cannot be loaded" in line and "export it again" in line
    assert not (tmp_path / "features").exists()


def test_transfer_analyze_leaves_out_and_counts_damaged_cells(tmp_path):
    rng = np.random.default_rng(0)
    top1 = {"a": 0.70, "b": 0.74, "c": 0.78}
    y_true = np.arange(200) % 4
    cells, outputs = [], {}
    for model, t in top1.items():
        for protocol, shift in (("logreg", 0.0), ("finetune", 0.05)):
            cell = dict(
                protocol=protocol,
                model=model,
                architecture=model,
                settings="fair",
                dataset="d0",
                metric="top1",
                stage="final",
                hparams={"x": 1.0},
                seed=0,
                per_class=None,
            )
            right = rng.random(200) < t + shift
            outputs[sweep.cell_id(cell)] = {
                "test_metric": float(right.mean()),
                "predictions": {"y_true": y_true, "y_pred": np.where(right, y_true, 0)},
            }
            cells.append(cell)
    sweep.run_cells(
        cells, str(tmp_path / "results"), lambda c: outputs[sweep.cell_id(c)], progress=False
    )
    pd.DataFrame(
        {
            "model": list(top1),
            "architecture": list(top1),
            "settings": "fair",
            "source_top1": list(top1.values()),
            "top1_source": "test",
        }
    ).to_csv(tmp_path / "models.csv", index=False)
    # The best model's fine-tuning predictions: what the pairwise tests of the top models read.
    damaged = tmp_path / "results" / "finetune" / f"{sweep.cell_id(cells[5])}.predictions.npz"
    damaged.write_bytes(damaged.read_bytes()[:300])
    proc = _run(
        "transfer_tf.bin.analyze",
        f"--results_dir={tmp_path / 'results'}",
        f"--model_table={tmp_path / 'models.csv'}",
        f"--output_dir={tmp_path / 'out'}",
        "--num_bootstrap=20",
        "--permutation_samples=20",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "transfer-analyze: 1 cell file(s) under" in proc.stdout
    assert "rerun their sweeps to compute them again" in proc.stdout
    assert (tmp_path / "out" / "report.md").exists()


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def test_two_studies_never_share_a_folder_and_ctrl_c_stops_the_running_step(tmp_path):
    study_dir = tmp_path / "study"
    command = [
        sys.executable,
        "-m",
        "transfer_tf.bin.study",
        f"--study_dir={study_dir}",
        # A first step that runs for a while (all of Fashion-MNIST's records), so that Ctrl-C
        # meets it running even on a loaded machine.
        "--target_datasets=fashion_mnist",
    ]
    # Another transfer-study holds the folder: refused at once, in one line.
    study_dir.mkdir()
    with study_lock(str(study_dir)):
        busy = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_env())
    line = _one_error_line(busy, "transfer-study")
    assert f"study folder {study_dir} is in use by another process (pid {os.getpid()}" in line
    assert not (study_dir / "steps").exists() and not (study_dir / "logs").exists()
    # A running study: its first step (making the records) starts, then Ctrl-C.
    # SIGINT's default action restored: a shell that runs this suite in the background (`&`)
    # starts it ignored, and Python keeps an inherited "ignore" (Ctrl-C then would do nothing).
    study = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = study_dir / "logs" / "records-fashion_mnist.log"
    deadline = time.time() + 180
    while time.time() < deadline and study.poll() is None and not _children(study.pid):
        time.sleep(0.1)
    children = _children(study.pid)
    assert children and log.exists(), study.communicate()[1][-3000:]
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_env())
    assert "is in use by another process" in _one_error_line(second, "transfer-study")
    study.send_signal(signal.SIGINT)
    out, err = study.communicate(timeout=60)
    assert study.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == [
        "transfer-study: interrupted; rerun the same command to resume"
    ], err[-3000:]
    assert "[study] interrupted: stopped 1 running step(s)" in out
    time.sleep(0.5)
    assert not [c for c in children if os.path.exists(f"/proc/{c}") and not _zombie(c)]
    assert not (study_dir / "steps" / "records-fashion_mnist.done.json").exists()
    with files.exclusive_lock(str(study_dir / ".study.lock"), "study", ""):
        pass  # released


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_transfer_logreg_on_other_features_runs_its_cells_again(tmp_path):
    rng = np.random.default_rng(0)

    def features_dir(path, shift):
        path.mkdir()
        for split, n in (("train", 120), ("val", 60), ("test", 60)):
            y = np.arange(n) % 3
            x = rng.normal(size=(n, 5)) + shift * y[:, None]
            np.savez(
                path / f"{split}.npz",
                features=x.astype(np.float32),
                labels=y,
                ids=np.array([f"{split}/{i}" for i in range(n)]),
            )
        (path / "manifest.json").write_text('{"model": "m", "dataset": "d", "metric": "top1"}')

    features_dir(tmp_path / "a", 1.0)
    features_dir(tmp_path / "b", 0.3)  # other features, the same recipe (cell ids)

    def logreg(features, results):
        proc = _run(
            "transfer_tf.bin.logreg",
            f"--features_dir={features}",
            f"--results_dir={results}",
            "--num_l2=3",
            "--blas_threads=1",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    logreg(tmp_path / "a", tmp_path / "results")
    rerun = logreg(tmp_path / "b", tmp_path / "results")
    fresh = logreg(tmp_path / "b", tmp_path / "fresh")
    assert rerun.count("changed since it ran; running it again") >= 3  # every grid cell
    assert rerun.strip().splitlines()[-1] == fresh.strip().splitlines()[-1]  # the test metric


def test_a_study_step_rerun_after_a_flagfile_edit_keeps_its_export(tmp_path):
    """A resumed study reruns the export steps after an edit (here, of a comment in a flagfile
    the step reads): the export (--replace, as the planner writes it) keeps the same SavedModel
    instead of failing "already holds a SavedModel" on every later resume."""
    from transfer_tf.study.steps import Step, run_step

    flagfile = tmp_path / "export.cfg"
    flagfile.write_text("# the export's flags\n--num_classes=10\n")
    export_dir = tmp_path / "saved_models" / "m"
    step = Step(
        "export-m",
        (
            "transfer-export",
            "--model=mobilenet_v1",
            "--weights=",
            "--input_size=32",
            f"--flagfile={flagfile}",
            f"--export_dir={export_dir}",
            "--replace",
        ),
    )
    state = str(tmp_path / "state")
    assert not run_step(step, state, env=_env())["skipped"]
    written = (export_dir / "saved_model.pb").stat().st_mtime_ns
    flagfile.write_text("# the export's flags, edited\n--num_classes=10\n")
    again = run_step(step, state, env=_env())  # raised StepFailed before
    assert not again["skipped"]  # it ran: the command's fingerprint changed
    assert (export_dir / "saved_model.pb").stat().st_mtime_ns == written  # the same export, kept
    assert sorted(p.name for p in export_dir.parent.iterdir()) == ["m"]
