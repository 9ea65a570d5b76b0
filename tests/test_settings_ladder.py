"""Fig. 3's ladder of training settings: labels -> the four settings, the paper's order, the
planner's pretrain commands, and a one-line error for an unknown label."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from transfer_tf import settings_ladder
from transfer_tf.analysis import comparisons, figures
from transfer_tf.study import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# By hand from Sec. 4.1: Inception's default is BN without γ, label smoothing 0.1, dropout 0.2
# and the aux head; each rung switches the named choices off.
EXPECTED = {
    "inception_default": (False, 0.1, 0.2, True),
    "inception_default_with_bn_gamma": (True, 0.1, 0.2, True),
    "inception_default_no_label_smoothing": (False, 0.0, 0.2, True),
    "inception_default_no_dropout": (False, 0.1, 0.0, True),
    "inception_default_no_aux_head": (False, 0.1, 0.2, False),
    "inception_default_with_bn_gamma_no_label_smoothing": (True, 0.0, 0.2, True),
    "inception_default_with_bn_gamma_no_label_smoothing_no_dropout": (True, 0.0, 0.0, True),
    "fair": (True, 0.0, 0.0, False),
}


def test_labels_map_to_the_four_settings_in_the_papers_order():
    assert settings_ladder.LABELS == tuple(EXPECTED)  # most regularised first, as Fig. 3
    for label, (bn_scale, smoothing, dropout, aux) in EXPECTED.items():
        assert settings_ladder.rung(label).values() == {
            "bn_scale": bn_scale,
            "label_smoothing": smoothing,
            "dropout_rate": dropout,
            "aux_head": aux,
        }, label
    assert settings_ladder.ONE_REMOVED == tuple(list(EXPECTED)[:5]) + ("fair",)
    assert settings_ladder.rung("inception_default_no_dropout").tick().split("\n") == [
        "BN γ −",
        "label smooth. +",
        "dropout −",
        "aux head +",
    ]
    with pytest.raises(ValueError, match=r"^unknown training-settings label 'no_bn'; use one of"):
        settings_ladder.rung("no_bn")


def test_the_ends_are_the_training_settings_records():
    from transfer_tf.models import TrainingSettings

    assert TrainingSettings.from_label("fair") == TrainingSettings.fair()
    assert TrainingSettings.from_label("inception_default") == TrainingSettings.inception_default()
    assert TrainingSettings.from_label("inception_default_no_aux_head") == TrainingSettings(
        bn_scale=False, dropout_rate=0.2, aux_head=False, label_smoothing=0.1
    )


def test_figure_and_table_follow_the_ladder_not_the_alphabet(tmp_path, monkeypatch):
    labels = ["public", "fair", "inception_default_no_dropout", "inception_default"]
    assert settings_ladder.ordered(labels + ["inception_default_with_bn_gamma", "fair"]) == [
        "inception_default",
        "inception_default_with_bn_gamma",
        "inception_default_no_dropout",
        "fair",
        "public",
    ]
    best = pd.DataFrame(
        [
            {
                "protocol": "logreg",
                "model": f"net_{s}",
                "architecture": "net",
                "settings": s,
                "dataset": d,
                "logit": v + i,
                "source_logit": 1.0,
                "source_dataset": "imagenet2012",
            }
            for i, s in enumerate(["fair", "inception_default_no_dropout", "inception_default"])
            for d, v in (("a", 0.1), ("b", 0.3))
        ]
    )
    table = comparisons.settings_variant_table(best, "logreg")
    assert table["settings"].tolist() == [
        "inception_default",
        "inception_default_no_dropout",
        "fair",
    ]
    assert table["mean_logit"].tolist() == pytest.approx([2.2, 1.2, 0.2])
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    figures.settings_variants(table, "logreg", 3, str(tmp_path / "fig3.png"))
    ticks = [t.get_text() for t in drawn["fig"].axes[0].get_xticklabels()]
    assert [t.split("\n")[0] for t in ticks] == table["settings"].tolist()
    assert ticks[1].split("\n")[1:] == ["BN γ −", "label smooth. +", "dropout −", "aux head +"]


def test_planner_pretrains_each_rung_with_its_four_flags(tmp_path):
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path),
        pretrain_models=("inception_v3", "mobilenet_v1"),
        pretrain_settings=settings_ladder.ONE_REMOVED,
    )
    steps = {s.name: s for s in plan.plan_study(cfg)}
    pretrain = {n: s.argv[-4:] for n, s in steps.items() if n.startswith("pretrain-")}
    assert len(pretrain) == 12
    assert pretrain["pretrain-inception_v3_inception_default_no_label_smoothing"] == (
        "--nobn_scale",
        "--dropout_rate=0.2",
        "--aux_head",
        "--label_smoothing=0.0",
    )
    assert pretrain["pretrain-inception_v3_inception_default_with_bn_gamma"] == (
        "--bn_scale",
        "--dropout_rate=0.2",
        "--aux_head",
        "--label_smoothing=0.1",
    )
    assert pretrain["pretrain-inception_v3_inception_default_no_aux_head"][2] == "--noaux_head"
    # MobileNet v1 has no aux head to remove: the flag is off on every rung.
    assert {a[2] for n, a in pretrain.items() if "mobilenet_v1" in n} == {"--noaux_head"}
    table = steps["model-table"].argv
    assert (
        "--model=inception_v3_inception_default_no_dropout:inception_v3:"
        + ("inception_default_no_dropout")
        in table
    )
    with pytest.raises(ValueError, match=r"--pretrain_settings: unknown training-settings label"):
        plan.plan_study(
            plan.StudyConfig(
                study_dir=str(tmp_path), pretrain_models=("mobilenet_v1",), pretrain_settings=("x",)
            )
        )


@pytest.mark.subprocess
def test_an_unknown_label_is_one_line_from_transfer_study(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_tf.bin.study",
            "--pretrain_models=mobilenet_v1",
            "--pretrain_settings=fair,inception_default_no_bn",
            f"--study_dir={tmp_path}",
            "--dry_run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        # A user's shell: the package chooses the log level (no TensorFlow start-up lines).
        env={
            **{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
            "CUDA_VISIBLE_DEVICES": "",
        },
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "transfer-study: error: --pretrain_settings: unknown training-settings label "
        "'inception_default_no_bn'"
    ), proc.stderr[-2000:]


def test_the_fig3_flagfile_requests_the_whole_ladder_in_order():
    with open(os.path.join(ROOT, "flags/scale/paper_fig3_ladder.cfg")) as f:
        (line,) = [x for x in f if x.startswith("--pretrain_settings=")]
    assert tuple(line.strip().split("=", 1)[1].split(",")) == settings_ladder.LABELS
