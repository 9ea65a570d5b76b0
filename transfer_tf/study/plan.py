"""The study planner: a StudyConfig (set by a flagfile) -> the steps that run the whole study.

Every step is one command of an existing binary; this file only decides which commands, with
which flags, in which order. Layout of a study directory:

    records/<dataset>/            TFRecords (transfer-make-tfrecords)
    models/<label>/               pretraining runs (transfer-pretrain; TensorBoard in tb/)
    saved_models/<label>/         SavedModels (transfer-export)
    features/<label>/<dataset>/   penultimate features (transfer-extract-features)
    results/<protocol>/           one JSON per sweep cell (logreg, finetune, scratch)
    model_table.csv               source accuracy per model (python -m transfer_tf.study.model_table)
    report/                       transfer-analyze: report.html, tables, figures
    logs/, steps/                 one log and one done-marker per step
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from transfer_tf import settings_ladder
from transfer_tf.data.user_spec import own_dataset_flags
from transfer_tf.protocols import finetune_grid
from transfer_tf.study.external import ExternalSource, parse_external_source
from transfer_tf.study.registry_table import has_aux_head, model_names
from transfer_tf.study.steps import Step

# Every label --pretrain_settings takes (Fig. 3's ladder, `transfer_tf/settings_ladder.py`);
# by default the paper's two ends: "fair" retraining and the Inception defaults (Sec. 4.1).
SETTINGS_LABELS = settings_ladder.LABELS
DEFAULT_SETTINGS = ("fair", "inception_default")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    study_dir: str
    # Data: the source for pretraining here, and the transfer targets.
    source_dataset: str = "fashion_mnist"
    source_max_per_class: int | None = None
    target_datasets: tuple[str, ...] = ("sklearn_digits",)
    target_max_per_class: int | None = None
    # Sources (a): public checkpoints: NAME (registry weights="imagenet") or NAME=PATH (a
    # published TF-slim checkpoint prefix or Keras Applications .h5 file).
    public_models: tuple[str, ...] = ()
    # Sources from outside the registry: LABEL=PATH[,option=value...] (a SavedModel or a .keras
    # file; `transfer_tf/study/external.py`). Fixed features; a .keras one can also be fine-tuned.
    external_models: tuple[str, ...] = ()
    # The user's own datasets: NAME=PATH[,option=value...] (an image folder or a CSV;
    # `transfer_tf.data.user_spec.own_dataset_flags`), transfer targets beside target_datasets.
    own_datasets: tuple[str, ...] = ()
    # Sources (b): registry architectures pretrained here, once per training-settings label.
    pretrain_models: tuple[str, ...] = ()
    pretrain_settings: tuple[str, ...] = DEFAULT_SETTINGS
    pretrain_flagfile: str | None = None
    pretrain_input_size: int | None = None
    pretrain_steps: int | None = None
    # Protocol 1: logistic regression (the full 45-value grid unless shrunk).
    logreg_num_l2: int = 45
    logreg_flags: tuple[str, ...] = ()  # e.g. --blas_threads=1 when steps share the cores
    # Fig. 9: logreg, fine-tuning and scratch also trained on N examples per class, on the
    # fine-tune targets (or `subset_datasets`), for the source models in `subset_models` (empty:
    # every model); `subsets_per_size` subsets of each size (seeds 0, 1, ...; the paper: 3).
    subset_sizes: tuple[int, ...] = ()
    subset_models: tuple[str, ...] = ()
    subset_datasets: tuple[str, ...] = ()
    subsets_per_size: int = 3
    # Protocol 2: fine-tuning; which source models (labels) and the grid.
    finetune_models: tuple[str, ...] = ()
    # Targets that fine-tuning and scratch run on (empty: every target dataset).
    finetune_datasets: tuple[str, ...] = ()
    finetune_flagfile: str | None = None
    finetune_input_size: int | None = None
    # Protocol 3: training from scratch, per pretrained-here architecture.
    scratch_models: tuple[str, ...] = ()
    scratch_flagfile: str | None = None
    # Analysis.
    analyze_flags: tuple[str, ...] = ()
    # Clusters: each fine-tune / scratch grid cell as its own step (`split_sweep`).
    split_grid_cells: bool = False
    # Beyond the paper (issue 19): cheap transfer predictors per source model x target, scored
    # against the study's own ground truth in the report.
    predictors: bool = False
    predictors_flags: tuple[str, ...] = ()  # e.g. --blas_threads=1 when steps share the cores

    def targets(self) -> tuple[str, ...]:
        """The registry targets, then the user's own datasets."""
        own = tuple(own_dataset_flags(entry)[0] for entry in self.own_datasets)
        return tuple(dict.fromkeys(self.target_datasets + own))

    def trained_targets(self) -> tuple[str, ...]:
        unknown = set(self.finetune_datasets) - set(self.targets())
        if unknown:
            raise ValueError(
                f"--finetune_datasets: {sorted(unknown)} are not target datasets "
                f"({', '.join(self.targets())})"
            )
        return self.finetune_datasets or self.targets()

    def subsets_for(self, label: str, dataset: str) -> tuple[tuple[int | None, int], ...]:
        """(per_class, seed) of each training set: (None, 0), the whole training set, then
        where Fig. 9 applies each subset size with seeds 0 .. subsets_per_size - 1."""
        unknown = set(self.subset_datasets) - set(self.trained_targets())
        if unknown:
            raise ValueError(
                f"--subset_datasets: {sorted(unknown)} are not fine-tune targets "
                f"({', '.join(self.trained_targets())})"
            )
        chosen = not self.subset_models or label in self.subset_models
        subsets = chosen and dataset in (self.subset_datasets or self.trained_targets())
        if not subsets:
            return ((None, 0),)
        seeds = range(self.subsets_per_size)
        return ((None, 0), *((n, seed) for n in self.subset_sizes for seed in seeds))

    def path(self, *parts: str) -> str:
        return os.path.join(self.study_dir, *parts)


@dataclasses.dataclass(frozen=True)
class SourceModel:
    """One row of the study's model table: a label, its architecture and how it was trained."""

    label: str
    architecture: str
    settings: str  # "public" or a label of Fig. 3's ladder (SETTINGS_LABELS)
    pretrained_here: bool
    checkpoint: str | None = None  # a published checkpoint's path (public models only)

    def weights_flags(self) -> list[str]:
        """How a public model's published weights are named to transfer-export / -finetune."""
        if self.checkpoint:
            return [f"--model={self.architecture}", f"--checkpoint={self.checkpoint}"]
        return [f"--model={self.architecture}", "--weights=imagenet"]


def public_model(entry: str) -> SourceModel:
    """A `--public_models` entry: NAME, or NAME=PATH for a published checkpoint."""
    name, _, path = entry.partition("=")
    if path and not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise ValueError(
            f"--public_models={entry}: {path} does not exist (a TF-slim checkpoint prefix with "
            "its .index file, or a Keras .h5 file)"
        )
    return SourceModel(name, name, "public", False, os.path.abspath(path) if path else None)


def source_models(cfg: StudyConfig) -> list[SourceModel]:
    models = [public_model(m) for m in cfg.public_models]
    for settings in cfg.pretrain_settings:
        try:
            settings_ladder.rung(settings)
        except ValueError as e:
            raise ValueError(f"--pretrain_settings: {e}") from None
        models += [
            SourceModel(f"{arch}_{settings}", arch, settings, True) for arch in cfg.pretrain_models
        ]
    return models


def _check_labels(flag: str, labels, known) -> None:
    for label in labels:
        if label not in known:
            raise ValueError(
                f"--{flag}: {label!r} is not a source model of this study; known: {sorted(known)}"
            )


def _suffix(per_class: int | None, seed: int = 0) -> str:
    """A step name's subset part: -n<size>, and -s<seed> for the second and later subsets."""
    return ("" if per_class is None else f"-n{per_class}") + (f"-s{seed}" if seed else "")


def _subset_flags(per_class: int | None, seed: int) -> list[str]:
    return [*_opt("per_class", per_class), *_opt("seed", seed or None)]


def settings_flags(architecture: str, settings: str) -> list[str]:
    """The four training-setting flags of transfer-pretrain for a settings label (Fig. 3's
    ladder); the aux head only where the family has one."""
    s = settings_ladder.rung(settings).values()
    aux = s["aux_head"] and has_aux_head(architecture)
    return [
        "--bn_scale" if s["bn_scale"] else "--nobn_scale",
        f"--dropout_rate={s['dropout_rate']}",
        "--aux_head" if aux else "--noaux_head",
        f"--label_smoothing={s['label_smoothing']}",
    ]


def _opt(flag: str, value) -> list[str]:
    return [] if value is None else [f"--{flag}={value}"]


def _flagfile(path: str | None) -> list[str]:
    return [] if path is None else [f"--flagfile={path}"]


def sweep_grid(protocol: str, flagfile: str | None) -> list[dict]:
    """The grid transfer-<protocol> runs with `flagfile`: only its grid flags, read by absl as the
    binary reads them (nested --flagfile, last value wins), then the binary's grid function."""
    grid_flags = flags.FlagValues()
    finetune_grid.define_grid_flags(protocol, grid_flags)
    try:
        grid_flags(["transfer-study", *_flagfile(flagfile)], known_only=True)
        return finetune_grid.grid_from_flags(protocol, grid_flags)
    except (flags.Error, ValueError) as e:
        raise ValueError(f"--{protocol}_flagfile={flagfile}: bad grid flags: {e}") from e


def split_sweep(step: Step, grid: list[dict]) -> list[Step]:
    """A sweep step as one `--stage=grid` step per grid cell, plus the whole sweep after them.

    Cell ids are content hashes, so a one-point grid computes the very cell the full grid would:
    the last step finds every grid cell done and runs only the final (best) cell.
    """
    width = len(str(len(grid) - 1))
    cells = [
        dataclasses.replace(
            step,
            name=f"{step.name}-grid{i:0{width}d}",
            argv=(
                *step.argv,
                f"--learning_rates={point['learning_rate']!r}",
                f"--weight_decays={point['weight_decay']!r}",
                "--stage=grid",
            ),
        )
        for i, point in enumerate(grid)
    ]
    final = dataclasses.replace(
        step, argv=(*step.argv, "--stage=all"), deps=(*step.deps, *(c.name for c in cells))
    )
    return [*cells, final]


def external_feature_steps(cfg: StudyConfig, externals) -> list[Step]:
    """Features (read by transfer-extract-features straight from the SavedModel / .keras file:
    no export step) and logistic regression of each external source on each target."""
    steps = []
    for e in externals:
        for dataset in cfg.targets():
            features = cfg.path("features", e.label, dataset)
            steps.append(
                Step(
                    f"features-{e.label}-{dataset}",
                    (
                        "transfer-extract-features",
                        *e.extract_flags(),
                        f"--records_dir={cfg.path('records')}",
                        f"--dataset={dataset}",
                        f"--features_dir={features}",
                    ),
                    deps=(f"records-{dataset}",),
                    num_cpus=2,
                )
            )
            for per_class, seed in cfg.subsets_for(e.label, dataset):
                steps.append(
                    Step(
                        f"logreg-{e.label}-{dataset}{_suffix(per_class, seed)}",
                        (
                            "transfer-logreg",
                            f"--features_dir={features}",
                            f"--results_dir={cfg.path('results')}",
                            f"--model_label={e.label}",
                            "--settings=external",
                            f"--num_l2={cfg.logreg_num_l2}",
                            *cfg.logreg_flags,
                            *_subset_flags(per_class, seed),
                        ),
                        deps=(f"features-{e.label}-{dataset}",),
                    )
                )
    return steps


def predictor_steps(cfg: StudyConfig, models, externals) -> list[Step]:
    """`transfer-predictors` on each source's features of each target (`--predictors`); registry
    models pass their SavedModel, whose serving_default logits LEEP / NCE need (external sources
    have none, and the step says it skips those two)."""
    if not cfg.predictors:
        return []
    steps = []
    for label, identity, extra in [
        *[
            (
                m.label,
                (f"--architecture={m.architecture}", f"--settings={m.settings}"),
                (f"--saved_model={cfg.path('saved_models', m.label)}",),
            )
            for m in models
        ],
        *[(e.label, ("--settings=external",), ()) for e in externals],
    ]:
        for dataset in cfg.targets():
            steps.append(
                Step(
                    f"predictors-{label}-{dataset}",
                    (
                        "transfer-predictors",
                        f"--features_dir={cfg.path('features', label, dataset)}",
                        f"--results_dir={cfg.path('results')}",
                        f"--model_label={label}",
                        *identity,
                        *extra,
                        *cfg.predictors_flags,
                    ),
                    deps=(f"features-{label}-{dataset}",),
                    num_cpus=2,
                )
            )
    return steps


def external_finetune_steps(cfg: StudyConfig, e: ExternalSource, add_sweep) -> list[Step]:
    """Fine-tuning a .keras source (a SavedModel's network cannot be rebuilt for training)."""
    if not e.is_keras:
        raise ValueError(
            f"--finetune_models: {e.label} is an external SavedModel, whose network cannot be "
            "rebuilt for fine-tuning; only .keras sources (and registry models) fine-tune"
        )
    size = e.option("input_size") or cfg.finetune_input_size
    if not size or not e.option("scaling"):
        raise ValueError(
            f"--external_models: {e.label} is fine-tuned, so give it input_size=N and scaling=..."
        )
    init = [
        f"--init_keras_model={e.path}",
        f"--feature_layer={e.option('feature_layer')}",
        f"--scaling={e.option('scaling')}",
        f"--input_size={size}",
    ]
    steps: list[Step] = []
    for dataset in cfg.trained_targets():
        for per_class, seed in cfg.subsets_for(e.label, dataset):
            add_sweep(
                "finetune",
                Step(
                    f"finetune-{e.label}-{dataset}{_suffix(per_class, seed)}",
                    (
                        "transfer-finetune",
                        *_flagfile(cfg.finetune_flagfile),
                        *init,
                        f"--dataset={dataset}",
                        f"--records_dir={cfg.path('records')}",
                        f"--results_dir={cfg.path('results')}",
                        f"--model_label={e.label}",
                        *_subset_flags(per_class, seed),
                    ),
                    deps=(f"records-{dataset}",),
                    num_cpus=2,
                ),
                into=steps,
            )
    return steps


def check_names(cfg: StudyConfig) -> None:
    """Every dataset and registry model the flags name exists (ValueError naming the flag), so
    a typo fails when the study plans, before it creates anything."""
    from transfer_tf.data import get_dataset

    own = {own_dataset_flags(entry)[0] for entry in cfg.own_datasets}
    source = (cfg.source_dataset,) if cfg.pretrain_models else ()
    for flag, names in (("target_datasets", cfg.target_datasets), ("source_dataset", source)):
        for name in names:
            if name in own:
                continue
            try:
                get_dataset(name, records_dir=cfg.path("records"))
            except KeyError as e:
                raise ValueError(f"--{flag}: {e.args[0]}") from None
    known = model_names()
    public = tuple(entry.partition("=")[0] for entry in cfg.public_models)
    for flag, names in (
        ("public_models", public),
        ("pretrain_models", cfg.pretrain_models),
        ("scratch_models", cfg.scratch_models),
    ):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"--{flag}: unknown model(s) {unknown}; registry models: {', '.join(known)}"
            )


def plan_study(cfg: StudyConfig) -> list[Step]:
    """All steps of the study, with their dependencies (after `check_names`)."""
    check_names(cfg)
    steps: list[Step] = []
    records = cfg.path("records")
    results = cfg.path("results")
    own = dict(own_dataset_flags(entry) for entry in cfg.own_datasets)
    datasets = dict.fromkeys(
        ([cfg.source_dataset] if cfg.pretrain_models else []) + list(cfg.targets())
    )
    for dataset in datasets:
        cap = (
            cfg.source_max_per_class if dataset == cfg.source_dataset else cfg.target_max_per_class
        )
        steps.append(
            Step(
                f"records-{dataset}",
                (
                    "transfer-make-tfrecords",
                    f"--dataset={dataset}",
                    f"--records_dir={records}",
                    *own.get(dataset, ()),
                    *_opt("max_per_class", cap),
                ),
            )
        )

    models = source_models(cfg)
    externals = {e.label: e for e in map(parse_external_source, cfg.external_models)}
    clash = sorted(set(externals) & {m.label for m in models})
    if clash:
        raise ValueError(f"--external_models: labels {clash} are also registry source models")
    by_label = {m.label: m for m in models}
    _check_labels("finetune_models", cfg.finetune_models, {**by_label, **externals})
    _check_labels("subset_models", cfg.subset_models, by_label)
    for m in models:
        saved_model = cfg.path("saved_models", m.label)
        if m.pretrained_here:
            steps.append(
                Step(
                    f"pretrain-{m.label}",
                    (
                        "transfer-pretrain",
                        *_flagfile(cfg.pretrain_flagfile),
                        f"--model={m.architecture}",
                        f"--dataset={cfg.source_dataset}",
                        f"--records_dir={records}",
                        f"--model_dir={cfg.path('models', m.label)}",
                        "--eval_split=test",
                        *_opt("input_size", cfg.pretrain_input_size),
                        *_opt("train_steps", cfg.pretrain_steps),
                        *settings_flags(m.architecture, m.settings),
                    ),
                    deps=(f"records-{cfg.source_dataset}",),
                    num_cpus=2,
                )
            )
            # --replace: a rerun (e.g. after a flagfile edit) keeps an unchanged export and
            # moves a superseded one aside, instead of refusing the folder.
            steps.append(
                Step(
                    f"export-{m.label}",
                    (
                        "transfer-export",
                        f"--model_dir={cfg.path('models', m.label)}",
                        f"--export_dir={saved_model}",
                        "--replace",
                    ),
                    deps=(f"pretrain-{m.label}",),
                )
            )
        else:
            steps.append(
                Step(
                    f"export-{m.label}",
                    (
                        "transfer-export",
                        *m.weights_flags(),
                        f"--export_dir={saved_model}",
                        "--replace",
                    ),
                )
            )
        for dataset in cfg.targets():
            features = cfg.path("features", m.label, dataset)
            steps.append(
                Step(
                    f"features-{m.label}-{dataset}",
                    (
                        "transfer-extract-features",
                        f"--saved_model={saved_model}",
                        f"--records_dir={records}",
                        f"--dataset={dataset}",
                        f"--features_dir={features}",
                    ),
                    deps=(f"export-{m.label}", f"records-{dataset}"),
                    num_cpus=2,
                )
            )
            for per_class, seed in cfg.subsets_for(m.label, dataset):
                steps.append(
                    Step(
                        f"logreg-{m.label}-{dataset}{_suffix(per_class, seed)}",
                        (
                            "transfer-logreg",
                            f"--features_dir={features}",
                            f"--results_dir={results}",
                            f"--model_label={m.label}",
                            f"--architecture={m.architecture}",
                            f"--settings={m.settings}",
                            f"--num_l2={cfg.logreg_num_l2}",
                            *cfg.logreg_flags,
                            *_subset_flags(per_class, seed),
                        ),
                        deps=(f"features-{m.label}-{dataset}",),
                    )
                )

    flagfiles = {"finetune": cfg.finetune_flagfile, "scratch": cfg.scratch_flagfile}
    grids: dict[str, list[dict]] = {}

    def add_sweep(protocol: str, step: Step, into: list[Step] = steps) -> None:
        if not cfg.split_grid_cells:
            into.append(step)
            return
        if protocol not in grids:
            grids[protocol] = sweep_grid(protocol, flagfiles[protocol])
        into.extend(split_sweep(step, grids[protocol]))

    steps += external_feature_steps(cfg, externals.values())
    steps += predictor_steps(cfg, models, externals.values())
    for label in cfg.finetune_models:
        if label in externals:
            steps += external_finetune_steps(cfg, externals[label], add_sweep)
            continue
        m = by_label[label]
        if m.pretrained_here:
            init = [f"--init_model_dir={cfg.path('models', m.label)}"]
            deps = [f"pretrain-{m.label}"]
        else:
            init = [*m.weights_flags(), *_opt("input_size", cfg.finetune_input_size)]
            deps = []
        for dataset in cfg.trained_targets():
            for per_class, seed in cfg.subsets_for(m.label, dataset):
                add_sweep(
                    "finetune",
                    Step(
                        f"finetune-{m.label}-{dataset}{_suffix(per_class, seed)}",
                        (
                            "transfer-finetune",
                            *_flagfile(cfg.finetune_flagfile),
                            *init,
                            f"--dataset={dataset}",
                            f"--records_dir={records}",
                            f"--results_dir={results}",
                            f"--model_label={m.label}",
                            *_subset_flags(per_class, seed),
                        ),
                        deps=(*deps, f"records-{dataset}"),
                        num_cpus=2,
                    ),
                )

    for arch in cfg.scratch_models:
        # Scratch results carry the label of the fair model of the same architecture, so the
        # analysis pairs them with its fine-tuning (Fig. 7).
        label = f"{arch}_fair"
        for dataset in cfg.trained_targets():
            for per_class, seed in cfg.subsets_for(label, dataset):
                add_sweep(
                    "scratch",
                    Step(
                        f"scratch-{arch}-{dataset}{_suffix(per_class, seed)}",
                        (
                            "transfer-scratch",
                            *_flagfile(cfg.scratch_flagfile),
                            f"--model={arch}",
                            *_opt("input_size", cfg.pretrain_input_size),
                            f"--dataset={dataset}",
                            f"--records_dir={records}",
                            f"--results_dir={results}",
                            f"--model_label={label}",
                            *_subset_flags(per_class, seed),
                        ),
                        deps=(f"records-{dataset}",),
                        num_cpus=2,
                    ),
                )

    sweeps = [
        s.name
        for s in steps
        if s.argv[0]
        in ("transfer-logreg", "transfer-finetune", "transfer-scratch", "transfer-predictors")
    ]
    pretrains = [s.name for s in steps if s.argv[0] == "transfer-pretrain"]
    steps.append(
        Step(
            "model-table",
            (
                "python",
                "-m",
                "transfer_tf.study.model_table",
                f"--study_dir={cfg.study_dir}",
                *[f"--model={m.label}:{m.architecture}:{m.settings}" for m in models],
                *[f"--model={e.model_table_entry()}" for e in externals.values()],
                *[
                    f"--top1_source={e.label}={e.option('top1_source')}"
                    for e in externals.values()
                    if e.option("top1_source")
                ],
            ),
            deps=tuple(pretrains),
        )
    )
    steps.append(
        Step(
            "analyze",
            (
                "transfer-analyze",
                f"--results_dir={results}",
                f"--model_table={cfg.path('model_table.csv')}",
                f"--features_dir={cfg.path('features')}",
                f"--output_dir={cfg.path('report')}",
                *cfg.analyze_flags,
            ),
            deps=("model-table", *sweeps),
        )
    )
    return steps
