"""Adopt work done outside a study: mark its records / pretrain steps done once their outputs exist.

On a cluster two kinds of steps are usually run by hand, before `transfer-study`: the TFRecords
(ImageNet and the manual-download datasets need `--manual_dir`, which a study's records step does
not pass) and the ImageNet pretraining (many GPUs with MultiWorkerMirroredStrategy, or a TPU:
flags/scale/). Run this with the study's own flags; every planned step of the adopted kinds whose
outputs are complete gets its done-marker, so the study skips it:

    python -m transfer_tf.bin.adopt --flagfile=flags/scale/paper_grid.cfg \\
        --study_dir=/shared/study --adopt=records,pretrain

A records step is complete when `<records_dir>/<dataset>/` holds the train, val and test
manifests (written last by transfer-make-tfrecords). A pretrain step is complete when its
model_dir holds a run of the step's architecture, dataset and four training settings whose last
checkpoint is at its `train_steps`. Incomplete steps are listed and left to the study.
"""

from __future__ import annotations

import os
import re

from transfer_tf.data.tfrecords import RecordsNotFoundError, read_manifest
from transfer_tf.run_dir import RunDir
from transfer_tf.study.steps import Step, is_done, write_marker
from transfer_tf.training.config import load_config

KINDS = ("records", "pretrain")


def _flag(step: Step, name: str) -> str | None:
    prefix = f"--{name}="
    values = [a[len(prefix) :] for a in step.argv if a.startswith(prefix)]
    return values[-1] if values else None


def records_missing(step: Step) -> str | None:
    """Why the records of a records step are not complete, or None."""
    for split in ("train", "val", "test"):
        try:
            read_manifest(_flag(step, "records_dir"), _flag(step, "dataset"), split)
        except RecordsNotFoundError as e:
            return str(e)
    return None


def pretraining_missing(step: Step) -> str | None:
    """Why the model_dir of a pretrain step does not hold its finished run, or None."""
    model_dir = _flag(step, "model_dir")
    try:
        config = load_config(model_dir)
    except FileNotFoundError as e:
        return str(e)
    want = {
        "model": _flag(step, "model"),
        "dataset": _flag(step, "dataset"),
        "settings": {
            "bn_scale": "--bn_scale" in step.argv,
            "dropout_rate": float(_flag(step, "dropout_rate")),
            "aux_head": "--aux_head" in step.argv,
            "label_smoothing": float(_flag(step, "label_smoothing")),
        },
    }
    got = {"model": config.model, "dataset": config.dataset, "settings": dict(config.settings)}
    if got != want:
        return f"{model_dir} holds {got}, the study plans {want}"
    try:
        with open(os.path.join(RunDir(model_dir).ckpt, "checkpoint")) as f:
            match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', f.read())
    except OSError:
        match = None
    step_reached = int(match.group(1)) if match else 0
    if step_reached != config.train_steps:
        return f"{model_dir} is at step {step_reached} of {config.train_steps}"
    return None


def adopt(steps: list[Step], state_dir: str, kinds) -> tuple[list[str], dict[str, str]]:
    """Marks the complete steps of `kinds` done; returns (adopted names, {name: why not})."""
    check = {"records": records_missing, "pretrain": pretraining_missing}
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"--adopt: unknown step kinds {unknown}; use {list(KINDS)}")
    adopted, missing = [], {}
    os.makedirs(os.path.join(state_dir, "steps"), exist_ok=True)
    for step in steps:
        kind = step.name.split("-", 1)[0]
        if kind not in kinds or is_done(state_dir, step):
            continue
        why = check[kind](step)
        if why is not None:
            missing[step.name] = why
            continue
        write_marker(state_dir, step, wall_time_s=0.0, log=None, adopted=True)
        adopted.append(step.name)
    return adopted, missing
