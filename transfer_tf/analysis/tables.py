"""From the sweep results DataFrame (`transfer_tf.results.load`) to the tables the paper analyses.

The DataFrame follows docs/DESIGN.md "The result schema": one row per sweep cell. Only `final`
cells (trained on train+val, scored on test) enter the accuracy tables; cells with `per_class`
set are the training-subset runs of Fig. 9 and are kept apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_tf.analysis import stats

PROTOCOL_NAMES = {
    "logreg": "logistic regression",
    "finetune": "fine-tuning",
    "scratch": "training from random initialization",
}
REQUIRED_RESULT_COLUMNS = ("protocol", "model", "dataset", "stage", "test_metric")
REQUIRED_MODEL_TABLE_COLUMNS = ("model", "source_top1")
# The column's name in model tables written before 2026-12-01 (read as `source_top1`).
LEGACY_TOP1_COLUMN = "imagenet_top1"
# What the final-metrics table takes from the validated model table.
MODEL_COLUMNS = (
    "model",
    "source_top1",
    "source_logit",
    "architecture",
    "settings",
    "source_dataset",
)


def validate_results(results: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"results DataFrame lacks columns {missing}; pass the output of "
            "transfer_tf.results.load(results_dir) (schema: docs/DESIGN.md)."
        )
    results = results.copy()
    for column, default in (("per_class", np.nan), ("seed", 0), ("metric", "top1")):
        if column not in results.columns:
            results[column] = default
    for column in ("architecture", "settings"):
        if column not in results.columns:
            results[column] = None
    bad = results["protocol"][~results["protocol"].isin(list(PROTOCOL_NAMES))].unique()
    if len(bad):
        raise ValueError(
            f"results have unknown protocols {list(bad)}; expected {list(PROTOCOL_NAMES)}."
        )
    results["per_class"] = pd.to_numeric(results["per_class"], errors="coerce")
    # A grouping key for per_class (-1: the whole training set), since NaN keys do not group.
    results["_per_class"] = results["per_class"].fillna(-1.0)
    # Fig. 9's subsets: each seed is its own subset and its own sweep, chosen on its own
    # validation (-1: the whole training set, whose seeds are reruns averaged together).
    seeds = pd.to_numeric(results["seed"], errors="coerce").fillna(0)
    results["_subset_seed"] = np.where(results["_per_class"] >= 0, seeds, -1).astype(int)
    if "cell_id" not in results.columns:
        results["cell_id"] = [f"row {i}" for i in range(len(results))]
    if "predictions_path" not in results.columns:
        results["predictions_path"] = None
    return results


def settings_labels(values: pd.Series) -> pd.Series:
    """Training-settings labels as strings; a missing label becomes "unspecified"."""
    return pd.Series(
        [
            "unspecified" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in values
        ],
        index=values.index,
        dtype=object,
    )


def validate_model_table(model_table: pd.DataFrame) -> pd.DataFrame:
    if "source_top1" not in model_table.columns and LEGACY_TOP1_COLUMN in model_table.columns:
        model_table = model_table.rename(columns={LEGACY_TOP1_COLUMN: "source_top1"})
    missing = [c for c in REQUIRED_MODEL_TABLE_COLUMNS if c not in model_table.columns]
    if missing:
        raise ValueError(
            f"model table lacks columns {missing}; it needs model, architecture, settings, "
            "source_top1 (a fraction) and top1_source (docs/DESIGN.md)."
        )
    table = model_table.copy()
    duplicated = table["model"][table["model"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"model table lists models {list(duplicated)} more than once.")
    # The source model's top-1 on the data it was pretrained on: ImageNet, or what the optional
    # `source_dataset` column names.
    top1 = pd.to_numeric(table["source_top1"], errors="coerce")
    if top1.isna().any() or (top1 <= 0).any() or (top1 >= 1).any():
        raise ValueError(
            "model table column source_top1 must be a fraction in (0, 1) for every model "
            f"(got {table['source_top1'].tolist()}); divide percentages by 100."
        )
    table["source_top1"] = top1
    table["source_logit"] = stats.logit(top1.to_numpy())
    for column in ("architecture", "settings", "top1_source", "source_dataset"):
        if column not in table.columns:
            table[column] = None
    table["settings"] = settings_labels(table["settings"])
    return table


# Hyperparameters a final cell does not share with the grid cell that chose it: scikit-learn's C
# is 1 / (λ n), and the refit on train+val keeps λ (`hp.l2`) at a larger n.
DERIVED_HPARAMS = {"logreg": ("C",)}
_KEYS = ["protocol", "model", "dataset", "_per_class", "_subset_seed"]


def _hparams_key(frame: pd.DataFrame, *, shared_with_grid: bool = False) -> pd.Series:
    """One string per row naming its hyperparameters (all of them, or those a final cell shares
    with the grid cell that chose it)."""
    hp_columns = sorted(c for c in frame.columns if c.startswith("hp."))
    keys = []
    for protocol, values in zip(
        frame["protocol"], frame[hp_columns].itertuples(index=False, name=None), strict=True
    ):
        drop = DERIVED_HPARAMS.get(protocol, ()) if shared_with_grid else ()
        keys.append(
            repr(
                tuple(
                    v
                    for c, v in zip(hp_columns, values, strict=True)
                    if c[len("hp.") :] not in drop
                )
            )
        )
    return pd.Series(keys, index=frame.index, dtype=object)


def _final_configs(final: pd.DataFrame) -> pd.DataFrame:
    """One row per final cell configuration (seeds averaged in accuracy)."""
    return (
        final.sort_values("seed", kind="stable")
        .groupby(_KEYS + ["_hp", "_shared"], sort=True, dropna=False)
        .agg(
            architecture=("architecture", "first"),
            settings=("settings", "first"),
            metric=("metric", "first"),
            test_metric=("test_metric", "mean"),
            n_seeds=("test_metric", "size"),
            cell_id=("cell_id", "first"),
            cell_ids=("cell_id", lambda ids: ", ".join(map(str, ids))),
            hparams=("_hp_text", "first"),
            predictions_path=("predictions_path", "first"),
        )
        .reset_index()
    )


def _grid_validation(results: pd.DataFrame) -> pd.Series:
    """The best val_metric of the grid cells behind each final configuration (by shared hparams)."""
    grid = results[results["stage"] == "grid"]
    if "val_metric" not in grid.columns:
        return pd.Series(dtype=float)
    grid = grid.assign(val_metric=pd.to_numeric(grid["val_metric"], errors="coerce"))
    grid = grid[grid["val_metric"].notna()]
    if grid.empty:
        return pd.Series(dtype=float)
    grid = grid.assign(_shared=_hparams_key(grid, shared_with_grid=True))
    return grid.groupby(_KEYS + ["_shared"], dropna=False)["val_metric"].max()


def _hparams_text(frame: pd.DataFrame) -> pd.Series:
    """ "name=value, ..." of each row's hyperparameters, for messages."""
    hp_columns = sorted(c for c in frame.columns if c.startswith("hp."))
    return pd.Series(
        [
            ", ".join(
                f"{c[len('hp.') :]}={v}"
                for c, v in zip(hp_columns, values, strict=True)
                if not (isinstance(v, float) and np.isnan(v))
            )
            for values in frame[hp_columns].itertuples(index=False, name=None)
        ],
        index=frame.index,
        dtype=object,
    )


def _ambiguity(group: pd.DataFrame) -> str:
    cells = "; ".join(
        f"cells {r['cell_ids']} ({r['hparams'] or 'no hparams'}, grid val_metric "
        f"{'none' if np.isnan(r['selection_val_metric']) else f'{r.selection_val_metric:.6g}'})"
        for _, r in group.iterrows()
    )
    protocol, model, dataset, per_class, seed = group.iloc[0][_KEYS]
    subset = "" if per_class < 0 else f", {per_class:g} per class (subset seed {seed})"
    return f"{protocol} / {model} / {dataset}{subset}: {cells}"


def select_finals(results: pd.DataFrame) -> pd.DataFrame:
    """One final configuration per protocol x model x dataset x per_class, never chosen by its
    test score.

    Where a results folder holds several final configurations of one model and dataset (reruns
    with other grids), the one whose grid cells reached the best validation metric is kept
    (`selected_by` = "validation"; `selection_val_metric` = that metric). When a configuration
    has no grid cell behind it, or two tie, this raises and names the cells.
    """
    results = validate_results(results)
    final = results[(results["stage"] == "final") & results["test_metric"].notna()].copy()
    final["test_metric"] = final["test_metric"].astype(float)
    final = final.assign(
        _hp=_hparams_key(final),
        _shared=_hparams_key(final, shared_with_grid=True),
        _hp_text=_hparams_text(final),
    )
    if final.empty:
        return pd.DataFrame(columns=list(dict.fromkeys(_KEYS + FINAL_COLUMNS)))
    configs = _final_configs(final)
    configs["n_final_configs"] = configs.groupby(_KEYS, dropna=False)["_hp"].transform("size")
    validation = _grid_validation(results)
    configs["selection_val_metric"] = np.nan
    if len(validation):
        index = pd.MultiIndex.from_frame(configs[_KEYS + ["_shared"]])
        configs["selection_val_metric"] = validation.reindex(index).to_numpy(dtype=float)
    configs["selected_by"] = np.where(configs["n_final_configs"] > 1, "validation", "only final")
    chosen, problems = [], []
    for _, group in configs.groupby(_KEYS, sort=True, dropna=False):
        val = group["selection_val_metric"]
        if len(group) > 1 and (val.isna().any() or (val == val.max()).sum() > 1):
            problems.append(_ambiguity(group))
        else:
            chosen.append(group.loc[val.idxmax()] if len(group) > 1 else group.iloc[0])
    if problems:
        raise ValueError(
            "several final cells for one model and dataset, and their validation metrics do not "
            "choose one (the report never chooses by test score): "
            + " | ".join(problems)
            + ". Keep the final cells of one sweep in --results_dir (move the others out) or "
            "keep the grid cells that chose them."
        )
    return pd.DataFrame(chosen).drop(columns=["_hp", "_shared", "cell_ids"]).reset_index(drop=True)


FINAL_COLUMNS = [
    "protocol",
    "model",
    "architecture",
    "settings",
    "dataset",
    "metric",
    "test_metric",
    "logit",
    "n_seeds",
    "n_final_configs",
    "selected_by",
    "selection_val_metric",
    "cell_id",
    "hparams",
    "predictions_path",
    "source_top1",
    "source_logit",
    "source_dataset",
]


def final_metrics(results: pd.DataFrame, model_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model x dataset x protocol on the full training set: the test metric of its
    final cell (`select_finals`), with the model table's source accuracy.

    Columns: `FINAL_COLUMNS` (`source_top1`: the model table's column, the source model's
    top-1 on its pretraining data, which `source_dataset` names when it is not ImageNet).
    """
    chosen = select_finals(results)
    best = chosen[chosen["_per_class"] < 0].drop(columns=["_per_class", "_subset_seed"])
    best = best.reset_index(drop=True)
    best["logit"] = stats.logit(best["test_metric"].to_numpy(dtype=float))
    if model_table is not None:
        table = validate_model_table(model_table)
        best = best.merge(
            table[list(MODEL_COLUMNS)], on="model", how="left", suffixes=("", "_table")
        )
        # The model table describes the source models: its architecture / settings win over
        # the labels a sweep derived (e.g. fine-tuning calls a settings mix it does not
        # recognise "custom"); the results' own labels fill in models the table lacks.
        for column in ("architecture", "settings"):
            best[column] = best.pop(column + "_table").fillna(best[column])
    best["settings"] = settings_labels(best["settings"])
    for column in FINAL_COLUMNS:
        if column not in best.columns:
            best[column] = np.nan
    return best[FINAL_COLUMNS]


def logit_matrix(best: pd.DataFrame, protocol: str, models=None) -> pd.DataFrame:
    """models x datasets logit accuracies for one protocol (NaN where a cell is missing)."""
    rows = best[best["protocol"] == protocol]
    if models is not None:
        rows = rows[rows["model"].isin(list(models))]
    return rows.pivot_table(index="model", columns="dataset", values="logit", aggfunc="first")


def complete_matrix(matrix: pd.DataFrame) -> pd.DataFrame:
    """The largest-looking complete sub-matrix: drops the model or dataset with most gaps first.

    The paper averages every model over the same datasets; a model missing a dataset would
    otherwise be compared on an easier or harder set.
    """
    matrix = matrix.copy()
    while matrix.size and matrix.isna().to_numpy().any():
        row_gaps = matrix.isna().sum(axis=1) / max(matrix.shape[1], 1)
        col_gaps = matrix.isna().sum(axis=0) / max(matrix.shape[0], 1)
        if row_gaps.max() >= col_gaps.max():
            matrix = matrix.drop(index=row_gaps.idxmax())
        else:
            matrix = matrix.drop(columns=col_gaps.idxmax())
    return matrix


def win_counts(best: pd.DataFrame, winner: str, loser: str) -> dict:
    """How often protocol `winner` has a higher test metric than `loser` (model x dataset pairs)."""
    a = best[best["protocol"] == winner].set_index(["model", "dataset"])["test_metric"]
    b = best[best["protocol"] == loser].set_index(["model", "dataset"])["test_metric"]
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    per_dataset = {
        dataset: int((group["a"] > group["b"]).sum())
        for dataset, group in both.groupby(level="dataset")
    }
    return {
        "winner": winner,
        "loser": loser,
        "wins": int((both["a"] > both["b"]).sum()),
        "ties": int((both["a"] == both["b"]).sum()),
        "total": int(len(both)),
        "per_dataset_wins": per_dataset,
        "per_dataset_total": both.groupby(level="dataset").size().astype(int).to_dict(),
    }


SUBSET_COLUMNS = ["protocol", "model", "dataset", "per_class", "seed", "test_metric", "logit"]


def subset_results(results: pd.DataFrame) -> pd.DataFrame:
    """Final cells trained on `per_class` examples per class (Fig. 9): one row per subset
    (`seed`), its configuration chosen on that subset's own validation (`select_finals`)."""
    chosen = select_finals(results)
    rows = chosen[chosen["_per_class"] >= 0]
    if rows.empty:
        return pd.DataFrame(columns=SUBSET_COLUMNS)
    out = rows.rename(columns={"_per_class": "per_class", "_subset_seed": "seed"})
    out = out[SUBSET_COLUMNS[:-1]].astype({"test_metric": float}).reset_index(drop=True)
    out["logit"] = stats.logit(out["test_metric"].to_numpy())
    return out


def _history_points(history) -> list[tuple[float, float, float]]:
    """(step, metric, epoch) per evaluation; epoch NaN in results written before it was kept."""
    if not isinstance(history, list | tuple):
        return []
    points = []
    for point in history:
        if isinstance(point, dict) and point.get("step") is not None:
            value = point.get("val_metric")
            if value is not None and np.isfinite(float(value)):
                epoch = point.get("epoch")
                epoch = float(epoch) if epoch is not None else np.nan
                points.append((float(point["step"]), float(value), epoch))
    return points


HISTORY_COLUMNS = [
    "protocol",
    "model",
    "dataset",
    "stage",
    "eval_split",
    "step",
    "eval_metric",
    "epoch",
]
# A cell's history is scored on the split its run evaluated on: a grid cell trains on train and
# evaluates on val; a final cell trains on train+val, so anything it evaluates is the test split.
EVAL_SPLIT = {"grid": "val", "final": "test"}


def training_histories(results: pd.DataFrame, final_cells=None) -> pd.DataFrame:
    """Metric against step for fine-tune and scratch runs (Fig. 8), long format.

    One run per model x dataset x protocol on the full data: the final cell's history when it has
    one, else the history of the grid cell with the best validation metric (the chosen
    hyperparameters). `final_cells`: the cell ids of the chosen final cells (`final_metrics`'s
    `cell_id`); other final cells are not used. `eval_split` says which split `eval_metric` was
    measured on.
    """
    results = validate_results(results)
    columns = HISTORY_COLUMNS
    if "history" not in results.columns:
        return pd.DataFrame(columns=columns)
    rows = results[results["protocol"].isin(["finetune", "scratch"]) & results["per_class"].isna()]
    if final_cells is not None:
        rows = rows[(rows["stage"] != "final") | rows["cell_id"].isin(list(final_cells))]
    rows = rows.assign(history_points=rows["history"].map(_history_points))
    rows = rows[rows["history_points"].map(len) > 0]
    if "val_metric" not in rows.columns:
        rows = rows.assign(val_metric=np.nan)
    rows = rows.assign(
        _stage_rank=(rows["stage"] != "final").astype(int),
        _score=-pd.to_numeric(rows["val_metric"], errors="coerce").fillna(-np.inf),
    )
    chosen = rows.sort_values(["_stage_rank", "_score"], kind="stable").drop_duplicates(
        ["protocol", "model", "dataset"]
    )
    long = [
        (r.protocol, r.model, r.dataset, r.stage, EVAL_SPLIT.get(r.stage), step, value, epoch)
        for r in chosen.itertuples()
        for step, value, epoch in r.history_points
    ]
    return pd.DataFrame(long, columns=columns)
