"""The flags and absl main shared by transfer-finetune and transfer-scratch: flags are mapped
once onto a `SweepRecipe` (`transfer_tf/protocols/recipe.py`, which holds the defaults) and a
`RunOptions`, then `transfer_tf.protocols.finetune.run_sweep` runs it."""

from __future__ import annotations

from absl import app, flags

from transfer_tf.bin.training_flags import (
    define_augmentation_flags,
    define_input_cache_flag,
    define_speed_flags,
)
from transfer_tf.models import checkpoint_settings
from transfer_tf.models.checkpoints import read_checkpoint
from transfer_tf.protocols import finetune_grid
from transfer_tf.protocols.finetune import (
    SWEEP_SCOPES,
    RunOptions,
    SweepResult,
    make_recipe,
    run_sweep,
)
from transfer_tf.protocols.recipe import DEFAULT_STEPS, SweepRecipe
from transfer_tf.protocols.sources import (
    Source,
    source_from_keras_model,
    source_from_model_dir,
    source_from_registry,
    source_from_saved_model,
)
from transfer_tf.training import distribute
from transfer_tf.training.config import dataset_fields


def define_sweep_flags(protocol: str) -> None:
    finetune = protocol == "finetune"
    if finetune:
        flags.DEFINE_string(
            "init_model_dir", None, "Fine-tune this pretraining run (its EMA weights)."
        )
        flags.DEFINE_string(
            "init_saved_model",
            None,
            "Or: fine-tune the weights of this transfer-export SavedModel.",
        )
        flags.DEFINE_string(
            "weights", None, "Or: fine-tune --model with registry weights ('imagenet')."
        )
        flags.DEFINE_string(
            "checkpoint",
            None,
            "Or: fine-tune --model from a published checkpoint (TF-slim prefix or Keras "
            "Applications .h5; docs/CHECKPOINTS.md); its input scaling and size are used.",
        )
        flags.DEFINE_string(
            "init_keras_model",
            None,
            "Or: fine-tune a Keras model file (.keras) up to --feature_layer, with a new "
            "classifier; needs --feature_layer, --scaling and --input_size.",
        )
        flags.DEFINE_string(
            "feature_layer",
            None,
            "With --init_keras_model: the layer whose output is the features.",
        )
        flags.DEFINE_string(
            "scaling",
            None,
            "With --init_keras_model: the input scaling it expects (none = [0, 255], unit = "
            "[0, 1], or a preprocessing such as inception = [-1, 1]).",
        )
    flags.DEFINE_string("model", None, "Registry model (not needed with --init_model_dir).")
    flags.DEFINE_string("dataset", None, "Registry dataset with train / val / test TFRecords.")
    flags.DEFINE_string("records_dir", None, "Root of the TFRecords: <records_dir>/<dataset>/.")
    flags.DEFINE_string("results_dir", None, "Cell JSONs go to <results_dir>/<protocol>/.")
    flags.DEFINE_string("work_dir", None, "Per-cell model_dirs (default <results_dir>/runs/).")
    flags.DEFINE_string("model_label", None, "The results' `model` label (default derived).")
    flags.DEFINE_integer(
        "input_size", None, "Input size (default: the model's / the run's).", lower_bound=1
    )
    flags.DEFINE_boolean(
        "bn_scale", True, "BN with γ (scratch / registry weights; a --checkpoint sets its own)."
    )
    flags.DEFINE_float("dropout_rate", None, "Dropout before the logits while training.")
    flags.DEFINE_boolean("aux_head", None, "Train with the Inception auxiliary head.")
    flags.DEFINE_float("label_smoothing", None, "Label smoothing while training.")
    finetune_grid.define_grid_flags(protocol, flags.FLAGS)
    flags.DEFINE_enum(
        "stage",
        "all",
        list(SWEEP_SCOPES),
        "all: the grid, then the best cell on train+val / test; grid: the grid cells only (a "
        "cluster runs each cell as its own job, then the sweep with --stage=all runs the final).",
    )
    # Values are checked when the flags are parsed (absl bounds), never replaced by defaults.
    flags.DEFINE_integer("train_steps", DEFAULT_STEPS[protocol], "Steps per cell.", lower_bound=1)
    flags.DEFINE_integer("batch_size", SweepRecipe.batch_size, "Global batch.", lower_bound=1)
    flags.DEFINE_integer(
        "per_class", None, "Train on N examples per class (Fig. 9).", lower_bound=1
    )
    flags.DEFINE_integer(
        "seed", SweepRecipe.seed, "Seed of data order, augmentation and initialisation."
    )
    define_augmentation_flags()
    define_speed_flags()
    define_input_cache_flag()
    flags.DEFINE_integer(
        "eval_every",
        None,
        "Validation points per grid cell (default steps/10).",
        lower_bound=1,
    )
    flags.DEFINE_integer("checkpoint_every", None, "Checkpoint interval in steps.", lower_bound=1)
    flags.DEFINE_integer("log_every", None, "Progress line interval in steps.", lower_bound=1)
    flags.DEFINE_boolean("keep_runs", False, "Keep the grid cells' checkpoints.")
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices.", lower_bound=1)


def source_from_flags(protocol: str, fv) -> Source:
    """The starting network the flags name (one of --init_model_dir, --init_saved_model,
    --model with --weights / --checkpoint for fine-tuning; --model for scratch)."""
    toggles = {
        "dropout_rate": fv.dropout_rate,
        "aux_head": fv.aux_head,
        "label_smoothing": fv.label_smoothing,
    }
    finetune = protocol == "finetune"
    if finetune and fv.init_keras_model:
        others = [
            f"--{n}"
            for n in ("init_model_dir", "init_saved_model", "model", "weights", "checkpoint")
            if getattr(fv, n)
        ]
        if others:
            raise ValueError(f"pass --init_keras_model or {', '.join(others)}, not both")
        settings = {k: v for k, v in toggles.items() if v is not None}
        return source_from_keras_model(
            fv.init_keras_model,
            fv.feature_layer,
            scaling=fv.scaling,
            input_size=fv.input_size,
            settings=settings,
            label=fv.model_label,
        )
    weights, bn_scale = None, bool(fv.bn_scale)
    if finetune:
        if fv.weights and fv.checkpoint:
            raise ValueError("pass --weights=imagenet or --checkpoint=PATH, not both")
        weights = fv.checkpoint or fv.weights
        if fv.checkpoint:  # a missing or unreadable file fails here, before any cell
            bn_scale = checkpoint_settings(read_checkpoint(fv.checkpoint)).bn_scale
    if finetune and fv.init_model_dir and fv.init_saved_model:
        raise ValueError("pass --init_model_dir or --init_saved_model, not both")
    if finetune and (fv.init_model_dir or fv.init_saved_model):
        if fv.model or weights:
            raise ValueError(
                "pass --init_model_dir / --init_saved_model or --model with "
                "--weights / --checkpoint, not both"
            )
        source = (
            source_from_model_dir(fv.init_model_dir, label=fv.model_label, **toggles)
            if fv.init_model_dir
            else source_from_saved_model(fv.init_saved_model, label=fv.model_label, **toggles)
        )
        if fv.input_size and fv.input_size != source.input_size:
            raise ValueError(
                f"--input_size={fv.input_size} differs from the pretraining run's "
                f"{source.input_size}; fine-tuning keeps the network's input size"
            )
    else:
        if not fv.model:
            raise ValueError(
                "--model is required"
                + (
                    " (or --init_model_dir, a pretraining run, or --init_saved_model)"
                    if finetune
                    else ""
                )
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
    return source


def sweep_from_flags(protocol: str, flag_values) -> SweepResult:
    """Validates the flags, maps them onto a recipe and runs the sweep."""
    fv = flag_values
    for name in ("dataset", "records_dir", "results_dir"):
        if not getattr(fv, name):
            raise ValueError(f"--{name} is required")
    # An unknown --dataset fails here, before anything is written.
    dataset_fields(fv.dataset, fv.records_dir)
    distribute.configure_cpu_devices(fv.cpu_devices)
    source = source_from_flags(protocol, fv)
    recipe = make_recipe(
        protocol,
        source,
        dataset=fv.dataset,
        records_dir=fv.records_dir,
        grid=finetune_grid.grid_from_flags(protocol, fv),
        train_steps=fv.train_steps,
        batch_size=fv.batch_size,
        per_class=fv.per_class,
        seed=fv.seed,
        crop_area_min=fv.crop_area_min,
        flip=fv.flip,
        mixed_precision=fv.mixed_precision,
        jit_compile=fv.jit_compile,
    )
    options = RunOptions(
        work_dir=fv.work_dir,
        eval_every=fv.eval_every,
        checkpoint_every=fv.checkpoint_every,
        log_every=fv.log_every,
        keep_runs=fv.keep_runs,
        cache_decoded=fv.cache_decoded,
    )
    return run_sweep(
        recipe,
        records_dir=fv.records_dir,
        results_dir=fv.results_dir,
        options=options,
        scope=getattr(fv, "stage", "all"),  # callers that predate --stage mean "all"
    )


def sweep_main(protocol: str):
    """The absl main of transfer-finetune / transfer-scratch (after `define_sweep_flags`)."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        # Bad flags, missing or damaged records, runs, checkpoints: one line (`bin/cli.py`).
        result = sweep_from_flags(protocol, flags.FLAGS)
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
