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
REQUIRED_MODEL_TABLE_COLUMNS = ("model", "imagenet_top1")
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
    return results


def settings_labels(values: pd.Series) -> pd.Series:
    """Training-settings labels as strings; a missing label becomes "unspecified"."""
    return pd.Series(
        ["unspecified" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
         for v in values],
        index=values.index,
        dtype=object,
    )  # fmt: skip


def validate_model_table(model_table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_MODEL_TABLE_COLUMNS if c not in model_table.columns]
    if missing:
        raise ValueError(
            f"model table lacks columns {missing}; it needs model, architecture, settings, "
            "imagenet_top1 (a fraction) and top1_source (docs/DESIGN.md)."
        )
    table = model_table.copy()
    duplicated = table["model"][table["model"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"model table lists models {list(duplicated)} more than once.")
    top1 = pd.to_numeric(table["imagenet_top1"], errors="coerce")
    if top1.isna().any() or (top1 <= 0).any() or (top1 >= 1).any():
        raise ValueError(
            "model table column imagenet_top1 must be a fraction in (0, 1) for every model "
            f"(got {table['imagenet_top1'].tolist()}); divide percentages by 100."
        )
    # The model table's `imagenet_top1` is the source model's top-1 on the data it was
    # pretrained on: ImageNet, or what its optional `source_dataset` column names.
    table["source_top1"] = top1
    table["source_logit"] = stats.logit(top1.to_numpy())
    for column in ("architecture", "settings", "top1_source", "source_dataset"):
        if column not in table.columns:
            table[column] = None
    table["settings"] = settings_labels(table["settings"])
    return table


def _hparams_key(frame: pd.DataFrame) -> pd.Series:
    hp_columns = sorted(c for c in frame.columns if c.startswith("hp."))
    if not hp_columns:
        return pd.Series([""] * len(frame), index=frame.index)
    values = frame[hp_columns].itertuples(index=False, name=None)
    return pd.Series([repr(v) for v in values], index=frame.index)


def best_test_metrics(
    results: pd.DataFrame, model_table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per model x dataset x protocol: the test metric of its full-data final cell.

    Seeds of the same final cell are averaged (in accuracy); if a sweep left several final cells
    with different hyperparameters the best is kept (`n_final_configs` says how many there were).
    Columns: protocol, model, architecture, settings, dataset, metric, test_metric, logit, n_seeds,
    n_final_configs, predictions_path, source_top1, source_logit, source_dataset.
    """
    results = validate_results(results)
    final = results[(results["stage"] == "final") & results["per_class"].isna()]
    final = final[final["test_metric"].notna()].copy()
    final["test_metric"] = final["test_metric"].astype(float)
    final["_hp"] = _hparams_key(final)
    if "predictions_path" not in final.columns:
        final["predictions_path"] = None
    keys = ["protocol", "model", "dataset"]
    per_config = (
        final.sort_values("seed", kind="stable")
        .groupby(keys + ["_hp"], sort=True, dropna=False)
        .agg(
            architecture=("architecture", "first"),
            settings=("settings", "first"),
            metric=("metric", "first"),
            test_metric=("test_metric", "mean"),
            n_seeds=("test_metric", "size"),
            predictions_path=("predictions_path", "first"),
        )
        .reset_index()
    )
    per_config["n_final_configs"] = per_config.groupby(keys)["test_metric"].transform("size")
    best = (
        per_config.sort_values("test_metric", ascending=False, kind="stable")
        .drop_duplicates(keys)
        .drop(columns="_hp")
        .sort_values(keys)
        .reset_index(drop=True)
    )
    best["logit"] = stats.logit(best["test_metric"].to_numpy())
    if model_table is not None:
        table = validate_model_table(model_table)
        best = best.merge(
            table[list(MODEL_COLUMNS)],
            on="model",
            how="left",
            suffixes=("", "_table"),
        )
        # The model table describes the source models: its architecture / settings win over
        # the labels a sweep derived (e.g. fine-tuning calls a settings mix it does not
        # recognise "custom"); the results' own labels fill in models the table lacks.
        for column in ("architecture", "settings"):
            best[column] = best.pop(column + "_table").fillna(best[column])
    best["settings"] = settings_labels(best["settings"])
    columns = [
        "protocol", "model", "architecture", "settings", "dataset", "metric", "test_metric",
        "logit", "n_seeds", "n_final_configs", "predictions_path", "source_top1",
        "source_logit", "source_dataset",
    ]  # fmt: skip
    for column in columns:
        if column not in best.columns:
            best[column] = np.nan
    return best[columns]


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


def subset_results(results: pd.DataFrame) -> pd.DataFrame:
    """Final cells trained on `per_class` examples per class (Fig. 9), seeds averaged."""
    results = validate_results(results)
    rows = results[(results["stage"] == "final") & results["per_class"].notna()]
    rows = rows[rows["test_metric"].notna()]
    if rows.empty:
        return pd.DataFrame(
            columns=["protocol", "model", "dataset", "per_class", "test_metric", "logit"]
        )
    out = (
        rows.astype({"test_metric": float})
        .groupby(["protocol", "model", "dataset", "per_class"])["test_metric"]
        .mean()
        .reset_index()
    )
    out["logit"] = stats.logit(out["test_metric"].to_numpy())
    return out


def _history_points(history) -> list[tuple[float, float]]:
    if not isinstance(history, list | tuple):
        return []
    points = []
    for point in history:
        if isinstance(point, dict) and point.get("step") is not None:
            value = point.get("val_metric")
            if value is not None and np.isfinite(float(value)):
                points.append((float(point["step"]), float(value)))
    return points


HISTORY_COLUMNS = ["protocol", "model", "dataset", "stage", "eval_split", "step", "eval_metric"]
# A cell's history is scored on the split its run evaluated on: a grid cell trains on train and
# evaluates on val; a final cell trains on train+val, so anything it evaluates is the test split.
EVAL_SPLIT = {"grid": "val", "final": "test"}


def training_histories(results: pd.DataFrame) -> pd.DataFrame:
    """Metric against step for fine-tune and scratch runs (Fig. 8), long format.

    One run per model x dataset x protocol on the full data: the final cell's history when it has
    one, else the history of the grid cell with the best validation metric (the chosen
    hyperparameters). `eval_split` says which split `eval_metric` was measured on.
    """
    results = validate_results(results)
    columns = HISTORY_COLUMNS
    if "history" not in results.columns:
        return pd.DataFrame(columns=columns)
    rows = results[results["protocol"].isin(["finetune", "scratch"]) & results["per_class"].isna()]
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
        (r.protocol, r.model, r.dataset, r.stage, EVAL_SPLIT.get(r.stage), step, value)
        for r in chosen.itertuples()
        for step, value in r.history_points
    ]
    return pd.DataFrame(long, columns=columns)
