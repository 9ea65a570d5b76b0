"""The quick mini-study end to end (flags/demo/quick.cfg), as scripts/demo.sh runs the full one.

One real run of every binary chained by transfer-study: TFRecords of embedded data, pretraining
in both training settings, export, EfficientNet-Lite0 with its real ImageNet weights, features,
logistic regression, fine-tuning, scratch, model table and report. Then a rerun resumes: every
step is already done.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import matplotlib.image as mpimg
import pandas as pd
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def _study(study_dir, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.study",
            "--flagfile=flags/demo/quick.cfg",
            f"--study_dir={study_dir}",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("quick") / "study"
    proc = _study(study_dir)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return study_dir, proc.stdout


def test_quick_study_writes_complete_tables(quick_study):
    study_dir, stdout = quick_study
    report = study_dir / "report"
    best = pd.read_csv(report / "best_test_metric.csv")
    models = {"efficientnet_lite0", "mobilenet_v1_fair", "mobilenet_v1_inception_default"}
    expected = (
        {("logreg", m, "sklearn_digits") for m in models}
        | {("finetune", m, "sklearn_digits") for m in models - {"efficientnet_lite0"}}
        | {("scratch", "mobilenet_v1_fair", "sklearn_digits")}
    )
    assert set(zip(best["protocol"], best["model"], best["dataset"], strict=True)) == expected
    assert best["test_metric"].between(0, 1).all() and best["test_metric"].notna().all()
    # The logistic-regression sweeps used the paper's full 45-value grid.
    cells = pd.concat(
        [
            pd.DataFrame([json.loads(p.read_text())])
            for p in (study_dir / "results" / "logreg").glob("*.json")
        ]
    )
    cells["per_class"] = cells["per_class"].fillna(0).astype(int)  # 0: the whole training set
    grid = cells[cells["stage"] == "grid"].groupby(["model", "per_class"]).size()
    assert (grid == 45).all()
    assert set(grid.index) == {(m, 0) for m in models} | {("mobilenet_v1_fair", 5)}
    table = pd.read_csv(study_dir / "model_table.csv")
    assert set(table["model"]) == models
    lite = table.set_index("model").loc["efficientnet_lite0"]
    assert lite["source_dataset"] == "imagenet2012" and 0.7 < lite["source_top1"] < 0.8
    here = table[table["settings"] != "public"]
    assert (here["source_dataset"] == "fashion_mnist").all()
    assert here["source_top1"].between(0, 1).all()
    win = pd.read_csv(report / "win_counts.csv")
    assert len(win) == 3 and (win["total"] >= 1).all()
    # Every figure the report lists exists and is not blank; the rest say why they were skipped.
    headline = json.loads((report / "headline.json").read_text())
    assert headline["figures"], "no figures"
    for name, path in headline["figures"].items():
        pixels = mpimg.imread(path)[..., :3]
        assert pixels.std() > 0.02 and (pixels.mean(axis=-1) < 0.9).mean() > 0.005, name
    assert all(why for why in headline["skipped"].values())
    assert (report / "report.html").stat().st_size > 10_000
    # Fig. 9: the three protocols of the subset model on 5 digits per class.
    subsets = pd.read_csv(report / "subset_size.csv")
    assert subsets[["dataset", "per_class"]].values.tolist() == [["sklearn_digits", 5]]
    assert subsets[["finetune", "logreg", "scratch"]].notna().all(axis=None)
    assert "fig9_subset_size" in headline["figures"]
    # Beyond the paper: the predictors ran on every source's features and the report scores them.
    predictors = pd.read_csv(report / "predictor_scores.csv")
    assert set(predictors["model"]) == models
    assert {"knn", "logme", "leep", "nce", "hscore", "gbc"} <= set(predictors["predictor"])
    # The last lines name the report and how to open TensorBoard.
    tail = stdout.strip().splitlines()[-3:]
    assert any("TensorBoard" in line for line in tail)
    assert tail[-1].startswith("report: ") and tail[-1].endswith("report.html")


def test_quick_study_resumes_with_every_step_done(quick_study):
    study_dir, _ = quick_study
    before = sorted(os.listdir(study_dir / "results" / "logreg"))
    proc = _study(study_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = [line for line in proc.stdout.splitlines() if re.match(r"\[study\] \d+/\d+ ", line)]
    assert len(progress) == 24 and all("already done" in line for line in progress), progress
    assert sorted(os.listdir(study_dir / "results" / "logreg")) == before


def test_study_rejects_an_unknown_finetune_model(tmp_path):
    proc = _study(tmp_path / "s", "--finetune_models=nope", "--dry_run")
    assert proc.returncode != 0
    assert "--finetune_models: 'nope' is not a source model" in proc.stderr


def test_dry_run_plans_every_binary(tmp_path):
    proc = _study(tmp_path / "s", "--dry_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    binaries = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ")}
    assert binaries == {
        "transfer-make-tfrecords",
        "transfer-pretrain",
        "transfer-export",
        "transfer-extract-features",
        "transfer-logreg",
        "transfer-finetune",
        "transfer-scratch",
        "python",
        "transfer-predictors",
        "transfer-analyze",
    }
    assert not (tmp_path / "s").exists()
