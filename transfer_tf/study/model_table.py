"""The study's model table: each source model's source-task top-1, the x-axis of Figs. 1-3.

Public checkpoints get their published ImageNet top-1 (from the model registry); models
pretrained in the study get their measured top-1 on the source dataset's test split (the last row
of the run's history.csv). The CSV has the columns `transfer-analyze` reads (docs/DESIGN.md), plus
`source_dataset` so a reader never mistakes a Fashion-MNIST accuracy for an ImageNet one.

    python -m transfer_tf.study.model_table --study_dir=runs/demo/X \
        --model=efficientnet_lite0:efficientnet_lite0:public --model=mobilenet_v2_fair:mobilenet_v2:fair
"""

from __future__ import annotations

import csv
import json
import os

from absl import app, flags

HISTORY_NAME = "history.csv"
COLUMNS = ("model", "architecture", "settings", "imagenet_top1", "top1_source", "source_dataset")


def measured_top1(model_dir: str) -> tuple[float, int]:
    """(last evaluation metric, its step) from a training run's history.csv."""
    path = os.path.join(model_dir, HISTORY_NAME)
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: the pretraining run in {model_dir} did not finish; rerun the "
            "study to resume it") from None
    if not rows:
        raise ValueError(f"{path} has no evaluation rows")
    return float(rows[-1]["val_metric"]), int(rows[-1]["step"])


def model_row(study_dir: str, label: str, architecture: str, settings: str) -> dict:
    if settings == "public":
        from transfer_tf.models import get_spec

        spec = get_spec(architecture)
        return dict(model=label, architecture=architecture, settings=settings,
                    imagenet_top1=spec.imagenet_top1, top1_source=spec.top1_source,
                    source_dataset="imagenet2012")
    model_dir = os.path.join(study_dir, "models", label)
    top1, step = measured_top1(model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        source = json.load(f).get("dataset", "unknown")
    return dict(model=label, architecture=architecture, settings=settings, imagenet_top1=top1,
                top1_source=f"measured: {source} test top-1 at step {step}",
                source_dataset=source)


def write_model_table(study_dir: str, models: list[tuple[str, str, str]]) -> str:
    rows = [model_row(study_dir, *m) for m in models]
    path = os.path.join(study_dir, "model_table.csv")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


flags.DEFINE_string("study_dir", None, "The study directory (holds models/<label>/).")
flags.DEFINE_multi_string("model", [], "label:architecture:settings, once per source model.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.study_dir:
        raise app.UsageError("--study_dir is required")
    models = []
    for spec in flags.FLAGS.model:
        parts = spec.split(":")
        if len(parts) != 3:
            raise app.UsageError(f"--model={spec!r}: expected label:architecture:settings")
        models.append(tuple(parts))
    print(f"wrote {write_model_table(flags.FLAGS.study_dir, models)} ({len(models)} models)")


if __name__ == "__main__":
    app.run(main)
