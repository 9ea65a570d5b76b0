"""The study's model table: each source model's source-task top-1, the x-axis of Figs. 1-3.

Public checkpoints get their published ImageNet top-1 (the model registry's, read from its
TensorFlow-free copy `registry_table`); models
pretrained in the study get their measured top-1 on the source dataset's test split (the last row
of the run's history.csv); sources from outside the registry (any SavedModel, a Keras file) get
the top-1 the user gives (`given_top1`), as may any model to override the others. The CSV has the
columns `transfer-analyze` reads (docs/DESIGN.md), plus `source_dataset` so a reader never
mistakes a Fashion-MNIST accuracy for an ImageNet one.

    python -m transfer_tf.study.model_table --study_dir=runs/demo/X \
        --model=efficientnet_lite0:efficientnet_lite0:public --model=mobilenet_v2_fair:mobilenet_v2:fair \
        --model=my_net::external:0.762 --top1_source="my_net=model card, 2024"

A fourth field of --model is the source top-1 as a fraction; the architecture may be empty.
"""

from __future__ import annotations

import csv
import json
import os

from absl import app, flags

from transfer_tf.run_dir import RunDir
from transfer_tf.study.registry_table import published_top1

# `source_top1`: the source model's top-1 on the data it was trained on (`source_dataset`);
# tables written before 2026-12-01 call it `imagenet_top1` (read as this by the analysis).
COLUMNS = ("model", "architecture", "settings", "source_top1", "top1_source", "source_dataset")


def measured_top1(model_dir: str) -> tuple[float, int]:
    """(last evaluation metric, its step) from a training run's history.csv."""
    run = RunDir(model_dir)
    if not os.path.exists(run.history):
        raise FileNotFoundError(
            f"{run.history} is missing: the pretraining run in {model_dir} did not finish; rerun "
            "the study to resume it"
        )
    rows = run.read_history()
    if not rows:
        raise ValueError(f"{run.history} has no evaluation rows")
    return rows[-1]["eval_metric"], rows[-1]["step"]


GIVEN_SOURCE = "given by the user"


def given_top1(value, label: str) -> float:
    """A user-given source top-1 as a fraction in [0, 1]."""
    try:
        top1 = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"model {label!r}: source top-1 {value!r} is not a number") from None
    if not 0.0 <= top1 <= 1.0:
        raise ValueError(
            f"model {label!r}: source top-1 {value!r} must be a fraction in [0, 1] "
            f"(e.g. {top1 / 100:.3f} for {top1:g}%)"
        )
    return top1


def model_row(
    study_dir: str, label: str, architecture: str, settings: str, given: dict | None = None
) -> dict:
    """One row; `given` = {"top1", optional "top1_source", "source_dataset"} from the user."""
    if given is not None:
        return dict(
            model=label,
            architecture=architecture,
            settings=settings,
            source_top1=given_top1(given["top1"], label),
            top1_source=given.get("top1_source") or GIVEN_SOURCE,
            source_dataset=given.get("source_dataset") or "imagenet2012",
        )
    if settings == "public":
        top1, top1_source = published_top1(architecture)
        return dict(
            model=label,
            architecture=architecture,
            settings=settings,
            source_top1=top1,
            top1_source=top1_source,
            source_dataset="imagenet2012",
        )
    if settings == "external":
        raise ValueError(
            f"model {label!r} is a source from outside the registry: give its source top-1 "
            f"(--model={label}:{architecture}:external:0.75)"
        )
    model_dir = os.path.join(study_dir, "models", label)
    top1, step = measured_top1(model_dir)
    with open(RunDir(model_dir).config) as f:
        source = json.load(f).get("dataset", "unknown")
    return dict(
        model=label,
        architecture=architecture,
        settings=settings,
        source_top1=top1,
        top1_source=f"measured: {source} test top-1 at step {step}",
        source_dataset=source,
    )


def write_model_table(
    study_dir: str, models: list[tuple[str, str, str]], given: dict[str, dict] | None = None
) -> str:
    """`<study_dir>/model_table.csv`; `given` maps a label to its user-given top-1 (`model_row`)."""
    given = given or {}
    rows = [model_row(study_dir, *m, given=given.get(m[0])) for m in models]
    path = os.path.join(study_dir, "model_table.csv")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def parse_models(entries, top1_sources=(), source_datasets=()):
    """--model / --top1_source / --source_dataset values -> (models, given) of
    `write_model_table`."""
    models, given = [], {}
    for entry in entries:
        parts = entry.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"--model={entry!r}: expected label:architecture:settings[:top1]")
        models.append(tuple(parts[:3]))
        if len(parts) == 4:
            given[parts[0]] = {"top1": parts[3]}
    for flag, key, values in (
        ("top1_source", "top1_source", top1_sources),
        ("source_dataset", "source_dataset", source_datasets),
    ):
        for value in values:
            label, sep, text = value.partition("=")
            if not sep or label not in given:
                raise ValueError(
                    f"--{flag}={value!r}: expected LABEL=TEXT for a --model with a given top-1"
                )
            given[label][key] = text
    return models, given


def define_flags() -> None:
    """The flags of `python -m transfer_tf.study.model_table` (defined only when run, so that
    importing this module, as the planner does, defines none)."""
    flags.DEFINE_string("study_dir", None, "The study directory (holds models/<label>/).")
    flags.DEFINE_multi_string(
        "model", [], "label:architecture:settings[:top1], once per source model (top1: a fraction)."
    )
    flags.DEFINE_multi_string("top1_source", [], "LABEL=TEXT: where a given top-1 comes from.")
    flags.DEFINE_multi_string(
        "source_dataset", [], "LABEL=NAME: the dataset of a given top-1 (default imagenet2012)."
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.study_dir:
        raise app.UsageError("--study_dir is required")
    try:
        models, given = parse_models(
            flags.FLAGS.model, flags.FLAGS.top1_source, flags.FLAGS.source_dataset
        )
        path = write_model_table(flags.FLAGS.study_dir, models, given)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    print(f"wrote {path} ({len(models)} models)")


if __name__ == "__main__":
    from transfer_tf.bin import cli  # one-line errors, as every binary (only when run)

    define_flags()
    cli.run("model_table", main)
