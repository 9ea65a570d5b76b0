"""The paper's figures (matplotlib, Agg), drawn from the tables of the analysis modules.

Accuracies are drawn on logit axes (Sec. 3): values are plotted as log odds and the ticks are
labelled in percent. Each function writes one PNG and returns its path, or raises
`FigureSkipped` with the reason when the results cannot support the figure.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transfer_tf import settings_ladder  # noqa: E402
from transfer_tf.analysis import stats  # noqa: E402
from transfer_tf.analysis.paper import PAPER  # noqa: E402
from transfer_tf.analysis.tables import PROTOCOL_NAMES  # noqa: E402

DPI = 100
_SHORT = {"logreg": "logreg", "finetune": "fine-tune", "scratch": "scratch"}
PROTOCOL_COLORS = {"logreg": "tab:blue", "finetune": "tab:orange", "scratch": "tab:green"}
_PERCENT_TICKS = (
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    20,
    30,
    40,
    50,
    60,
    70,
    75,
    80,
    85,
    90,
    92,
    94,
    95,
    96,
    97,
    98,
    99,
    99.5,
    99.8,
    99.9,
)


class FigureSkipped(Exception):
    """The results lack what a figure needs; the message says what is missing."""


def _percent_label(p: float) -> str:
    return f"{float(np.round(p, 6)):g}%"


def set_logit_ticks(ax, axis: str = "y", max_ticks: int = 7) -> None:
    """Ticks at round percentages on an axis whose data are log odds."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    values = [p for p in _PERCENT_TICKS if lo <= stats.logit(p / 100.0) <= hi]
    if len(values) > max_ticks:
        keep = np.unique(np.round(np.linspace(0, len(values) - 1, max_ticks)).astype(int))
        values = [values[i] for i in keep]
    if len(values) < 3:  # A narrow range: round steps in percent (e.g. 92.5%, 93%, 93.5%).
        p_lo, p_hi = 100.0 * stats.inverse_logit([lo, hi])
        locator = matplotlib.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
        values = [p for p in locator.tick_values(p_lo, p_hi) if p_lo <= p <= p_hi and 0 < p < 100]
    ticks = [float(stats.logit(p / 100.0)) for p in values]
    labels = [_percent_label(p) for p in values]
    if axis == "y":
        ax.set_yticks(ticks, labels)
        ax.set_ylim(lo, hi)
    else:
        ax.set_xticks(ticks, labels)
        ax.set_xlim(lo, hi)


def _pad_limits(ax, values, axis: str, pad: float = 0.08) -> None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 0.2)
    limits = (lo - pad * span, hi + pad * span)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*limits)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int, ncols: int = 4, size: float = 3.2):
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _settings_colors(labels) -> dict:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(sorted(set(map(str, labels))))}


def source_name(frame: pd.DataFrame) -> str:
    """What the x-axis accuracy was measured on: ImageNet, unless the model table's optional
    `source_dataset` column names another source (models pretrained in a mini-study)."""
    names = set()
    if "source_dataset" in frame:
        names = {str(s) for s in frame["source_dataset"].dropna()}
    if names <= {"imagenet2012"}:
        return "ImageNet"
    return "source (" + ", ".join(sorted(names)) + ")"


def _draw_correlation_panel(ax, summary: pd.DataFrame, fit: dict, title: str) -> None:
    colors = _settings_colors(summary["settings"])
    for settings, rows in summary.groupby(summary["settings"].astype(str)):
        ax.errorbar(
            rows["source_logit"],
            rows["mean_logit"],
            yerr=rows["morey_se"],
            fmt="o",
            color=colors[settings],
            ecolor="0.6",
            capsize=2,
            label=f"settings: {settings}",
        )
    middle = np.nanmean([summary["source_logit"].min(), summary["source_logit"].max()])
    for row in summary.itertuples():
        right_half = row.source_logit > middle  # labelled on the left: stays inside the panel
        ax.annotate(
            row.model,
            (row.source_logit, row.mean_logit),
            fontsize=6,
            xytext=(-3 if right_half else 3, 3),
            textcoords="offset points",
            ha="right" if right_half else "left",
        )
    grid = fit["grid"]
    ax.fill_between(
        grid,
        fit["band_low"],
        fit["band_high"],
        color="tab:blue",
        alpha=0.2,
        label="95% bootstrap CI",
    )
    ax.plot(grid, fit["intercept"] + fit["slope"] * grid, color="tab:blue", label="regression line")
    _pad_limits(ax, np.r_[summary["source_logit"], grid], "x")
    _pad_limits(
        ax,
        np.r_[
            summary["mean_logit"] + summary["morey_se"],
            summary["mean_logit"] - summary["morey_se"],
            fit["band_low"],
            fit["band_high"],
        ],
        "y",
    )
    set_logit_ticks(ax, "x")
    set_logit_ticks(ax, "y")
    ax.set_xlabel(f"{source_name(summary)} top-1 accuracy (logit axis)")
    ax.set_ylabel("transfer accuracy, mean log odds over datasets")
    ax.set_title(
        f"{title}\nr = {fit['r']:.2f} (95% CI {fit['r_ci'][0]:.2f} to {fit['r_ci'][1]:.2f}), "
        f"p = {fit['p']:.2g}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")


def transfer_vs_source(summary: pd.DataFrame, fit: dict, protocol: str, path: str) -> str:
    """Fig. 2 (one protocol): mean logit transfer accuracy vs source top-1, regression line with
    its bootstrap band; right, each model's mean log odds with Morey SE, green where a paired
    t-test across datasets does not separate it from the best model (p > 0.05).

    summary: one row per model with model, settings, source_logit, mean_logit, morey_se,
    p_vs_best. fit: r, r_ci, p, slope, intercept, grid, band_low, band_high.
    """
    if len(summary) < 3:
        raise FigureSkipped(f"{protocol}: fewer than 3 models with a source accuracy and results")
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 5), width_ratios=(1.3, 1), layout="constrained"
    )
    _draw_correlation_panel(left, summary, fit, PROTOCOL_NAMES[protocol].capitalize())
    ordered = summary.sort_values("mean_logit")
    level = PAPER["not_worse_than_best_level"].value
    not_worse = ordered["p_vs_best"].fillna(1.0) > level
    y = np.arange(len(ordered))
    for mask, color, label in (
        (not_worse, "tab:green", f"not different from best (p > {level})"),
        (~not_worse, "0.4", f"worse than best (p <= {level})"),
    ):
        if mask.any():
            right.errorbar(
                ordered["mean_logit"][mask],
                y[mask.to_numpy()],
                xerr=ordered["morey_se"][mask],
                fmt="o",
                color=color,
                capsize=3,
                label=label,
            )
    right.set_yticks(y, ordered["model"], fontsize=7)
    _pad_limits(
        right,
        np.r_[
            ordered["mean_logit"] + ordered["morey_se"], ordered["mean_logit"] - ordered["morey_se"]
        ],
        "x",
    )
    set_logit_ticks(right, "x", max_ticks=5)
    right.set_xlabel("mean log odds over datasets (± Morey SE)")
    right.set_title("Average transfer accuracy per model", fontsize=9)
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Transfer vs {source_name(summary)} accuracy: {PROTOCOL_NAMES[protocol]}")
    return _save(fig, path)


def correlation_overview(summaries: dict, fits: dict, path: str) -> str:
    """Fig. 1: the left panels of Fig. 2 for logistic regression and fine-tuning side by side."""
    protocols = [p for p in ("logreg", "finetune") if p in summaries and len(summaries[p]) >= 3]
    if not protocols:
        raise FigureSkipped("neither logistic regression nor fine-tuning has 3 models to correlate")
    fig, axes = plt.subplots(
        1, len(protocols), figsize=(6 * len(protocols), 5), squeeze=False, layout="constrained"
    )
    for ax, protocol in zip(axes[0], protocols, strict=True):
        _draw_correlation_panel(
            ax, summaries[protocol], fits[protocol], PROTOCOL_NAMES[protocol].capitalize()
        )
    source = source_name(pd.concat([summaries[p] for p in protocols]))
    fig.suptitle(f"Do better {source} models transfer better? (Fig. 1)")
    return _save(fig, path)


def transfer_vs_source_per_dataset(best: pd.DataFrame, protocol: str, path: str) -> str:
    """Fig. 2 per-dataset panels: logit accuracy vs logit source top-1 for each dataset."""
    rows = best[(best["protocol"] == protocol) & best["source_logit"].notna()]
    datasets = [d for d, g in rows.groupby("dataset") if len(g) >= 2]
    if not datasets:
        raise FigureSkipped(f"{protocol}: no dataset has 2 models with a source accuracy")
    fig, axes = _grid(len(datasets))
    colors = _settings_colors(rows["settings"])
    for ax, dataset in zip(axes, datasets, strict=True):
        group = rows[rows["dataset"] == dataset]
        for settings, g in group.groupby(group["settings"].astype(str)):
            ax.scatter(g["source_logit"], g["logit"], color=colors[settings], s=18, label=settings)
        title = dataset
        if len(group) >= 3 and np.ptp(group["source_logit"]) > 0 and np.ptp(group["logit"]) > 0:
            corr = stats.correlate(group["source_logit"], group["logit"])
            x = np.linspace(group["source_logit"].min(), group["source_logit"].max(), 20)
            ax.plot(x, corr.intercept + corr.slope * x, color="tab:blue", lw=1)
            title += f"\nr = {corr.pearson_r:.2f}, p = {corr.pearson_p:.2g}"
        ax.set_title(title, fontsize=8)
        _pad_limits(ax, group["source_logit"], "x")
        _pad_limits(ax, group["logit"], "y")
        set_logit_ticks(ax, "x", max_ticks=4)
        set_logit_ticks(ax, "y", max_ticks=5)
        ax.tick_params(labelsize=6)
        ax.set_xlabel(f"{source_name(group)} top-1", fontsize=7)
        ax.set_ylabel(f"{group['metric'].iloc[0]} (test)", fontsize=7)
    axes[0].legend(fontsize=6, title="settings", title_fontsize=6)
    fig.suptitle(
        f"Per-dataset transfer vs {source_name(rows)} accuracy: {PROTOCOL_NAMES[protocol]}"
    )
    fig.tight_layout()
    return _save(fig, path)


def settings_variants(variants: pd.DataFrame, protocol: str, figure_number: int, path: str) -> str:
    """Fig. 3 (logistic regression) / Fig. 5 (fine-tuning): mean transfer log odds of one
    architecture pretrained with different training settings, and their source top-1.

    variants: architecture, settings, model, mean_logit, morey_se, source_logit (NaN allowed).
    """
    if variants.empty:
        raise FigureSkipped(
            f"{protocol}: no architecture was evaluated with more than one training setting"
        )
    width = max(11, 2.4 * len(variants["settings"].unique()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(width, 5), width_ratios=(1.4, 1))
    fig.subplots_adjust(wspace=0.35)
    # The paper's order (most regularised first), not alphabetical; each tick is the label and
    # the paper's "+" / "−" rows.
    labels = settings_ladder.ordered(variants["settings"].astype(str))
    x_of = {label: i for i, label in enumerate(labels)}
    ticks = [
        f"{label}\n{settings_ladder.BY_LABEL[label].tick()}"
        if label in settings_ladder.BY_LABEL
        else label
        for label in labels
    ]
    for architecture, rows in variants.groupby("architecture"):
        x = rows["settings"].astype(str).map(x_of)
        left.errorbar(
            x,
            rows["mean_logit"],
            yerr=rows["morey_se"],
            fmt="o-",
            capsize=3,
            label=str(architecture),
        )
        if rows["source_logit"].notna().any():
            right.plot(x, rows["source_logit"], "s--", label=str(architecture))
    for ax, values, ylabel in (
        (
            left,
            np.r_[
                variants["mean_logit"] + variants["morey_se"],
                variants["mean_logit"] - variants["morey_se"],
            ],
            "transfer accuracy, mean log odds (± Morey SE)",
        ),
        (right, variants["source_logit"], f"{source_name(variants)} top-1 accuracy"),
    ):
        ax.set_xticks(range(len(labels)), ticks, fontsize=5 if len(labels) > 4 else 7)
        ax.set_xlabel("pretraining settings")
        ax.set_ylabel(ylabel)
        if np.isfinite(np.asarray(values, dtype=float)).any():
            _pad_limits(ax, values, "y")
            set_logit_ticks(ax, "y")
        ax.legend(fontsize=7)
    left.set_title(f"Transfer ({PROTOCOL_NAMES[protocol]})", fontsize=9)
    right.set_title(f"{source_name(variants)} top-1 of the same models", fontsize=9)
    fig.suptitle(f"Training settings and transfer (Fig. {figure_number})")
    return _save(fig, path)


def protocol_comparison(bars: pd.DataFrame, points: pd.DataFrame, path: str) -> str:
    """Fig. 6: per dataset, mean log odds over models for each protocol with Morey SE (protocols
    as conditions, models as subjects); dots are individual models.

    bars: dataset, protocol, mean_logit, morey_se. points: dataset, protocol, model, logit.
    """
    if bars.empty or bars["protocol"].nunique() < 2:
        raise FigureSkipped("fewer than 2 protocols share models on any dataset")
    datasets = sorted(bars["dataset"].unique())
    protocols = [p for p in PROTOCOL_NAMES if p in set(bars["protocol"])]
    width = 0.8 / len(protocols)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) + 2), 4.8))
    # Bars start at the lowest value drawn, so that log odds below 0 (accuracy < 50%) show too.
    floor = float(np.nanmin(np.r_[bars["mean_logit"] - bars["morey_se"], points["logit"]])) - 0.3
    for j, protocol in enumerate(protocols):
        rows = bars[bars["protocol"] == protocol].set_index("dataset").reindex(datasets)
        x = np.arange(len(datasets)) + (j - (len(protocols) - 1) / 2) * width
        ax.bar(
            x,
            rows["mean_logit"] - floor,
            width * 0.9,
            bottom=floor,
            color=PROTOCOL_COLORS[protocol],
            alpha=0.7,
            yerr=rows["morey_se"],
            capsize=3,
            label=PROTOCOL_NAMES[protocol],
        )
        for i, dataset in enumerate(datasets):
            dots = points[(points["protocol"] == protocol) & (points["dataset"] == dataset)]
            ax.scatter(np.full(len(dots), x[i]), dots["logit"], s=8, color="k", zorder=3)
    ax.set_xticks(range(len(datasets)), datasets, rotation=20)
    ax.set_ylim(
        floor, float(np.nanmax(np.r_[bars["mean_logit"] + bars["morey_se"], points["logit"]])) + 0.3
    )
    set_logit_ticks(ax, "y")
    ax.set_xlabel("dataset")
    ax.set_ylabel("test accuracy, mean log odds over models (± Morey SE)")
    ax.set_title("Logistic regression vs fine-tuning vs training from scratch (Fig. 6)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scratch_vs_finetune(pairs: pd.DataFrame, path: str) -> str:
    """Fig. 7: each point a model x dataset; x fine-tuned, y trained from random init."""
    if pairs.empty:
        raise FigureSkipped("no model x dataset pair has both fine-tuning and scratch results")
    fig, ax = plt.subplots(figsize=(6, 6))
    markers = "os^Dv<>pPX*h"
    models = sorted(pairs["model"].unique())
    cmap = plt.get_cmap("tab10")
    for i, (dataset, rows) in enumerate(pairs.groupby("dataset")):
        for row in rows.itertuples():
            ax.scatter(
                row.finetune_logit,
                row.scratch_logit,
                color=cmap(i % 10),
                marker=markers[models.index(row.model) % len(markers)],
                s=30,
            )
        ax.scatter([], [], color=cmap(i % 10), marker="o", label=dataset)
    for j, model in enumerate(models):
        ax.scatter([], [], color="0.3", marker=markers[j % len(markers)], label=model)
    values = np.r_[pairs["finetune_logit"], pairs["scratch_logit"]]
    _pad_limits(ax, values, "x")
    _pad_limits(ax, values, "y")
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="equal accuracy")
    set_logit_ticks(ax, "x")
    set_logit_ticks(ax, "y")
    ax.set_xlabel("fine-tuned from pretrained weights (test accuracy)")
    ax.set_ylabel("trained from random initialization (test accuracy)")
    ax.set_title("Fine-tuning vs training from scratch (Fig. 7)")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def convergence(histories: pd.DataFrame, steps_to_90: pd.DataFrame, path: str) -> str:
    """Fig. 8: metric vs training steps, fine-tuning vs scratch, with the step at which each run
    reaches 90% of its maximum odds marked.

    histories: protocol, model, dataset, eval_split, step, eval_metric. steps_to_90: protocol,
    model, dataset, steps_to_90.
    """
    if histories.empty or histories["protocol"].nunique() < 2:
        raise FigureSkipped("no training histories for both fine-tuning and scratch")
    paired = histories.groupby(["model", "dataset"])["protocol"].nunique()
    paired = paired[paired == 2].reset_index()
    if paired.empty:
        raise FigureSkipped("no model x dataset has histories for both fine-tuning and scratch")
    datasets = sorted(paired["dataset"].unique())
    splits = sorted(set(histories["eval_split"].dropna()))
    ylabel = {("val",): "validation metric", ("test",): "test metric"}.get(
        tuple(splits), "metric (" + " or ".join(splits) + " split)"
    )
    fig, axes = _grid(len(datasets), ncols=3, size=3.8)
    styles = ("-", "--", ":", "-.")
    for ax, dataset in zip(axes, datasets, strict=True):
        models = sorted(paired[paired["dataset"] == dataset]["model"])[:3]
        values = []
        for k, model in enumerate(models):
            for protocol in ("finetune", "scratch"):
                run = histories[
                    (histories["protocol"] == protocol)
                    & (histories["model"] == model)
                    & (histories["dataset"] == dataset)
                ].sort_values("step")
                y = stats.logit(run["eval_metric"].to_numpy())
                values.extend(y)
                ax.plot(
                    run["step"],
                    y,
                    styles[k % len(styles)],
                    marker=".",
                    color=PROTOCOL_COLORS[protocol],
                    label=f"{_SHORT[protocol]}, {model}",
                )
                mark = steps_to_90[
                    (steps_to_90["protocol"] == protocol)
                    & (steps_to_90["model"] == model)
                    & (steps_to_90["dataset"] == dataset)
                ]
                if len(mark):
                    ax.axvline(
                        mark["steps_to_90"].iloc[0],
                        color=PROTOCOL_COLORS[protocol],
                        ls=styles[k % len(styles)],
                        lw=0.8,
                        alpha=0.6,
                    )
        if histories["step"].min() > 0:
            ax.set_xscale("log")
        _pad_limits(ax, values, "y")
        set_logit_ticks(ax, "y", max_ticks=5)
        ax.set_title(
            f"{dataset}\n(vertical lines: {PAPER['convergence_fraction'].quote})", fontsize=8
        )
        ax.set_xlabel("training steps", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        _epoch_axis(ax, histories[histories["dataset"] == dataset])
        ax.legend(fontsize=5)
    fig.suptitle("Pretraining speeds up convergence (Fig. 8)")
    fig.tight_layout()
    return _save(fig, path)


def _epoch_axis(ax, histories: pd.DataFrame) -> None:
    """A secondary x-axis in epochs, where the runs of this panel share one epochs-per-step."""
    if "epoch" not in histories.columns:
        return
    ratio = (histories["epoch"] / histories["step"].where(histories["step"] > 0)).dropna()
    if ratio.empty or not np.allclose(ratio, ratio.iloc[0], rtol=1e-6):
        return
    per_step = float(ratio.iloc[0])
    top = ax.secondary_xaxis("top", functions=(lambda s: s * per_step, lambda e: e / per_step))
    top.set_xlabel("epochs", fontsize=7)
    top.tick_params(labelsize=6)


def subset_size(summary: pd.DataFrame, path: str) -> str:
    """Fig. 9: test accuracy vs training examples per class, one line per protocol, one panel
    per dataset; each point the mean log odds over the random subsets of that size (each
    averaged over models) with ± its standard error over the subsets (`subset_summary`)."""
    if summary.empty:
        raise FigureSkipped("no final cells with per_class (training-subset) results")
    datasets = sorted(summary["dataset"].unique())
    fig, axes = _grid(len(datasets), ncols=3, size=3.8)
    for ax, dataset in zip(axes, datasets, strict=True):
        rows = summary[summary["dataset"] == dataset]
        for protocol in PROTOCOL_NAMES:
            curve = rows[rows["protocol"] == protocol].sort_values("per_class")
            if len(curve):
                ax.errorbar(
                    curve["per_class"],
                    curve["mean_logit"],
                    yerr=curve["se_logit"].fillna(0.0),
                    fmt="o-",
                    capsize=3,
                    color=PROTOCOL_COLORS[protocol],
                    label=PROTOCOL_NAMES[protocol],
                )
        ax.set_xscale("log", base=2)
        per_class = sorted(rows["per_class"].unique())
        ax.set_xticks(per_class, [f"{v:g}" for v in per_class])
        ax.minorticks_off()
        se = rows["se_logit"].fillna(0.0)
        _pad_limits(ax, np.r_[rows["mean_logit"] + se, rows["mean_logit"] - se], "y")
        set_logit_ticks(ax, "y", max_ticks=5)
        n = int(rows["n_subsets"].min())
        ax.set_title(f"{dataset} ({n} subset{'s' if n > 1 else ''} per size)", fontsize=9)
        ax.set_xlabel("training examples per class")
        ax.set_ylabel("test accuracy (mean ± SE over subsets)" if n > 1 else "test accuracy")
        ax.legend(fontsize=6)
    fig.suptitle("Benefit of pretraining vs training-set size (Fig. 9)")
    fig.tight_layout()
    return _save(fig, path)


def tsne_embeddings(embeddings: list[dict], path: str) -> str:
    """Fig. 4: t-SNE of penultimate features for 10 classes, one panel per feature set.

    embeddings: dicts with name, points [N, 2], labels [N], silhouette.
    """
    if not embeddings:
        raise FigureSkipped("no features .npz files with 'features' and single-label 'labels'")
    fig, axes = _grid(len(embeddings), ncols=3, size=4.0)
    cmap = plt.get_cmap("tab10")
    for ax, emb in zip(axes, embeddings, strict=True):
        for i, label in enumerate(np.unique(emb["labels"])):
            mask = emb["labels"] == label
            ax.scatter(
                emb["points"][mask, 0],
                emb["points"][mask, 1],
                s=8,
                color=cmap(i % 10),
                label=f"class {label}",
            )
        ax.set_title(f"{emb['name']}\nour silhouette = {emb['silhouette']:.3f}", fontsize=8)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=6, markerscale=1.5)
    classes = PAPER["tsne_classes"].value
    fig.suptitle(f"t-SNE of penultimate-layer features, up to {classes} test classes (as Fig. 4)")
    fig.tight_layout()
    return _save(fig, path)


def class_separation(samples: list[dict], path: str) -> str:
    """Class separation of each feature set: our silhouette score in feature space (higher =
    better separated classes), a number beside Fig. 4's picture (the paper gives none)."""
    if not samples:
        raise FigureSkipped("no features for the class-separation figure")
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(samples)))
    names = [e["name"] for e in samples]
    values = [e["silhouette"] for e in samples]
    ax.barh(range(len(names)), values, color="tab:purple")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_ylabel("feature set (model / dataset)")
    ax.set_xlabel(f"silhouette score (cosine, up to {PAPER['tsne_classes'].value} classes)")
    ax.set_title("Class separation of penultimate features (ours; Fig. 4 is a picture)")
    fig.tight_layout()
    return _save(fig, path)
