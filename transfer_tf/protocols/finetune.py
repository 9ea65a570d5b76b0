"""Protocols 2 and 3 (Sec. 4.2, 4.3): fine-tuning and training from random initialisation, as
resumable sweeps. The recipe is a `SweepRecipe` (`transfer_tf/protocols/recipe.py`), the starting
network a `Source` (`sources.py`), the grids `finetune_grid.py`; this module runs them.

Each grid cell trains on "train" and scores "val" (recording the validation metric against step,
for Fig. 8); the cell with the best validation metric is retrained on "train+val" and scored on
"test" (the "final" cell, with per-example predictions for McNemar tests). Cells go through
`transfer_tf.protocols.sweep.run_cells`, so a killed sweep rerun skips finished cells, and a cell
cut short resumes from the checkpoint in its own model_dir (`<work_dir>/<cell_id>/`). Every cell
records its `inputs` (`sweep_inputs`: the records' shard checksums and the starting weights'
fingerprint); a finished cell, or a model_dir, from other inputs is computed again from scratch.

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
import functools
import json
import os
import shutil
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from transfer_tf import files
from transfer_tf.data import get_dataset, split_manifests, subsets
from transfer_tf.data.pipeline import default_flip, explain_read_error, read_examples
from transfer_tf.data.tfrecords import check_split_files, records_fingerprint
from transfer_tf.metrics import METRICS
from transfer_tf.protocols import sweep
from transfer_tf.protocols.keras_source import keras_model_builder
from transfer_tf.protocols.recipe import DEFAULT_STEPS, Cell, GridPoint, SweepRecipe
from transfer_tf.protocols.sources import Source
from transfer_tf.run_dir import RunDir
from transfer_tf.training import TrainConfig, Trainer, distribute
from transfer_tf.training.builders import default_input_fn
from transfer_tf.training.loop import count_examples

# How far a sweep runs: "all" (the grid, then the final cell) or "grid" (the grid cells only).
SWEEP_SCOPES = ("all", "grid")


def make_recipe(
    protocol: str,
    source: Source,
    *,
    dataset: str,
    grid,
    records_dir: str | None = None,
    train_steps: int | None = None,
    batch_size: int = SweepRecipe.batch_size,
    per_class: int | None = None,
    seed: int = SweepRecipe.seed,
    crop_area_min: float = SweepRecipe.crop_area_min,
    flip: bool | None = None,
    mixed_precision: str = SweepRecipe.mixed_precision,
    jit_compile: bool = SweepRecipe.jit_compile,
) -> SweepRecipe:
    """A `SweepRecipe` with the dataset's metric and defaults filled in: train_steps None = the
    protocol's (20,000 / 40,000), flip None = the dataset's (`mirror_invariant`). `records_dir`
    finds a dataset made with --image_folder / --csv (its spec lies beside the records)."""
    return SweepRecipe(
        protocol=protocol,
        source=source,
        dataset=dataset,
        metric=get_dataset(dataset, records_dir=records_dir).metric,
        grid=tuple(grid),
        train_steps=DEFAULT_STEPS.get(protocol, 1) if train_steps is None else int(train_steps),
        batch_size=int(batch_size),
        per_class=per_class,
        seed=int(seed),
        crop_area_min=crop_area_min,
        flip=default_flip(dataset, records_dir) if flip is None else bool(flip),
        mixed_precision=mixed_precision,
        jit_compile=bool(jit_compile),
    )


def split_ids(records_dir: str, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, single labels or None) of an evaluation split in `make_input`'s order: the
    shards interleaved one record at a time (as `transfer_tf.protocols.features.read_split`), so
    fine-tuning predictions line up with the other protocols' by id."""
    manifests = split_manifests(records_dir, dataset, split)
    multi_label = manifests[0]["multi_label"]
    examples = read_examples(records_dir, dataset, manifests).map(
        lambda ex: (ex["image/id"], ex["image/class/label"] if not multi_label else 0)
    )
    ids, labels = [], []
    for batch_ids, batch_labels in examples.batch(4096):
        ids.extend(i.decode("utf-8", "replace") for i in batch_ids.numpy())
        labels.append(batch_labels.numpy())
    return np.array(ids), (None if multi_label or not labels else np.concatenate(labels))


def source_fingerprint(source: Source) -> str | None:
    """A short hash of the starting weights: the latest checkpoint's index (its entries hold
    each tensor's CRC) of a model_dir, a SavedModel's variables index, a published checkpoint,
    a .keras file; None for random initialisation."""
    path = None
    if source.init == "model_dir":
        latest = RunDir(source.init_model_dir).latest_checkpoint()
        path = latest + ".index" if latest else None
    elif source.init == "saved_model":
        path = os.path.join(source.init_saved_model, "variables", "variables.index")
    elif source.init == "keras_model":
        path = source.init_keras_model
    elif source.init == "weights" and source.weights not in (None, "imagenet"):
        path = source.weights if os.path.isfile(source.weights) else source.weights + ".index"
    if source.init == "weights" and source.weights == "imagenet":
        return "imagenet"  # the registry's offline weights, part of the package
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the starting weights {path} do not exist; check the flags")
    return files.sha256_file(path)[:16]


def sweep_inputs(recipe: SweepRecipe, records_dir: str) -> dict[str, str]:
    """What every cell of the sweep is computed from (`sweep.run_cells`' `inputs`)."""
    inputs = {"records": records_fingerprint(records_dir, recipe.dataset)}
    weights = source_fingerprint(recipe.source)
    if weights is not None:
        inputs["source"] = weights
    if recipe.per_class is not None:  # cells drawn under an older subset rule are stale
        inputs.update(subsets.SUBSET_INPUTS)
    return inputs


@dataclasses.dataclass
class SweepResult:
    grid: list[dict]
    best_hparams: dict
    best_val_metric: float
    final: dict | None  # None when the sweep ran with scope "grid"

    @property
    def test_metric(self) -> float | None:
        return None if self.final is None else self.final["test_metric"]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a sweep runs, not what it computes (none of it is part of a cell's identity).

    work_dir: per-cell model_dirs (default `<results_dir>/runs/<protocol>/`); eval_every:
    validation points per grid cell (default train_steps // 10); checkpoint_every, log_every:
    intervals in steps (defaults from train_steps); keep_runs: keep grid cells' checkpoints;
    cache_decoded: the training input's decoded cache (`make_input`; the same batches).
    """

    work_dir: str | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    keep_runs: bool = False
    cache_decoded: str = "auto"


def train_config(cell: Cell, records_dir: str, options: RunOptions) -> TrainConfig:
    """The training run of one cell."""
    recipe, source = cell.recipe, cell.recipe.source
    spec = get_dataset(recipe.dataset, records_dir=records_dir)
    steps = recipe.train_steps
    final = cell.stage == "final"
    # Defaults: about 10 checkpoints per cell (at least 100 steps apart; the end is always saved)
    # and 20 progress lines; each is also a return to Python, so not every few steps.
    checkpoint_every = options.checkpoint_every or min(2000, max(100, steps // 10))
    return TrainConfig(
        model=source.architecture,
        dataset=recipe.dataset,
        records_dir=records_dir,
        num_classes=spec.num_classes,
        multi_label=spec.multi_label,
        metric=spec.metric,
        input_size=source.input_size,
        preprocessing=source.preprocessing,
        settings=dict(source.settings),
        init=source.init,
        weights=source.weights,
        init_model_dir=source.init_model_dir,
        init_saved_model=source.init_saved_model,
        init_keras_model=source.init_keras_model,
        feature_layer=source.feature_layer,
        train_split="train+val" if final else "train",
        eval_split=None if final else "val",
        per_class=recipe.per_class,
        crop_area_min=recipe.crop_area_min,
        flip=recipe.flip,
        batch_size=recipe.batch_size,
        train_steps=steps,
        learning_rate=cell.point.learning_rate,
        optimizer=recipe.optimizer,
        momentum=recipe.momentum,
        lr_schedule=recipe.lr_schedule,
        warmup_epochs=recipe.warmup_epochs,
        weight_decay=cell.point.l2,
        ema_decay=recipe.ema_decay,
        bn_momentum=recipe.bn_momentum,
        checkpoint_every=int(checkpoint_every),
        keep_checkpoints=1,
        eval_every=0 if final else int(options.eval_every or max(steps // 10, 1)),
        eval_log_spaced=not final,  # Fig. 8 needs early, log-spaced points (Sec. 4.6)
        log_every=int(options.log_every or min(500, max(10, steps // 20))),
        seed=recipe.seed,
        mixed_precision=recipe.mixed_precision,
        jit_compile=recipe.jit_compile,
    )


def score_on_test(trainer: Trainer, recipe: SweepRecipe, records_dir: str) -> tuple[float, dict]:
    """(test metric, per-example predictions with ids) of a final cell's trained network."""
    spec = get_dataset(recipe.dataset, records_dir=records_dir)
    y_true, scores = trainer.predict("test")
    test_metric = float(METRICS[spec.metric](y_true, scores))
    y_pred = scores.astype(np.float32) if spec.multi_label else scores.argmax(axis=1)
    ids, id_labels = split_ids(records_dir, recipe.dataset, "test")
    if len(ids) != len(y_true) or (id_labels is not None and not np.array_equal(id_labels, y_true)):
        raise RuntimeError(
            f"test ids of {recipe.dataset} do not line up with the evaluated labels; the data "
            "layer's evaluation order changed (see transfer_tf/data/pipeline.py)"
        )
    return test_metric, {"y_true": y_true, "y_pred": y_pred, "ids": ids}


def run_cell(cell: Cell, records_dir: str, options: RunOptions, model_dir: str, strategy) -> dict:
    """Trains one cell in `model_dir`; returns the measured keys of its result record."""
    source = cell.recipe.source
    builder = None
    if source.init == "keras_model":
        builder = keras_model_builder(source.init_keras_model, source.feature_layer)
    config = train_config(cell, records_dir, options)
    trainer = Trainer(
        # From the manifests, as the Trainer counts for its default input.
        config.replace(num_train_examples=count_examples(config)),
        model_dir,
        strategy=strategy,
        model_builder=builder,
        input_fn=functools.partial(default_input_fn, cache_decoded=options.cache_decoded),
    )
    split = "train" if cell.stage == "grid" else "train+val"
    try:
        result = trainer.train()
    except tf.errors.OpError as e:  # a damaged record or image: name it
        raise explain_read_error(e, records_dir, cell.recipe.dataset, split) or e from None
    if cell.stage == "grid":
        # Grid cells evaluate the validation split: the result schema's history is val_metric.
        history = [
            {"step": h["step"], "epoch": h.get("epoch"), "val_metric": h["eval_metric"]}
            for h in result.history
        ]
        out = {"val_metric": result.final_metric, "steps": result.step, "history": history}
    else:
        test_metric, predictions = score_on_test(trainer, cell.recipe, records_dir)
        out = {
            "test_metric": test_metric,
            "steps": result.step,
            "history": [],
            "predictions": predictions,
        }
    del trainer
    keras.backend.clear_session()
    return out


def run_sweep(
    recipe: SweepRecipe,
    *,
    records_dir: str,
    results_dir: str,
    options: RunOptions = RunOptions(),
    strategy=None,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    scope: str = "all",
) -> SweepResult:
    """Runs the grid on train/val, then the best cell on train+val/test; returns all records.

    Cell JSONs go to `<results_dir>/<protocol>/`. `scope="grid"` runs the grid cells only
    (`final` is None): a cluster runs each grid cell as its own job, then the whole sweep once
    more, which finds every grid cell done (cell ids are content hashes) and runs the final.
    `strategy`: a tf.distribute strategy shared by all cells (default MirroredStrategy).
    """
    if scope not in SWEEP_SCOPES:
        raise ValueError(f"--stage={scope!r}: use one of {list(SWEEP_SCOPES)}")
    work_dir = options.work_dir or os.path.join(results_dir, "runs", recipe.protocol)
    # Before anything runs: every shard there with its size, counts and labels as listed.
    for split in ("train", "val", "test"):
        check_split_files(
            records_dir, recipe.dataset, split_manifests(records_dir, recipe.dataset, split)
        )
    inputs = sweep_inputs(recipe, records_dir)
    strategy = strategy or distribute.make_strategy()
    by_id = {}

    def run_fn(identity: dict) -> dict:
        cell = by_id[sweep.cell_id(identity)]
        model_dir = os.path.join(work_dir, sweep.cell_id(identity))
        fresh_model_dir(model_dir, inputs)
        out = run_cell(cell, records_dir, options, model_dir, strategy)
        if cell.stage == "grid" and not options.keep_runs:
            shutil.rmtree(model_dir, ignore_errors=True)
        if on_cell is not None:
            on_cell(identity)
        return out

    def run(cells: list[Cell]) -> list[dict]:
        identities = [c.identity() for c in cells]
        by_id.update({sweep.cell_id(i): c for i, c in zip(identities, cells, strict=True)})
        return sweep.run_cells(identities, results_dir, run_fn, progress=progress, inputs=inputs)

    grid_cells = recipe.cells("grid")
    records = run(grid_cells)
    scored = [r for r in records if r.get("val_metric") is not None]
    if not scored:
        raise RuntimeError(
            f"no grid cell of {recipe.protocol} {recipe.source.label} on {recipe.dataset} has a "
            "val metric"
        )
    best = max(scored, key=lambda r: r["val_metric"])  # first of equals: grid order
    final = run([grid_cells[records.index(best)].final()])[0] if scope == "all" else None
    return SweepResult(
        grid=records,
        best_hparams=dict(best["hparams"]),
        best_val_metric=float(best["val_metric"]),
        final=final,
    )


INPUTS_FILE = "inputs.json"


def fresh_model_dir(model_dir: str, inputs: dict) -> None:
    """A cell's model_dir resumes only a run of the same inputs: one left by a run from other
    records or other starting weights is removed (its checkpoint would otherwise be resumed).
    The inputs are written into it before training starts."""
    path = os.path.join(model_dir, INPUTS_FILE)
    recorded = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
        except (OSError, ValueError):
            recorded = {}
    stale = recorded == {} or (recorded is not None and sweep.changed_inputs(recorded, inputs))
    if stale:
        shutil.rmtree(model_dir)
    files.makedirs(model_dir)
    files.atomic_write_json(path, inputs, sort_keys=True)


__all__ = [
    "GridPoint",
    "RunOptions",
    "Source",
    "SweepRecipe",
    "SweepResult",
    "make_recipe",
    "run_sweep",
]
