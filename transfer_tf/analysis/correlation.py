"""Correlation of transfer accuracy with source (ImageNet) accuracy (Figs. 1, 2; Sec. 3).

Pure computations on the final-metrics table (`tables.final_metrics`): which models are
correlated together, each model's mean logit over a complete set of datasets with its Morey SE,
and r with its bootstrap CI.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from transfer_tf.analysis import stats, tables
from transfer_tf.analysis.tables import PROTOCOL_NAMES


def primary_settings(best: pd.DataFrame) -> str | None:
    """The training-settings group the headline correlations use.

    The paper's r = 0.99 / 0.96 are for models all trained with the same (fair) settings;
    mixing settings mixes in the effect of Fig. 3. The largest group with at least 3 models
    (ties: "fair" first) is used; None (all models) when no group has 3.
    """
    rows = best[best["source_logit"].notna()].drop_duplicates("model")
    counts = rows["settings"].astype(str).value_counts()
    counts = counts[counts >= 3]
    if counts.empty:
        return None
    top = counts[counts == counts.max()].index
    return "fair" if "fair" in top else sorted(top)[0]


def correlation_groups(best: pd.DataFrame, primary: str | None) -> list[str | None]:
    """Settings groups to correlate: the primary one first, then every other with 3+ models,
    then None (all models) — but only when all models were pretrained on the same source data.

    A model table may mix sources (published ImageNet checkpoints beside models pretrained in a
    mini-study on another dataset, told apart by its optional `source_dataset` column); their
    source top-1 values are on different tasks and must not share one regression.
    """
    rows = best[best["source_logit"].notna()].drop_duplicates("model")
    counts = rows["settings"].astype(str).value_counts()
    groups: list[str | None] = sorted(g for g in counts[counts >= 3].index if g != primary)
    if primary is not None:
        groups.insert(0, primary)
    if len(rows["source_dataset"].dropna().unique()) <= 1:
        groups.append(None)
    return groups


def correlation_summary(
    best: pd.DataFrame, protocol: str, settings: str | None, datasets=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-model mean logit over a complete set of datasets, Morey SE, and t-test vs the best.

    `datasets` restricts the datasets averaged over (e.g. the small ones of Sec. 4.3).
    """
    rows = best[best["source_logit"].notna()]
    if settings is not None:
        rows = rows[rows["settings"].astype(str) == settings]
    if datasets is not None:
        rows = rows[rows["dataset"].isin(list(datasets))]
    matrix = tables.complete_matrix(tables.logit_matrix(rows, protocol))
    if matrix.empty:
        return pd.DataFrame(), matrix
    info = rows.drop_duplicates("model").set_index("model")
    summary = pd.DataFrame(
        {
            "model": matrix.index,
            "settings": info.loc[matrix.index, "settings"].astype(str).to_numpy(),
            "source_top1": info.loc[matrix.index, "source_top1"].to_numpy(),
            "source_logit": info.loc[matrix.index, "source_logit"].to_numpy(),
            "source_dataset": info.loc[matrix.index, "source_dataset"].to_numpy(),
            "mean_logit": matrix.mean(axis=1).to_numpy(),
        }
    )
    if matrix.shape[0] >= 2 and matrix.shape[1] >= 2:
        summary["morey_se"] = stats.morey_standard_error(matrix.to_numpy())
        best_model = matrix.mean(axis=1).idxmax()
        summary["p_vs_best"] = [
            1.0
            if m == best_model
            else stats.paired_t_test(matrix.loc[m], matrix.loc[best_model]).p_value
            for m in matrix.index
        ]
    else:  # One dataset: no spread across datasets to measure.
        summary["morey_se"] = 0.0
        summary["p_vs_best"] = np.nan
    return summary, matrix


def fit_correlation(summary: pd.DataFrame, num_bootstrap: int, seed: int) -> dict:
    """r, Spearman rho, the regression line and their CIs over the models of `summary`.

    The line's band and the slope's CI are bootstrap intervals over models (Fig. 2). r's CI is
    the bootstrap interval widened to Fisher's z interval where that is wider: with few models
    the bootstrap degenerates (of three, every resample with two distinct models has r = ±1, so
    three nearly collinear points gave [0.997, 1]), and Fisher's is (−1, 1) for three.
    """
    corr = stats.correlate(summary["source_logit"], summary["mean_logit"])
    boot = stats.bootstrap_regression(
        summary["source_logit"], summary["mean_logit"], num_samples=num_bootstrap, seed=seed
    )
    fisher = stats.fisher_r_ci(corr.pearson_r, corr.n)
    return {
        "r": corr.pearson_r,
        "p": corr.pearson_p,
        "r_ci": (min(boot.r_ci[0], fisher[0]), max(boot.r_ci[1], fisher[1])),
        "spearman_rho": corr.spearman_rho,
        "spearman_p": corr.spearman_p,
        "slope": corr.slope,
        "slope_ci": boot.slope_ci,
        "intercept": corr.intercept,
        "n_models": corr.n,
        "grid": boot.grid,
        "band_low": boot.band_low,
        "band_high": boot.band_high,
    }


def correlate_or_reason(
    summary: pd.DataFrame, num_bootstrap: int, seed: int
) -> tuple[dict | None, str | None]:
    """`fit_correlation`, or None and why r cannot be computed."""
    if len(summary) < 3:
        return (
            None,
            f"{len(summary)} model(s) with a source accuracy and a complete set of datasets; "
            "r needs 3",
        )
    if np.ptp(summary["source_logit"]) == 0 or np.ptp(summary["mean_logit"]) == 0:
        return None, "all models have the same source or transfer accuracy"
    return fit_correlation(summary, num_bootstrap, seed), None


def size_split(datasets, train_sizes: dict, threshold: int) -> dict[str, list[str]]:
    """Datasets by training-set size: "small" (< threshold), "large", "unknown" (no size)."""
    split = {"small": [], "large": [], "unknown": []}
    for dataset in datasets:
        size = train_sizes.get(dataset)
        part = "unknown" if size is None else ("small" if size < threshold else "large")
        split[part].append(dataset)
    return split


def correlate_by_size(
    best: pd.DataFrame,
    protocol: str,
    settings: str | None,
    train_sizes: dict,
    threshold: int,
    num_bootstrap: int,
    seed: int,
) -> dict:
    """r over the small and over the large datasets separately (Sec. 4.3 does this for scratch).

    Returns {"small": {"fit", "reason", "datasets"}, "large": {...}, "unknown": [datasets]}.
    """
    datasets = sorted(best.loc[best["protocol"] == protocol, "dataset"].unique())
    split = size_split(datasets, train_sizes, threshold)
    out = {"unknown": split["unknown"]}
    for part in ("small", "large"):
        summary, matrix = correlation_summary(best, protocol, settings, datasets=split[part])
        fit, reason = correlate_or_reason(summary, num_bootstrap, seed)
        if not split[part]:
            reason = f"no {part} dataset"
        out[part] = {"fit": fit, "reason": reason, "datasets": list(matrix.columns)}
    return out


@dataclasses.dataclass
class Correlations:
    """Every correlation of one study.

    `fits` / `summaries` / `reasons` are per protocol for the headline group (`primary`);
    `by_group` holds every group's fit under "<protocol>/<group or 'all'>" (and
    "<protocol>/<group>/<small or large>" for the split by training-set size); `by_size` is
    `correlate_by_size` of scratch in the headline group.
    """

    primary: str | None
    fits: dict = dataclasses.field(default_factory=dict)
    summaries: dict = dataclasses.field(default_factory=dict)
    reasons: dict = dataclasses.field(default_factory=dict)
    by_group: dict = dataclasses.field(default_factory=dict)
    by_size: dict = dataclasses.field(default_factory=dict)


def _add_size_split(out: Correlations, best, train_sizes, threshold, num_bootstrap, seed):
    """The scratch correlation on small and on large datasets (Sec. 4.3), headline group."""
    if "scratch" not in out.fits:
        return
    out.by_size = correlate_by_size(
        best, "scratch", out.primary, train_sizes, threshold, num_bootstrap, seed
    )
    for part in ("small", "large"):
        fit = out.by_size[part]["fit"]
        if fit is not None:
            out.by_group[f"scratch/{out.primary or 'all'}/{part}"] = {
                **fit,
                "protocol": "scratch",
                "group": out.primary or "all",
                "datasets": part,
                "n_datasets": len(out.by_size[part]["datasets"]),
            }


def correlate_protocols(
    best: pd.DataFrame, num_bootstrap: int, seed: int, train_sizes=None, size_threshold=None
) -> Correlations:
    """r per protocol and settings group (the headline group first); with `train_sizes`
    (dataset → training-set size) also scratch's r split at `size_threshold`."""
    out = Correlations(primary=primary_settings(best))
    for protocol in PROTOCOL_NAMES:
        if not (best["protocol"] == protocol).any():
            out.reasons[protocol] = f"no {protocol} results"
            continue
        groups = correlation_groups(best, out.primary)
        if out.primary not in groups:
            out.reasons[protocol] = (
                "the models were pretrained on different source datasets and no "
                "training-settings group has 3 models to correlate"
            )
        for group in groups:
            summary, matrix = correlation_summary(best, protocol, group)
            fit, reason = correlate_or_reason(summary, num_bootstrap, seed)
            if group == out.primary:
                out.summaries[protocol], out.fits[protocol] = summary, fit
                out.reasons[protocol] = reason
            if fit is not None:
                out.by_group[f"{protocol}/{group or 'all'}"] = {
                    **fit,
                    "protocol": protocol,
                    "group": group or "all",
                    "datasets": "all",
                    "n_datasets": matrix.shape[1],
                }
    if train_sizes is not None:
        _add_size_split(out, best, train_sizes, size_threshold, num_bootstrap, seed)
    return out


def correlation_rows(by_group: dict) -> pd.DataFrame:
    """`Correlations.by_group` as the correlations table (one row per protocol and group)."""
    rows = []
    for key, fit in by_group.items():
        rows.append(
            {
                "protocol": fit["protocol"],
                "models": fit["group"],
                "datasets": fit["datasets"],
                "n_models": fit["n_models"],
                "n_datasets": fit["n_datasets"],
                "r": fit["r"],
                "r_ci_low": fit["r_ci"][0],
                "r_ci_high": fit["r_ci"][1],
                "p": fit["p"],
                "spearman_rho": fit["spearman_rho"],
                "spearman_p": fit["spearman_p"],
                "slope": fit["slope"],
                "slope_ci_low": fit["slope_ci"][0],
                "slope_ci_high": fit["slope_ci"][1],
                "intercept": fit["intercept"],
                "key": key,
            }
        )
    return pd.DataFrame(rows)
