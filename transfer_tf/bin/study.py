"""transfer-study: plan a whole study from a flagfile and run it, locally or on a Ray cluster.

    transfer-study --flagfile=flags/demo/study.cfg                 # new run under runs/demo/<time>
    transfer-study --flagfile=flags/demo/study.cfg --study_dir=runs/demo/20261126-0312   # resume
    transfer-study --flagfile=flags/demo/study.cfg --executor=ray --ray_address=auto

Chains the existing binaries (make-tfrecords, pretrain, export, extract-features, logreg,
finetune, scratch, analyze); it reimplements none of them. Each step logs to
<study_dir>/logs/<step>.log and leaves a marker when done, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from absl import app, flags

from transfer_tf.bin import cli
from transfer_tf.study import executors, plan
from transfer_tf.study import steps as study_steps

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "study_dir", None, "Study directory; an existing one is resumed. Default: <runs_root>/<time>."
)
flags.DEFINE_string("runs_root", "runs/demo", "Parent of new study directories.")
flags.DEFINE_string("source_dataset", "fashion_mnist", "Dataset the here-pretrained models learn.")
flags.DEFINE_integer(
    "source_max_per_class", None, "Cap per class per split of the source.", lower_bound=1
)
flags.DEFINE_list("target_datasets", ["sklearn_digits"], "Transfer datasets (registry names).")
flags.DEFINE_integer(
    "target_max_per_class", None, "Cap per class per split of each target.", lower_bound=1
)
flags.DEFINE_list(
    "public_models",
    [],
    "Public ImageNet sources: NAME (a registry model with offline weights, e.g. "
    "efficientnet_lite0) or NAME=PATH (a published TF-slim checkpoint prefix or "
    "Keras Applications .h5 for registry model NAME; docs/CHECKPOINTS.md).",
)
flags.DEFINE_multi_string(
    "external_models",
    [],
    "A source from outside the registry: LABEL=PATH[,option=value...], PATH a SavedModel or a "
    ".keras file; options signature, output_key, feature_layer (.keras), input_size, scaling, "
    "top1 (its source accuracy), top1_source (transfer_tf/study/external.py). Repeat the flag.",
)
flags.DEFINE_multi_string(
    "own_datasets",
    [],
    "Your own dataset: NAME=PATH[,option=value...], PATH an image folder (ROOT/<class>/... or "
    "ROOT/{train,val,test}/<class>/...) or a CSV; options metric, val_fraction, test_fraction, "
    "seed, mirror_invariant, skip_unreadable, title. A transfer target. Repeat the flag.",
)
flags.DEFINE_list("pretrain_models", [], "Registry architectures to pretrain on the source.")
flags.DEFINE_list(
    "pretrain_settings",
    list(plan.DEFAULT_SETTINGS),
    "Training-settings labels to pretrain each architecture with (Fig. 3's ladder, "
    "transfer_tf/settings_ladder.py): " + ", ".join(plan.SETTINGS_LABELS) + ".",
)
flags.DEFINE_string("pretrain_flagfile", None, "Flagfile with transfer-pretrain's recipe.")
flags.DEFINE_integer(
    "pretrain_input_size", None, "Input size of here-pretrained models.", lower_bound=1
)
flags.DEFINE_integer(
    "pretrain_steps", None, "Pretraining steps (overrides the flagfile's).", lower_bound=1
)
flags.DEFINE_integer(
    "logreg_num_l2", 45, "Logistic-regression grid size (paper: 45).", lower_bound=1
)
flags.DEFINE_list("logreg_flags", [], "Extra flags for transfer-logreg (e.g. --blas_threads=1).")
flags.DEFINE_list(
    "subset_sizes",
    [],
    "Fig. 9: also run logreg, fine-tuning and scratch on N training examples per "
    "class (each size its own sweep), on the fine-tune targets.",
)
flags.DEFINE_list(
    "subset_models",
    [],
    "Fig. 9: source-model labels that get the subset sweeps (default: all; scratch "
    "follows the label <architecture>_fair).",
)
flags.DEFINE_list(
    "subset_datasets",
    [],
    "Fig. 9: the targets that get the subset sweeps (default: the fine-tune targets; "
    "single-label datasets with enough examples per class).",
)
flags.DEFINE_integer(
    "subsets_per_size",
    3,
    "Fig. 9: random subsets of each size (seeds 0, 1, ...; the paper: 3); the report draws "
    "their mean and standard error.",
    lower_bound=1,
)
flags.DEFINE_list(
    "finetune_models",
    [],
    "Source-model labels to fine-tune (e.g. efficientnet_lite0, mobilenet_v2_fair).",
)
flags.DEFINE_list("finetune_datasets", [], "Targets for fine-tuning and scratch (default: all).")
flags.DEFINE_string("finetune_flagfile", None, "Flagfile with transfer-finetune's grid/steps.")
flags.DEFINE_integer(
    "finetune_input_size",
    None,
    "Input size when fine-tuning public models (default: their ImageNet size).",
    lower_bound=1,
)
flags.DEFINE_list("scratch_models", [], "Architectures to train from scratch on each target.")
flags.DEFINE_string("scratch_flagfile", None, "Flagfile with transfer-scratch's grid/steps.")
flags.DEFINE_list(
    "analyze_flags", [], "Extra flags for transfer-analyze (e.g. --num_bootstrap=200)."
)
flags.DEFINE_enum("executor", "local", ["local", "ray"], "Where steps run.")
flags.DEFINE_integer("max_concurrent", 1, "local: steps run at once.", lower_bound=1)
flags.DEFINE_string("ray_address", None, "ray: cluster address ('auto', ray://...); none = local.")
flags.DEFINE_float("ray_cpus_per_step", None, "ray: CPUs per step (default: the step's own).")
flags.DEFINE_float("ray_gpus_per_step", None, "ray: GPUs per step (default: the step's own).")
flags.DEFINE_integer(
    "ray_max_retries", 3, "ray: retries of a step whose worker died.", lower_bound=0
)
flags.register_validator(
    "subset_sizes",
    lambda sizes: all(s.isdigit() and int(s) > 0 for s in sizes),
    message="--subset_sizes: give positive integers (training examples per class)",
)
flags.DEFINE_boolean(
    "split_grid_cells",
    False,
    "Each fine-tune / scratch grid cell as its own step (--stage=grid), then the sweep's final "
    "cell: spreads one sweep over a cluster.",
)
flags.DEFINE_boolean(
    "predictors",
    False,
    "Beyond the paper: also run transfer-predictors (kNN, few-shot probes, LogME, LEEP, NCE, "
    "H-score, GBC) on each source's features of each target; the report scores them against "
    "the measured transfer.",
)
flags.DEFINE_list(
    "predictors_flags", [], "Extra flags for transfer-predictors (e.g. --blas_threads=1)."
)
flags.DEFINE_boolean("dry_run", False, "Print the planned commands and exit.")


def config_from_flags() -> plan.StudyConfig:
    study_dir = FLAGS.study_dir or os.path.join(FLAGS.runs_root, time.strftime("%Y%m%d-%H%M%S"))
    return plan.StudyConfig(
        study_dir=os.path.abspath(study_dir),
        source_dataset=FLAGS.source_dataset,
        source_max_per_class=FLAGS.source_max_per_class,
        target_datasets=tuple(FLAGS.target_datasets),
        target_max_per_class=FLAGS.target_max_per_class,
        public_models=tuple(FLAGS.public_models),
        external_models=tuple(FLAGS.external_models),
        own_datasets=tuple(FLAGS.own_datasets),
        predictors=FLAGS.predictors,
        predictors_flags=tuple(FLAGS.predictors_flags),
        pretrain_models=tuple(FLAGS.pretrain_models),
        pretrain_settings=tuple(FLAGS.pretrain_settings),
        pretrain_flagfile=_abspath(FLAGS.pretrain_flagfile),
        pretrain_input_size=FLAGS.pretrain_input_size,
        pretrain_steps=FLAGS.pretrain_steps,
        logreg_num_l2=FLAGS.logreg_num_l2,
        logreg_flags=tuple(FLAGS.logreg_flags),
        subset_sizes=tuple(int(n) for n in FLAGS.subset_sizes),
        subset_models=tuple(FLAGS.subset_models),
        subset_datasets=tuple(FLAGS.subset_datasets),
        subsets_per_size=FLAGS.subsets_per_size,
        finetune_models=tuple(FLAGS.finetune_models),
        finetune_datasets=tuple(FLAGS.finetune_datasets),
        finetune_flagfile=_abspath(FLAGS.finetune_flagfile),
        finetune_input_size=FLAGS.finetune_input_size,
        scratch_models=tuple(FLAGS.scratch_models),
        scratch_flagfile=_abspath(FLAGS.scratch_flagfile),
        analyze_flags=tuple(FLAGS.analyze_flags),
        split_grid_cells=FLAGS.split_grid_cells,
    )


def _abspath(path: str | None) -> str | None:
    if path is None:
        return None
    if not os.path.exists(path):
        raise app.UsageError(f"flagfile {path!r} does not exist")
    return os.path.abspath(path)


def make_executor():
    if FLAGS.executor == "local":
        return executors.LocalExecutor(max_concurrent=FLAGS.max_concurrent)
    return executors.RayExecutor(
        FLAGS.ray_address,
        max_retries=FLAGS.ray_max_retries,
        cpus_per_step=FLAGS.ray_cpus_per_step,
        gpus_per_step=FLAGS.ray_gpus_per_step,
    )


def print_headline(cfg: plan.StudyConfig, wall: float) -> None:
    from transfer_tf.analysis.headline import headline_lines  # light: no pandas / matplotlib

    with open(cfg.path("report", "headline.json")) as f:
        headline = json.load(f)
    print(f"\nstudy finished in {wall / 60:.1f} min: {cfg.study_dir}")
    for line in headline_lines(headline):
        print(f"  {line}")
    print(
        f"TensorBoard: .venv/bin/tensorboard --logdir {cfg.path('models')} --host 127.0.0.1 "
        "--port 6006   (then open http://127.0.0.1:6006)"
    )
    print(f"report: {headline['report_html']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with contextlib.ExitStack() as locked:
        try:
            cfg = config_from_flags()
            early = os.path.isdir(cfg.study_dir) and not FLAGS.dry_run
            if early:  # a resume: a study already running in this folder refuses it at once
                locked.enter_context(study_steps.study_lock(cfg.study_dir))
            steps = plan.plan_study(cfg)  # names checked before anything is created
        except ValueError as e:
            raise app.UsageError(str(e)) from e
        if FLAGS.dry_run:
            for step in steps:
                print(f"{step.name}  <- {', '.join(step.deps) or '-'}\n    {' '.join(step.argv)}")
            return
        os.makedirs(cfg.study_dir, exist_ok=True)
        if not early:
            locked.enter_context(study_steps.study_lock(cfg.study_dir))  # one study per folder
        with open(cfg.path("study_flags.txt"), "w") as f:
            f.write(FLAGS.flags_into_string())
        print(
            f"[study] {len(steps)} steps in {cfg.study_dir} ({FLAGS.executor} executor)", flush=True
        )
        start = time.time()
        records = make_executor().run(steps, cfg.study_dir)  # Ctrl-C stops the running steps
        wall = time.time() - start
        own = f"; this process's own start-up {cli.startup_s:.1f} s" if cli.startup_s else ""
        summary = study_steps.overhead_summary(records, wall)
        print(f"[study] {study_steps.overhead_line(summary)}{own}", flush=True)
        print_headline(cfg, wall)  # last: its last line names the report


def run():
    cli.run("transfer-study", main)


if __name__ == "__main__":
    run()
