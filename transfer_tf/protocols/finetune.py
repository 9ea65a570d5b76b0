"""Protocols 2 and 3 (Sec. 4.2, 4.3): fine-tuning and training from random initialisation, as
resumable sweeps.

Each grid cell trains on "train" and scores "val" (recording the validation metric against step,
for Fig. 8); the cell with the best validation metric is retrained on "train+val" and scored on
"test" (the "final" cell, with per-example predictions for McNemar tests). Cells go through
`transfer_tf.protocols.sweep.run_cells`, so a killed sweep rerun skips finished cells, and a cell
cut short resumes from the checkpoint in its own model_dir (`<work_dir>/<cell_id>/`).

The recipe (SPEC.md, SimCLR appendix B.8): SGD with Nesterov momentum 0.9, cosine decay to 0,
batch 256, 20,000 steps for fine-tuning, Inception augmentation (random-resized crop + flip), BN
momentum max(1 − 10/s, 0.9) with s steps per epoch, weight decay divided by the learning rate
(`finetune_grid.l2_coefficient`), no EMA. Fine-tuning starts from a pretraining model_dir's EMA
weights or from registry weights (e.g. EfficientNet-Lite's ImageNet weights) with a new,
zero-initialised logits layer; training from scratch starts from the registry's random
initialisation.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable

import numpy as np

from transfer_tf.protocols import sweep
from transfer_tf.protocols.finetune_grid import l2_coefficient

PROTOCOLS = ("finetune", "scratch")
DEFAULT_STEPS = {"finetune": 20_000, "scratch": 40_000}


@dataclasses.dataclass(frozen=True)
class Source:
    """The network a sweep starts from.

    architecture: registry model name; init: "model_dir", "saved_model", "weights" or "random";
    settings: the network's TrainingSettings dict (fine-tuning-time dropout / aux head / label
    smoothing included); label / settings_label: the result schema's `model` and `settings`.
    """

    architecture: str
    init: str
    settings: dict
    label: str
    settings_label: str
    input_size: int | None = None
    init_model_dir: str | None = None
    init_saved_model: str | None = None
    weights: str | None = None


def settings_label(settings: dict) -> str:
    """ "fair", "inception_default" or "custom" for a TrainingSettings dict."""
    from transfer_tf.models import TrainingSettings

    current = TrainingSettings.from_dict(settings)
    if current == TrainingSettings.fair():
        return "fair"
    if current == TrainingSettings.inception_default():
        return "inception_default"
    return "custom"


def _run_settings_label(settings: dict) -> str:
    """The settings label of a training run; no recorded settings means the defaults (fair)."""
    return settings_label(settings) if settings else "fair"


def _with_fine_tuning_settings(settings: dict, dropout_rate, aux_head, label_smoothing) -> dict:
    """A pretrained network's settings with the fine-tuning run's own dropout, aux head and label
    smoothing where given (None keeps the network's)."""
    overrides = {"dropout_rate": dropout_rate, "aux_head": aux_head,
                 "label_smoothing": label_smoothing}  # fmt: skip
    return {**settings, **{k: v for k, v in overrides.items() if v is not None}}


def source_from_model_dir(
    model_dir: str, *, dropout_rate=None, aux_head=None, label_smoothing=None, label=None
) -> Source:
    """Fine-tune the run in `model_dir`: its architecture, input size and BN γ; the other three
    settings are the fine-tuning run's own (the paper switches them on for fine-tuning, Fig. 5)."""
    from transfer_tf.training import load_config

    config = load_config(model_dir)
    pretrained_label = _run_settings_label(config.settings)
    settings = _with_fine_tuning_settings(config.settings, dropout_rate, aux_head, label_smoothing)
    return Source(
        architecture=config.model,
        init="model_dir",
        settings=settings,
        label=label or f"{config.model}_{pretrained_label}",
        settings_label=pretrained_label,
        input_size=config.input_size,
        init_model_dir=os.path.abspath(model_dir),
    )


def source_from_saved_model(
    export_dir: str, *, dropout_rate=None, aux_head=None, label_smoothing=None, label=None
) -> Source:
    """Fine-tune a SavedModel written by transfer-export: the registry network it records, its
    weights; as for a model_dir, the three fine-tuning-time settings are the run's own."""
    from transfer_tf.training.saved_model_info import read_export_info

    info = read_export_info(export_dir)
    recorded = info.get("settings") or {}
    if info.get("source") in ("registry", "checkpoint"):  # published weights
        pretrained_label = "public"
    else:
        pretrained_label = _run_settings_label(recorded)
    settings = _with_fine_tuning_settings(recorded, dropout_rate, aux_head, label_smoothing)
    return Source(
        architecture=info["model"],
        init="saved_model",
        settings=settings,
        label=label or f"{info['model']}_{pretrained_label}",
        settings_label=pretrained_label,
        input_size=int(info["input_size"]),
        init_saved_model=os.path.abspath(export_dir),
    )


def source_from_registry(
    architecture: str, *, weights: str | None, settings: dict, input_size=None, label=None
) -> Source:
    """Registry weights (fine-tuning, e.g. weights="imagenet") or random init (weights=None)."""
    if weights:
        return Source(
            architecture=architecture,
            init="weights",
            settings=settings,
            label=label or f"{architecture}_{'imagenet' if weights == 'imagenet' else 'checkpoint'}",
            settings_label="public",
            input_size=input_size,
            weights=weights,
        )
    return Source(
        architecture=architecture,
        init="random",
        settings=settings,
        label=label or architecture,
        settings_label=settings_label(settings),
        input_size=input_size,
    )


def split_ids(records_dir: str, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, single labels or None) of an evaluation split in `make_input`'s order: the
    shards interleaved one record at a time (as `transfer_tf.protocols.features.read_split`), so
    fine-tuning predictions line up with the other protocols' by id."""
    import tensorflow as tf

    from transfer_tf.data import split_manifests
    from transfer_tf.data.pipeline import MAX_CYCLE

    (manifest,) = split_manifests(records_dir, dataset, split)
    paths = [os.path.join(str(records_dir), dataset, s["file"]) for s in manifest["shards"]]
    spec = {"image/id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    if not manifest["multi_label"]:
        spec["image/class/label"] = tf.io.FixedLenFeature([], tf.int64)
    records = tf.data.Dataset.from_tensor_slices(paths).interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), MAX_CYCLE),
        block_length=1,
    )
    ids, labels = [], []
    for batch in records.batch(4096).map(lambda r: tf.io.parse_example(r, spec)):
        ids.extend(i.decode("utf-8", "replace") for i in batch["image/id"].numpy())
        if "image/class/label" in batch:
            labels.append(batch["image/class/label"].numpy())
    return np.array(ids), (np.concatenate(labels) if labels else None)


STAGES = ("all", "grid")


@dataclasses.dataclass
class SweepResult:
    grid: list[dict]
    best_hparams: dict
    best_val_metric: float
    final: dict | None  # None when the sweep ran with stage="grid"

    @property
    def test_metric(self) -> float | None:
        return None if self.final is None else self.final["test_metric"]


def _cells(protocol, source: Source, dataset, metric, grid, *, train_steps, batch_size,
           per_class, seed, crop_area_min, flip) -> list[dict]:  # fmt: skip
    base = {
        "protocol": protocol,
        "model": source.label,
        "architecture": source.architecture,
        "settings": source.settings_label,
        "dataset": dataset,
        "metric": metric,
        "per_class": per_class,
        "seed": seed,
    }
    tuning = {
        "train_steps": int(train_steps),
        "batch_size": int(batch_size),
        "dropout_rate": float(source.settings.get("dropout_rate", 0.0)),
        "aux_head": bool(source.settings.get("aux_head", False)),
        "label_smoothing": float(source.settings.get("label_smoothing", 0.0)),
        "crop_area_min": float(crop_area_min),
        "flip": bool(flip),
    }
    return [{**base, "stage": "grid", "hparams": {**point, **tuning}} for point in grid]


def run_sweep(
    protocol: str,
    source: Source,
    *,
    dataset: str,
    records_dir: str,
    results_dir: str,
    grid: list[dict],
    train_steps: int | None = None,
    batch_size: int = 256,
    per_class: int | None = None,
    seed: int = 0,
    crop_area_min: float = 0.08,
    flip: bool | None = None,
    work_dir: str | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
    keep_runs: bool = False,
    strategy=None,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    stage: str = "all",
) -> SweepResult:
    """Runs the grid on train/val, then the best cell on train+val/test; returns all records.

    Args:
      protocol: "finetune" or "scratch".
      source: where the network starts (`source_from_model_dir`, `source_from_registry`).
      dataset, records_dir: a registry dataset with train / val / test TFRecords.
      results_dir: cell JSONs go to `<results_dir>/<protocol>/`.
      grid: [{"learning_rate", "weight_decay"}, ...] (`finetune_grid`, `scratch_grid`).
      train_steps: default 20,000 (fine-tune) / 40,000 (scratch).
      batch_size: global batch; learning rates are per 256 images and scale linearly.
      per_class: train on N examples per class (Fig. 9).
      crop_area_min, flip: training augmentation (`make_input`); flip None = the dataset's
        default. Both are part of every cell's hparams (and so of its id).
      work_dir: per-cell model_dirs (default `<results_dir>/runs/<protocol>/`).
      eval_every: validation points recorded per grid cell (default train_steps // 10).
      keep_runs: keep grid cells' checkpoints (the final cell's are always kept).
      strategy: a tf.distribute strategy shared by all cells (default MirroredStrategy).
      stage: "all" (grid, then the final cell) or "grid" (the grid cells only; `final` is None).
        A cluster runs each grid cell as its own "grid" job, then the whole sweep once more:
        cell ids are content hashes, so that run finds every grid cell done and runs the final.
    """
    from transfer_tf.data import get_dataset
    from transfer_tf.data.pipeline import check_crop_area_min, default_flip
    from transfer_tf.metrics import METRICS
    from transfer_tf.training import TrainConfig, Trainer, distribute

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: use one of {PROTOCOLS}")
    if stage not in STAGES:
        raise ValueError(f"--stage={stage!r}: use one of {list(STAGES)}")
    if not grid:
        raise ValueError(
            "empty hyperparameter grid: pass at least one learning rate and weight decay"
        )
    spec = get_dataset(dataset)
    train_steps = int(train_steps or DEFAULT_STEPS[protocol])
    eval_every = int(eval_every or max(train_steps // 10, 1))
    # Defaults: about 10 checkpoints per cell (at least 100 steps apart; the end is always saved)
    # and 20 progress lines; each is also a return to Python, so not every few steps.
    checkpoint_every = int(checkpoint_every or min(2000, max(100, train_steps // 10)))
    log_every = int(log_every or min(500, max(10, train_steps // 20)))
    work_dir = work_dir or os.path.join(results_dir, "runs", protocol)
    strategy = strategy or distribute.make_strategy()

    def config_for(cell: dict) -> TrainConfig:
        hp = cell["hparams"]
        final = cell["stage"] == "final"
        return TrainConfig(
            model=source.architecture,
            dataset=dataset,
            records_dir=records_dir,
            num_classes=spec.num_classes,
            multi_label=spec.multi_label,
            metric=spec.metric,
            input_size=source.input_size,
            settings=dict(source.settings),
            init=source.init,
            weights=source.weights,
            init_model_dir=source.init_model_dir,
            init_saved_model=source.init_saved_model,
            train_split="train+val" if final else "train",
            eval_split=None if final else "val",
            per_class=per_class,
            crop_area_min=hp["crop_area_min"],
            flip=hp["flip"],
            batch_size=hp["batch_size"],
            train_steps=hp["train_steps"],
            learning_rate=hp["learning_rate"],
            optimizer="sgd_nesterov",
            momentum=0.9,
            lr_schedule="cosine",
            warmup_epochs=0.0,
            weight_decay=l2_coefficient(hp["learning_rate"], hp["weight_decay"]),
            ema_decay=0.0,
            bn_momentum="auto",
            checkpoint_every=checkpoint_every,
            keep_checkpoints=1,
            eval_every=0 if final else eval_every,
            log_every=log_every,
            seed=seed,
        )

    def run_fn(cell: dict) -> dict:
        import keras

        model_dir = os.path.join(work_dir, sweep.cell_id(cell))
        trainer = Trainer(config_for(cell), model_dir, strategy=strategy)
        result = trainer.train()
        if cell["stage"] == "grid":
            out = {
                "val_metric": result.final_metric,
                "steps": result.step,
                "history": result.history,
            }
        else:
            y_true, scores = trainer.predict("test")
            test_metric = float(METRICS[spec.metric](y_true, scores))
            y_pred = scores.astype(np.float32) if spec.multi_label else scores.argmax(axis=1)
            predictions = {"y_true": y_true, "y_pred": y_pred}
            ids, id_labels = split_ids(records_dir, dataset, "test")
            if len(ids) == len(y_true) and (id_labels is None or np.array_equal(id_labels, y_true)):
                predictions["ids"] = ids
            else:
                raise RuntimeError(
                    f"test ids of {dataset} do not line up with the evaluated labels; the data "
                    "layer's evaluation order changed (see transfer_tf/data/pipeline.py)"
                )
            out = {
                "test_metric": test_metric,
                "steps": result.step,
                "history": [],
                "predictions": predictions,
            }
        del trainer
        keras.backend.clear_session()
        if cell["stage"] == "grid" and not keep_runs:
            shutil.rmtree(model_dir, ignore_errors=True)
        if on_cell is not None:
            on_cell(cell)
        return out

    cells = _cells(protocol, source, dataset, spec.metric, grid, train_steps=train_steps,
                   batch_size=batch_size, per_class=per_class, seed=seed,
                   crop_area_min=check_crop_area_min(crop_area_min),
                   flip=default_flip(dataset) if flip is None else flip)  # fmt: skip
    records = sweep.run_cells(cells, results_dir, run_fn, progress=progress)
    scored = [r for r in records if r.get("val_metric") is not None]
    if not scored:
        raise RuntimeError(
            f"no grid cell of {protocol} {source.label} on {dataset} has a val metric"
        )
    best = max(scored, key=lambda r: r["val_metric"])  # first of equals: grid order
    final = None
    if stage == "all":
        final_cell = {**cells[records.index(best)], "stage": "final"}
        final = sweep.run_cells([final_cell], results_dir, run_fn, progress=progress)[0]
    return SweepResult(
        grid=records,
        best_hparams=dict(best["hparams"]),
        best_val_metric=float(best["val_metric"]),
        final=final,
    )


# ---------------------------------------------------------------------------------------------
# Flags of transfer-finetune / transfer-scratch (the binaries are thin wrappers over these).


def define_sweep_flags(protocol: str) -> None:
    from absl import flags

    from transfer_tf.training.flags import define_augmentation_flags

    finetune = protocol == "finetune"
    if finetune:
        flags.DEFINE_string(
            "init_model_dir", None, "Fine-tune this pretraining run (its EMA weights)."
        )
        flags.DEFINE_string(
            "init_saved_model", None, "Or: fine-tune the weights of this transfer-export SavedModel."
        )
        flags.DEFINE_string(
            "weights", None, "Or: fine-tune --model with registry weights ('imagenet')."
        )
        flags.DEFINE_string(
            "checkpoint", None,
            "Or: fine-tune --model from a published checkpoint (TF-slim prefix or Keras "
            "Applications .h5; docs/CHECKPOINTS.md); its input scaling and size are used.",
        )  # fmt: skip
    flags.DEFINE_string("model", None, "Registry model (not needed with --init_model_dir).")
    flags.DEFINE_string("dataset", None, "Registry dataset with train / val / test TFRecords.")
    flags.DEFINE_string("records_dir", None, "Root of the TFRecords: <records_dir>/<dataset>/.")
    flags.DEFINE_string("results_dir", None, "Cell JSONs go to <results_dir>/<protocol>/.")
    flags.DEFINE_string("work_dir", None, "Per-cell model_dirs (default <results_dir>/runs/).")
    flags.DEFINE_string("model_label", None, "The results' `model` label (default derived).")
    flags.DEFINE_integer("input_size", None, "Input size (default: the model's / the run's).")
    flags.DEFINE_boolean(
        "bn_scale", True, "BN with γ (scratch / registry weights; a --checkpoint sets its own)."
    )
    flags.DEFINE_float("dropout_rate", None, "Dropout before the logits while training.")
    flags.DEFINE_boolean("aux_head", None, "Train with the Inception auxiliary head.")
    flags.DEFINE_float("label_smoothing", None, "Label smoothing while training.")
    define_grid_flags(protocol)
    flags.DEFINE_enum(
        "stage", "all", list(STAGES),
        "all: the grid, then the best cell on train+val / test; grid: the grid cells only (a "
        "cluster runs each cell as its own job, then the sweep with --stage=all runs the final).",
    )  # fmt: skip
    flags.DEFINE_integer("train_steps", DEFAULT_STEPS[protocol], "Steps per cell.")
    flags.DEFINE_integer("batch_size", 256, "Global batch.")
    flags.DEFINE_integer("per_class", None, "Train on N examples per class (Fig. 9).")
    flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation and initialisation.")
    define_augmentation_flags()
    flags.DEFINE_integer("eval_every", None, "Validation points per grid cell (default steps/10).")
    flags.DEFINE_integer("checkpoint_every", None, "Checkpoint interval in steps.")
    flags.DEFINE_integer("log_every", None, "Progress line interval in steps.")
    flags.DEFINE_boolean("keep_runs", False, "Keep the grid cells' checkpoints.")
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices.")


GRID_FLAGS = (
    "learning_rates", "weight_decays", "num_learning_rates", "num_weight_decays", "no_decay_cell",
)  # fmt: skip


def define_grid_flags(protocol: str, flag_values=None) -> None:
    """The flags that choose a sweep's grid (GRID_FLAGS; no_decay_cell for fine-tuning only).

    `flag_values` defaults to absl's global FLAGS; the study planner passes a private FlagValues
    to read a flagfile's grid exactly as the binary will.
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    finetune = protocol == "finetune"
    flags.DEFINE_list(
        "learning_rates", None, "Explicit learning rates (per 256 images).", flag_values=fv
    )
    flags.DEFINE_list("weight_decays", None, "Explicit weight decays (0 = none).", flag_values=fv)
    flags.DEFINE_integer(
        "num_learning_rates", 7, "Shrink the grid: this many learning rates.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_weight_decays", 7 if finetune else 8, "Shrink the grid: this many weight decays.",
        flag_values=fv,
    )  # fmt: skip
    if finetune:
        flags.DEFINE_boolean(
            "no_decay_cell", True, "Include weight decay 'none' in the grid.", flag_values=fv
        )


def grid_from_flags(protocol: str, fv) -> list[dict]:
    """The grid that --learning_rates / --weight_decays or the --num_* flags describe."""
    from transfer_tf.protocols.finetune_grid import explicit_grid, finetune_grid, scratch_grid

    if fv.learning_rates or fv.weight_decays:
        if not (fv.learning_rates and fv.weight_decays):
            raise ValueError("pass both --learning_rates and --weight_decays, or neither")
        return explicit_grid(fv.learning_rates, fv.weight_decays)
    if protocol == "finetune":
        return finetune_grid(
            fv.num_learning_rates, fv.num_weight_decays, include_no_decay=fv.no_decay_cell
        )
    return scratch_grid(fv.num_learning_rates, fv.num_weight_decays)


def sweep_from_flags(protocol: str, flag_values) -> SweepResult:
    from transfer_tf.training import distribute

    fv = flag_values
    for name in ("dataset", "records_dir", "results_dir"):
        if not getattr(fv, name):
            raise ValueError(f"--{name} is required")
    from transfer_tf.training.flags import dataset_fields

    dataset_fields(fv.dataset)  # an unknown --dataset fails here, before anything is written
    distribute.configure_cpu_devices(fv.cpu_devices)
    toggles = {
        "dropout_rate": fv.dropout_rate,
        "aux_head": fv.aux_head,
        "label_smoothing": fv.label_smoothing,
    }
    finetune = protocol == "finetune"
    weights, bn_scale = None, bool(fv.bn_scale)
    if finetune:
        if fv.weights and fv.checkpoint:
            raise ValueError("pass --weights=imagenet or --checkpoint=PATH, not both")
        weights = fv.checkpoint or fv.weights
        if fv.checkpoint:  # a missing or unreadable file fails here, before any cell
            from transfer_tf.models import checkpoint_settings
            from transfer_tf.models.checkpoints import read_checkpoint

            bn_scale = checkpoint_settings(read_checkpoint(fv.checkpoint)).bn_scale
    if finetune and fv.init_model_dir and fv.init_saved_model:
        raise ValueError("pass --init_model_dir or --init_saved_model, not both")
    if finetune and (fv.init_model_dir or fv.init_saved_model):
        if fv.model or weights:
            raise ValueError("pass --init_model_dir / --init_saved_model or --model with "
                             "--weights / --checkpoint, not both")
        source = (source_from_model_dir(fv.init_model_dir, label=fv.model_label, **toggles)
                  if fv.init_model_dir else
                  source_from_saved_model(fv.init_saved_model, label=fv.model_label, **toggles))
        if fv.input_size and fv.input_size != source.input_size:
            raise ValueError(
                f"--input_size={fv.input_size} differs from the pretraining run's "
                f"{source.input_size}; fine-tuning keeps the network's input size"
            )
    else:
        if not fv.model:
            raise ValueError(
                "--model is required"
                + (" (or --init_model_dir, a pretraining run, or --init_saved_model)"
                   if finetune else "")
            )
        if finetune and not weights:
            raise ValueError(
                "fine-tuning needs pretrained weights: --init_model_dir=<pretraining run>, "
                "--init_saved_model=<transfer-export dir>, --checkpoint=<published checkpoint> "
                "or --weights=imagenet (transfer-scratch trains from random initialisation)"
            )
        settings = {
            "bn_scale": bn_scale,
            "dropout_rate": float(fv.dropout_rate or 0.0),
            "aux_head": bool(fv.aux_head),
            "label_smoothing": float(fv.label_smoothing or 0.0),
        }
        source = source_from_registry(
            fv.model,
            weights=weights,
            settings=settings,
            input_size=fv.input_size,
            label=fv.model_label,
        )
    grid = grid_from_flags(protocol, fv)
    return run_sweep(
        protocol,
        source,
        dataset=fv.dataset,
        records_dir=fv.records_dir,
        results_dir=fv.results_dir,
        grid=grid,
        train_steps=fv.train_steps,
        batch_size=fv.batch_size,
        per_class=fv.per_class,
        seed=fv.seed,
        crop_area_min=fv.crop_area_min,
        flip=fv.flip,
        work_dir=fv.work_dir,
        eval_every=fv.eval_every,
        checkpoint_every=fv.checkpoint_every,
        log_every=fv.log_every,
        keep_runs=fv.keep_runs,
        stage=getattr(fv, "stage", "all"),  # callers that predate --stage mean "all"
    )


def sweep_main(protocol: str):
    """The absl main of transfer-finetune / transfer-scratch (after `define_sweep_flags`)."""
    from absl import app, flags

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            result = sweep_from_flags(protocol, flags.FLAGS)
        except (ValueError, FileNotFoundError) as e:  # bad flags, missing records or runs
            raise app.UsageError(str(e)) from e
        print(summary_line(protocol, result), flush=True)

    return main


def summary_line(protocol: str, result: SweepResult) -> str:
    hp = result.best_hparams
    best = (
        f"{protocol}: best learning_rate={hp['learning_rate']:.3g} "
        f"weight_decay={hp['weight_decay']:.3g} (val {result.best_val_metric:.4f}); "
    )
    if result.final is None:
        return best + f"{len(result.grid)} grid cell(s) done; no final cell (--stage=grid)"
    return best + (
        f"final {result.final['metric']} on test {result.test_metric:.4f} "
        f"({result.final['cell_id']})"
    )
