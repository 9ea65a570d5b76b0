"""Beyond the paper (issue 19): do cheap transfer predictors rank models as their measured
transfer does, and better than the paper's own predictor, source (ImageNet) top-1?

For each ground-truth protocol (logistic regression, fine-tuning: the final test metric of
`tables.final_metrics`, in log odds) and each dataset, over the models that have both:
- weighted Kendall τ (`scipy.stats.weightedtau`: additive hyperbolic weights, the average of
  the two lexicographic rankings; the metric of the transferability literature, which weighs
  swaps among the best models most) between a predictor's score and the measured transfer;
- Pearson r between them, on logit accuracy (accuracy-valued predictors and the source top-1
  in log odds, parameter counts as log10, the other scores as they are);
- percentile bootstrap intervals over models (resampled with replacement), and the paired
  difference τ(predictor) − τ(source top-1) on the same resamples: a predictor "beats source
  accuracy" only where that interval lies above 0, "trails" it where it lies below 0.
Baselines beside the predictors: source top-1 (the model table's `source_top1`) and the
parameter count (the model table's optional `params` column, else the registry's published count
of the architecture).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402

from transfer_tf.analysis import figures, stats  # noqa: E402
from transfer_tf.analysis.tables import PROTOCOL_NAMES  # noqa: E402
from transfer_tf.metrics import METRICS  # noqa: E402
from transfer_tf.protocols.predictor_sweep import PREDICTORS  # noqa: E402

PROTOCOL = "predictors"
GROUND_TRUTH = ("logreg", "finetune")
SOURCE = "source_top1"
PARAMS = "parameters"
BASELINES = (SOURCE, PARAMS)
MIN_MODELS = 3
FRACTION_METRICS = tuple(m for m in METRICS if m != "quadratic_kappa")
SCORE_COLUMNS = [
    "model",
    "dataset",
    "predictor",
    "metric",
    "score",
    "score_se",
    "n_seeds",
    "x",
    "wall_time_s",
]
AGREEMENT_COLUMNS = [
    "protocol",
    "dataset",
    "predictor",
    "n_models",
    "weighted_tau",
    "tau_low",
    "tau_high",
    "pearson_r",
    "r_low",
    "r_high",
    "tau_minus_source",
    "diff_low",
    "diff_high",
    "beats_source",
]
BEATS, TRAILS, UNDECIDED = "yes", "no (source is better)", "inconclusive"


def split_results(results_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the paper's protocols, the predictors' cells) of one results DataFrame."""
    if "protocol" not in results_df.columns:
        return results_df, results_df.iloc[:0]
    mine = results_df["protocol"] == PROTOCOL
    return results_df[~mine].reset_index(drop=True), results_df[mine].reset_index(drop=True)


def predictor_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per model × dataset × predictor: the mean score over seeds, its SE over seeds
    (few-shot probes), and `x`, the value correlated (accuracies in log odds)."""
    if rows.empty or "hp.predictor" not in rows.columns:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    rows = rows.assign(
        predictor=rows["hp.predictor"].astype(str),
        test_metric=pd.to_numeric(rows["test_metric"], errors="coerce"),
        wall_time_s=pd.to_numeric(rows["wall_time_s"], errors="coerce"),
    )
    rows = rows[rows["test_metric"].notna()]
    grouped = rows.groupby(["model", "dataset", "predictor"], sort=True)
    out = grouped.agg(
        metric=("metric", "first"),
        score=("test_metric", "mean"),
        sd=("test_metric", "std"),
        n_seeds=("test_metric", "size"),
        wall_time_s=("wall_time_s", "sum"),
    ).reset_index()
    out["score_se"] = out["sd"] / np.sqrt(out["n_seeds"])
    # Scores in a metric that is a fraction (accuracies, mAP) go in log odds, as the measured
    # transfer; the others (LogME, ..., and Cohen's κ, which can be negative) stay as they are.
    score = out["score"].to_numpy(dtype=float)
    accuracy = out["metric"].isin(FRACTION_METRICS).to_numpy()
    out["x"] = score
    out.loc[accuracy, "x"] = stats.logit(out.loc[accuracy, "score"].to_numpy(dtype=float))
    return out[SCORE_COLUMNS]


def parameter_counts(model_table: pd.DataFrame) -> pd.Series:
    """Parameters per model: the model table's `params` column, else the registry's published
    count of its architecture (NaN for architectures outside the registry)."""
    table = model_table.set_index("model")
    if "params" in table.columns:
        return pd.to_numeric(table["params"], errors="coerce")
    # The registry imports Keras (about 7 s here): only when a report has predictor results.
    from transfer_tf.models import get_spec, list_models

    known = set(list_models())
    return pd.Series(
        [
            float(get_spec(a).published_params) if a in known else np.nan
            for a in table["architecture"].astype(str)
        ],
        index=table.index,
        dtype=float,
    )


def baseline_scores(model_table: pd.DataFrame, datasets) -> pd.DataFrame:
    """The baselines as predictor rows for every dataset: source top-1 (log odds) and the
    parameter count (log10)."""
    table = model_table.set_index("model")
    params = parameter_counts(model_table)
    rows = []
    for dataset in datasets:
        for model in table.index:
            top1 = table.loc[model, "source_top1"]
            rows.append(
                dict(
                    model=model,
                    dataset=dataset,
                    predictor=SOURCE,
                    metric="top1",
                    score=top1,
                    x=table.loc[model, "source_logit"],
                )
            )
            if np.isfinite(params.get(model, np.nan)) and params[model] > 0:
                rows.append(
                    dict(
                        model=model,
                        dataset=dataset,
                        predictor=PARAMS,
                        metric="params",
                        score=params[model],
                        x=np.log10(params[model]),
                    )
                )
    out = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    return out.assign(n_seeds=1, score_se=np.nan, wall_time_s=np.nan)


# ---------------------------------------------------------------------------------------------
# Weighted τ and r over bootstrap resamples.


def weighted_tau(x, y) -> float:
    """scipy.stats.weightedtau(x, y) with its defaults (NaN when x or y is constant)."""
    return float(scipy.stats.weightedtau(np.asarray(x, float), np.asarray(y, float)).statistic)


def _weighted_tau_ranked(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scipy's additive hyperbolic τ with the rank of the decreasing lexicographic order on
    (x, y), for each row of x, y [B, n] at once (its O(n log n) merge sort as O(n²) pairs)."""
    b, n = x.shape
    order = np.lexsort((y, x), axis=1)[:, ::-1]  # decreasing (x, then y)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), (b, n)), axis=1)
    w = 1.0 / (1.0 + rank)
    upper = np.triu(np.ones((n, n), bool), 1)
    pair = (w[:, :, None] + w[:, None, :])[:, upper]  # [B, pairs]
    sx = np.sign(x[:, :, None] - x[:, None, :])[:, upper]
    sy = np.sign(y[:, :, None] - y[:, None, :])[:, upper]
    total = pair.sum(axis=1)
    untied_x = total - (pair * (sx == 0)).sum(axis=1)
    untied_y = total - (pair * (sy == 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (pair * sx * sy).sum(axis=1) / np.sqrt(untied_x * untied_y)
    tau[(untied_x <= 0) | (untied_y <= 0)] = np.nan
    return np.clip(tau, -1.0, 1.0)


def weighted_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`weighted_tau` of each row of x, y [B, n] (vectorised for the bootstrap)."""
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    return (_weighted_tau_ranked(x, y) + _weighted_tau_ranked(y, x)) / 2


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x, y [B, n] (NaN where a row has no spread)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sxx, syy = (xc**2).sum(axis=1), (yc**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt(sxx * syy)
    r[(sxx <= 1e-24 * np.maximum(1.0, np.abs(x).max(axis=1) ** 2)) | (syy <= 0)] = np.nan
    return r


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < 10:
        return np.nan, np.nan
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def rank_agreement(
    x, y, source=None, *, num_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Weighted τ and Pearson r of predictor `x` with measured transfer `y` (one value per model),
    percentile bootstrap intervals over models, and with `source` (the source top-1 of the same
    models) the paired difference of τ and its interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    out = dict(
        n_models=n,
        weighted_tau=np.nan,
        tau_low=np.nan,
        tau_high=np.nan,
        pearson_r=np.nan,
        r_low=np.nan,
        r_high=np.nan,
        tau_minus_source=np.nan,
        diff_low=np.nan,
        diff_high=np.nan,
    )
    if n < MIN_MODELS:
        return out
    out["weighted_tau"] = weighted_tau(x, y)
    out["pearson_r"] = float(pearson_rows(x[None], y[None])[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(num_bootstrap, n))
    taus = weighted_tau_rows(x[idx], y[idx])
    out["tau_low"], out["tau_high"] = _interval(taus, confidence)
    out["r_low"], out["r_high"] = _interval(pearson_rows(x[idx], y[idx]), confidence)
    if source is not None:
        source = np.asarray(source, float)
        out["tau_minus_source"] = out["weighted_tau"] - weighted_tau(source, y)
        diff = taus - weighted_tau_rows(source[idx], y[idx])
        out["diff_low"], out["diff_high"] = _interval(diff, confidence)
    return out


def _verdict(row: dict) -> str:
    if not np.isfinite(row["diff_low"]):
        return ""
    if row["diff_low"] > 0:
        return BEATS
    return TRAILS if row["diff_high"] < 0 else UNDECIDED


def agreement_table(
    scores: pd.DataFrame,
    best: pd.DataFrame,
    model_table: pd.DataFrame,
    *,
    num_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per ground-truth protocol × dataset × predictor (baselines included)."""
    datasets = sorted(set(scores["dataset"]))
    every = pd.concat([scores, baseline_scores(model_table, datasets)], ignore_index=True)
    source = every[every["predictor"] == SOURCE].set_index(["dataset", "model"])["x"]
    names = [*BASELINES, *PREDICTORS, *sorted(set(scores["predictor"]) - set(PREDICTORS))]
    order = {p: i for i, p in enumerate(names)}  # baselines, then the protocol's order
    rows = []
    for protocol in GROUND_TRUTH:
        truth = best[best["protocol"] == protocol].set_index(["dataset", "model"])["logit"]
        for (dataset, predictor), group in every.groupby(["dataset", "predictor"], sort=False):
            values = group.set_index("model")["x"].dropna()
            measured = truth.xs(dataset, drop_level=True) if dataset in truth.index else truth[:0]
            models = sorted(set(values.index) & set(measured.index))
            with_source = [m for m in models if (dataset, m) in source.index]
            pair = predictor != SOURCE and len(with_source) == len(models)
            row = rank_agreement(
                values[models].to_numpy(),
                measured[models].to_numpy(),
                source[dataset][models].to_numpy() if pair else None,
                num_bootstrap=num_bootstrap,
                seed=seed,
                confidence=confidence,
            )
            row.update(protocol=protocol, dataset=dataset, predictor=predictor)
            row["beats_source"] = _verdict(row)
            rows.append(row)
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    if out.empty:
        return out
    out["_order"] = out["predictor"].map(order)
    return (
        out.sort_values(["protocol", "dataset", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def summary_table(agreement: pd.DataFrame) -> pd.DataFrame:
    """Per protocol × predictor over datasets: mean τ and r, and on how many datasets the
    predictor beats / trails source accuracy by its interval."""
    rows = agreement[agreement["weighted_tau"].notna()]
    if rows.empty:
        return pd.DataFrame(
            columns=[
                "protocol",
                "predictor",
                "datasets",
                "mean_weighted_tau",
                "mean_pearson_r",
                "beats_source",
                "trails_source",
            ]
        )
    out = rows.groupby(["protocol", "predictor"], sort=False).agg(
        datasets=("dataset", "size"),
        mean_weighted_tau=("weighted_tau", "mean"),
        mean_pearson_r=("pearson_r", "mean"),
        beats_source=("beats_source", lambda v: int((v == BEATS).sum())),
        trails_source=("beats_source", lambda v: int((v == TRAILS).sum())),
    )
    return out.reset_index()


def cost_table(scores: pd.DataFrame, results_df: pd.DataFrame) -> pd.DataFrame:
    """Wall time of each predictor over the model × dataset pairs where the logistic-regression
    sweep also ran, as a fraction of that sweep's wall time (its 45 grid fits and final fit)."""
    columns = ["predictor", "pairs", "wall_time_s", "logreg_wall_time_s", "fraction_of_logreg"]
    if scores.empty or "wall_time_s" not in results_df.columns:
        return pd.DataFrame(columns=columns)
    logreg = results_df[
        (results_df["protocol"] == "logreg")
        & pd.to_numeric(results_df.get("per_class"), errors="coerce").isna()
    ]
    logreg_time = logreg.groupby(["model", "dataset"])["wall_time_s"].sum()
    rows = []
    known = [*PREDICTORS, *sorted(set(scores["predictor"]) - set(PREDICTORS))]
    for predictor in [p for p in known if p in set(scores["predictor"])]:
        group = scores[scores["predictor"] == predictor]
        both = group.set_index(["model", "dataset"])["wall_time_s"]
        keys = both.index.intersection(logreg_time.index)
        if len(keys):
            rows.append((predictor, len(keys), both[keys].sum(), logreg_time[keys].sum()))
    out = pd.DataFrame(rows, columns=columns[:-1])
    if len(out):
        pairs = (
            scores.set_index(["model", "dataset"]).index.unique().intersection(logreg_time.index)
        )
        total = scores.set_index(["model", "dataset"]).loc[pairs, "wall_time_s"].sum()
        out.loc[len(out)] = ("all predictors", len(pairs), total, logreg_time[pairs].sum())
    out["fraction_of_logreg"] = out["wall_time_s"] / out["logreg_wall_time_s"]
    return out


# ---------------------------------------------------------------------------------------------
# The figure.


def agreement_figure(agreement: pd.DataFrame, source: str, path: str) -> str:
    """Predictors × datasets, one panel per ground-truth protocol: weighted τ as colour and text;
    ▲ where the interval of τ(predictor) − τ(source top-1) lies above 0."""
    rows = agreement[agreement["weighted_tau"].notna()]
    protocols = [p for p in GROUND_TRUTH if (rows["protocol"] == p).any()]
    if not protocols:
        raise figures.FigureSkipped(
            f"no dataset has {MIN_MODELS} models with both a predictor score and a measured "
            "logistic-regression or fine-tuning result"
        )
    predictors = list(dict.fromkeys(rows["predictor"]))
    datasets = sorted(set(rows["dataset"]))
    labels = {SOURCE: f"{source} top-1 (baseline)", PARAMS: "parameters (baseline)"}
    width = 1.0 + 0.8 * len(datasets)
    fig, axes = plt.subplots(
        1,
        len(protocols),
        figsize=(2.2 + width * len(protocols), 1.6 + 0.4 * len(predictors)),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, protocol in zip(axes[0], protocols, strict=True):
        table = rows[rows["protocol"] == protocol]
        tau = table.pivot_table(
            index="predictor", columns="dataset", values="weighted_tau", aggfunc="first"
        ).reindex(index=predictors, columns=datasets)
        beats = table.pivot_table(
            index="predictor", columns="dataset", values="beats_source", aggfunc="first"
        ).reindex(index=predictors, columns=datasets)
        image = ax.imshow(tau.to_numpy(dtype=float), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for i, predictor in enumerate(predictors):
            for j, dataset in enumerate(datasets):
                value = tau.loc[predictor, dataset]
                if np.isfinite(value):
                    mark = " ▲" if beats.loc[predictor, dataset] == BEATS else ""
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}{mark}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(value) > 0.6 else "black",
                    )
        ax.set_xticks(range(len(datasets)), datasets, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(predictors)), [labels.get(p, p) for p in predictors], fontsize=7)
        ax.set_title(f"ground truth: {PROTOCOL_NAMES[protocol]}", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), label="weighted Kendall τ", shrink=0.9)
    fig.suptitle(
        f"Predictors vs measured transfer; ▲: beats {source} top-1 (95% bootstrap "
        "interval of the τ difference above 0)",
        fontsize=9,
    )
    return figures._save(fig, path)


def section_text(source: str, num_bootstrap: int) -> str:
    """What the report's predictor table says, in words."""
    return (
        "Cheap transfer predictors (kNN, few-shot ridge probes, LogME, LEEP, NCE, H-score, GBC; "
        "transfer-predictors) scored against this study's own measured transfer. "
        "Per dataset and ground-truth protocol, over the models with both: weighted Kendall τ "
        "(scipy.stats.weightedtau) and Pearson r on logit accuracy, with percentile intervals "
        f"from {num_bootstrap} bootstrap resamples of models (predictor_agreement.csv). A "
        f"predictor beats {source} top-1 on a dataset only where the interval of the paired "
        f"τ difference lies above 0 (▲ in the figure). Below: means over datasets, and on how "
        f"many datasets each predictor beats or trails {source} top-1 by that rule; baselines "
        f"'{SOURCE}' ({source} top-1) and '{PARAMS}' (log10 parameter count)."
    )


def cost_text() -> str:
    return (
        "Wall time of each predictor's cells as a fraction of the logistic-regression sweep's "
        "cells (45 grid fits and the final fit) on the same model × dataset pairs, as recorded "
        "in the results. LEEP's time includes the source model's forward pass when it computed "
        "the logits (NCE reuses them)."
    )
