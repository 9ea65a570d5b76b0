"""Comparisons between protocols and between training settings (Figs. 3, 5, 6, 7, 8, 9).

Pure computations on the tables of `tables.py`: the paired tests across models per dataset
(Sec. 4.2), Fig. 6's bars, Fig. 7's pairs, Fig. 8's steps to 90% of the maximum odds, Fig. 9's
gaps, and Figs. 3 / 5's settings variants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_tf import settings_ladder
from transfer_tf.analysis import stats, tables


def across_model_tests(best: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per dataset, protocol a vs b paired across models on logit accuracy: Wilcoxon and t-test."""
    rows = []
    for dataset in sorted(best["dataset"].unique()):
        on_dataset = best[best["dataset"] == dataset]
        la = on_dataset[on_dataset["protocol"] == a].set_index("model")["logit"]
        lb = on_dataset[on_dataset["protocol"] == b].set_index("model")["logit"]
        both = pd.concat([la.rename("a"), lb.rename("b")], axis=1, join="inner")
        if len(both) < 2:
            continue
        w = stats.wilcoxon_signed_rank(both["a"], both["b"])
        t = stats.paired_t_test(both["a"], both["b"])
        rows.append(
            {
                "dataset": dataset,
                "comparison": f"{a} vs {b}",
                "n_models": len(both),
                "mean_logit_difference": w.mean_difference,
                "wins": int((both["a"] > both["b"]).sum()),
                "wilcoxon_statistic": w.statistic,
                "wilcoxon_p": w.p_value,
                "wilcoxon_min_attainable_p": stats.wilcoxon_min_attainable_p(len(both)),
                "t_statistic": t.statistic,
                "t_p": t.p_value,
            }
        )
    return pd.DataFrame(rows)


def _morey_or_zero(matrix: pd.DataFrame) -> np.ndarray:
    """Morey SE of each row (condition) over the columns (subjects); 0 with one subject."""
    if matrix.shape[1] >= 2:
        return stats.morey_standard_error(matrix.to_numpy())
    return np.zeros(matrix.shape[0])


def protocol_comparison_tables(best: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 6: per dataset, models with every protocol present there; Morey SE over those models."""
    bars, points = [], []
    for dataset, group in best.groupby("dataset"):
        matrix = group.pivot_table(index="protocol", columns="model", values="logit").dropna(axis=1)
        if matrix.shape[0] < 2 or matrix.shape[1] < 1:
            continue
        se = _morey_or_zero(matrix)
        for protocol, mean, err in zip(matrix.index, matrix.mean(axis=1), se, strict=True):
            bars.append(
                {
                    "dataset": dataset,
                    "protocol": protocol,
                    "n_models": matrix.shape[1],
                    "mean_logit": mean,
                    "mean_accuracy": float(stats.inverse_logit(mean)),
                    "morey_se": err,
                }
            )
            for model, value in matrix.loc[protocol].items():
                points.append(
                    {"dataset": dataset, "protocol": protocol, "model": model, "logit": value}
                )
    return pd.DataFrame(bars), pd.DataFrame(points)


def scratch_finetune_pairs(best: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7: one row per model x dataset with both a fine-tuning and a scratch result."""
    ft = best[best["protocol"] == "finetune"].set_index(["model", "dataset"])["logit"]
    sc = best[best["protocol"] == "scratch"].set_index(["model", "dataset"])["logit"]
    pairs = pd.concat(
        [ft.rename("finetune_logit"), sc.rename("scratch_logit")], axis=1, join="inner"
    )
    return pairs.reset_index()


CONVERGENCE_COLUMNS = [
    "protocol",
    "model",
    "dataset",
    "steps_to_90",
    "epochs_to_90",
    "max_eval_metric",
    "last_step",
]


def _epochs_per_step(run: pd.DataFrame) -> float:
    """Epochs per step of one run (its history's epoch / step; NaN where it has no epochs)."""
    if "epoch" not in run.columns:
        return np.nan
    ratio = pd.to_numeric(run["epoch"], errors="coerce") / run["step"].where(run["step"] > 0)
    ratio = ratio.dropna()
    return float(ratio.iloc[-1]) if len(ratio) else np.nan


def convergence_tables(histories: pd.DataFrame, fraction: float = 0.9) -> tuple[pd.DataFrame, dict]:
    """Steps to `fraction` (Sec. 4.6: 90%) of the maximum odds per run, and the geometric-mean
    speedup of fine-tuning over scratch with its CI over model x dataset pairs."""
    rows = []
    for (protocol, model, dataset), run in histories.groupby(["protocol", "model", "dataset"]):
        steps_to = stats.steps_to_fraction_of_max_odds(run["step"], run["eval_metric"], fraction)
        rows.append(
            {
                "protocol": protocol,
                "model": model,
                "dataset": dataset,
                "steps_to_90": steps_to,
                "epochs_to_90": steps_to * _epochs_per_step(run),
                "max_eval_metric": run["eval_metric"].max(),
                "last_step": run["step"].max(),
            }
        )
    steps = pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)
    summary = {}
    wide = steps.pivot_table(index=["model", "dataset"], columns="protocol", values="steps_to_90")
    if {"finetune", "scratch"} <= set(wide.columns):
        # A run that is best at its first evaluation (step 0) has no positive step to average.
        wide = wide[["finetune", "scratch"]].dropna()
        wide = wide[(wide > 0).all(axis=1)]
        if len(wide):
            gm_ft = stats.geometric_mean(wide["finetune"])
            gm_sc = stats.geometric_mean(wide["scratch"])
            summary = {
                "n_pairs": len(wide),
                "finetune_steps_geomean": gm_ft,
                "scratch_steps_geomean": gm_sc,
                "speedup": gm_sc / gm_ft,
            }
            if len(wide) >= 2:
                ratio = stats.geometric_mean_ratio(wide["scratch"], wide["finetune"])
                summary["speedup_ci"] = (ratio.low, ratio.high)
    return steps, summary


def subset_summary(subsets: pd.DataFrame) -> pd.DataFrame:
    """Fig. 9's points: per dataset x protocol x subset size, the mean log odds over subsets
    (each subset first averaged over models) and its standard error over the subsets (the
    paper: "standard error over 3 subsets"; NaN with one subset).

    Columns: dataset, protocol, per_class, mean_logit, se_logit, n_subsets, n_models."""
    columns = ["dataset", "protocol", "per_class", "mean_logit", "se_logit", "n_subsets"]
    if subsets.empty:
        return pd.DataFrame(columns=[*columns, "n_models"])
    keys = ["dataset", "protocol", "per_class"]
    per_subset = subsets.groupby([*keys, "seed"], sort=True).agg(
        logit=("logit", "mean"), n_models=("model", "nunique")
    )
    grouped = per_subset.groupby(level=keys, sort=True)
    out = grouped.agg(
        mean_logit=("logit", "mean"),
        se_logit=("logit", lambda v: stats.standard_error(v.to_numpy())),
        n_subsets=("logit", "size"),
        n_models=("n_models", "max"),
    )
    return out.reset_index()


def subset_gap_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Fig. 9 in numbers (`subset_summary`): per dataset and subset size, each protocol's mean
    log odds and its standard error over subsets (`<protocol>_se`), the number of subsets, and
    the gaps between the protocols' means."""
    if summary.empty:
        return pd.DataFrame()
    index = ["dataset", "per_class"]
    wide = summary.pivot_table(index=index, columns="protocol", values="mean_logit")
    se = summary.pivot_table(index=index, columns="protocol", values="se_logit", dropna=False)
    wide = wide.join(se.add_suffix("_se"))
    wide["n_subsets"] = summary.groupby(index)["n_subsets"].min()
    for a, b in (("finetune", "scratch"), ("finetune", "logreg")):
        if {a, b} <= set(wide.columns):
            wide[f"{a}_minus_{b}"] = wide[a] - wide[b]
    return wide.reset_index()


VARIANT_COLUMNS = [
    "architecture",
    "settings",
    "model",
    "n_datasets",
    "mean_logit",
    "morey_se",
    "source_logit",
    "source_dataset",
]


def settings_variant_table(best: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Figs. 3 / 5: architectures evaluated with several training settings."""
    rows = []
    group = best[(best["protocol"] == protocol) & best["architecture"].notna()]
    for architecture, arch_rows in group.groupby("architecture"):
        if arch_rows["settings"].astype(str).nunique() < 2:
            continue
        matrix = tables.complete_matrix(tables.logit_matrix(arch_rows, protocol))
        if matrix.shape[0] < 2:
            continue
        se = _morey_or_zero(matrix)
        info = arch_rows.drop_duplicates("model").set_index("model")
        for model, mean, err in zip(matrix.index, matrix.mean(axis=1), se, strict=True):
            rows.append(
                {
                    "architecture": architecture,
                    "settings": str(info.loc[model, "settings"]),
                    "model": model,
                    "n_datasets": matrix.shape[1],
                    "mean_logit": mean,
                    "morey_se": err,
                    "source_logit": info.loc[model, "source_logit"],
                    "source_dataset": info.loc[model, "source_dataset"],
                }
            )
    table = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    # Rows in Fig. 3's order (most regularised first), not alphabetical.
    rank = {label: i for i, label in enumerate(settings_ladder.ordered(table["settings"]))}
    order = table["settings"].map(rank)
    return (
        table.assign(_rank=order)
        .sort_values(["architecture", "_rank"], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


EFFECT_COLUMNS = ["architecture", "protocol", "n_datasets", "fair_minus_default", "t_p"]


def settings_effect_tests(best: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Figs. 3 / 5 as a test: per architecture with both 'fair' and 'inception_default' models,
    the mean over datasets of fair minus Inception-default logit accuracy and the paired t-test
    across datasets (p is NaN with one dataset)."""
    rows = []
    group = best[(best["protocol"] == protocol) & best["architecture"].notna()]
    for architecture, arch_rows in group.groupby("architecture"):
        wide = arch_rows.pivot_table(index="dataset", columns="settings", values="logit")
        if not {"fair", "inception_default"} <= set(wide.columns):
            continue
        both = wide[["fair", "inception_default"]].dropna()
        if both.empty:
            continue
        p = np.nan
        if len(both) >= 2:
            p = stats.paired_t_test(both["fair"], both["inception_default"]).p_value
        rows.append(
            {
                "architecture": architecture,
                "protocol": protocol,
                "n_datasets": len(both),
                "fair_minus_default": float((both["fair"] - both["inception_default"]).mean()),
                "t_p": p,
            }
        )
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)
