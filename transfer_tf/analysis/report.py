"""One report for a study: CSV tables, the paper's figures, report.html / report.md, and in plain
words which of the paper's findings hold on these results.

`write_report(results_df, model_table_df, output_dir)` is the library entry point (the
mini-study calls it; `transfer-analyze` wraps it). Everything is computed from the results; a
figure or test the results cannot support is skipped and the report says why.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os

import numpy as np
import pandas as pd

from transfer_tf.analysis import figures, stats, tables
from transfer_tf.analysis.tables import PROTOCOL_NAMES

# The paper's numbers (Sec. 4) that the findings compare against.
PAPER = {
    "r_logreg": 0.99,
    "r_finetune": 0.96,
    "r_scratch": 0.55,
    "finetune_beats_logreg": (179, 192),
    "finetune_beats_scratch": (189, 192),
    "convergence_speedup": 17.0,
}
SIGNIFICANCE = 0.05
# Fig. 4 uses 10 classes; a few dozen examples each keep t-SNE to seconds on a CPU.
TSNE_CLASSES = 10
TSNE_MAX_PER_CLASS = 30
FEATURE_SPLIT_PREFERENCE = ("test", "val", "train")


@dataclasses.dataclass
class _Report:
    output_dir: str
    tables: dict = dataclasses.field(default_factory=dict)
    figures: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def table(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        path = os.path.join(self.output_dir, f"{name}.csv")
        frame.to_csv(path, index=False)
        self.tables[name] = path
        return frame

    def figure(self, name: str, draw, *args) -> None:
        path = os.path.join(self.output_dir, "figures", f"{name}.png")
        try:
            self.figures[name] = draw(*args, path)
        except figures.FigureSkipped as e:
            self.skipped[name] = str(e)


# ---------------------------------------------------------------------------------------------
# Correlation with ImageNet accuracy (Figs. 1, 2).


def primary_settings(best: pd.DataFrame) -> str | None:
    """The training-settings group the headline correlations use.

    The paper's r = 0.99 / 0.96 are for models all trained with the same (fair) settings;
    mixing settings mixes in the effect of Fig. 3. The largest group with at least 3 models
    (ties: "fair" first) is used; None (all models) when no group has 3.
    """
    rows = best[best["imagenet_logit"].notna()].drop_duplicates("model")
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
    "source top-1" values are on different tasks and must not share one regression.
    """
    rows = best[best["imagenet_logit"].notna()].drop_duplicates("model")
    counts = rows["settings"].astype(str).value_counts()
    groups: list[str | None] = sorted(g for g in counts[counts >= 3].index if g != primary)
    if primary is not None:
        groups.insert(0, primary)
    if len(rows["source_dataset"].dropna().unique()) <= 1:
        groups.append(None)
    return groups


def correlation_summary(best: pd.DataFrame, protocol: str, settings: str | None):
    """Per-model mean logit over a complete set of datasets, Morey SE, and t-test vs the best."""
    rows = best[best["imagenet_logit"].notna()]
    if settings is not None:
        rows = rows[rows["settings"].astype(str) == settings]
    matrix = tables.complete_matrix(tables.logit_matrix(rows, protocol))
    if matrix.empty:
        return pd.DataFrame(), matrix
    info = rows.drop_duplicates("model").set_index("model")
    summary = pd.DataFrame(
        {
            "model": matrix.index,
            "settings": info.loc[matrix.index, "settings"].astype(str).to_numpy(),
            "imagenet_top1": info.loc[matrix.index, "imagenet_top1"].to_numpy(),
            "imagenet_logit": info.loc[matrix.index, "imagenet_logit"].to_numpy(),
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
    corr = stats.correlate(summary["imagenet_logit"], summary["mean_logit"])
    boot = stats.bootstrap_regression(
        summary["imagenet_logit"], summary["mean_logit"], num_samples=num_bootstrap, seed=seed
    )
    return {
        "r": corr.pearson_r,
        "p": corr.pearson_p,
        "r_ci": boot.r_ci,
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


def _correlate_or_reason(summary: pd.DataFrame, num_bootstrap: int, seed: int):
    if len(summary) < 3:
        return (
            None,
            f"{len(summary)} model(s) with ImageNet accuracy and a complete set of datasets; r needs 3",
        )
    if np.ptp(summary["imagenet_logit"]) == 0 or np.ptp(summary["mean_logit"]) == 0:
        return None, "all models have the same ImageNet or transfer accuracy"
    return fit_correlation(summary, num_bootstrap, seed), None


# ---------------------------------------------------------------------------------------------
# Tests between protocols and between networks.


def across_model_tests(best: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per dataset, protocol a vs b paired across models on logit accuracy: Wilcoxon and t-test."""
    rows = []
    for dataset in sorted(best["dataset"].unique()):
        la = best[(best["protocol"] == a) & (best["dataset"] == dataset)].set_index("model")[
            "logit"
        ]
        lb = best[(best["protocol"] == b) & (best["dataset"] == dataset)].set_index("model")[
            "logit"
        ]
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
                # Smallest two-sided p an exact signed-rank test can give with n pairs.
                "wilcoxon_min_attainable_p": min(1.0, 2.0 / 2 ** len(both)),
                "t_statistic": t.statistic,
                "t_p": t.p_value,
            }
        )
    return pd.DataFrame(rows)


def _correctness(predictions: dict) -> np.ndarray | None:
    y_true = np.asarray(predictions.get("y_true"))
    y_pred = np.asarray(predictions.get("y_pred"))
    if y_true.ndim != 1:
        return None  # Multi-label (VOC 2007): no single per-example "correct".
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    if y_pred.shape != y_true.shape:
        return None
    return y_pred == y_true


def _load_predictions(path: str) -> dict:
    from transfer_tf import results  # Reads local paths and tf.io.gfile URLs alike.

    return results.load_predictions(path)


def top_model_tests(best: pd.DataFrame, permutation_samples: int, seed: int) -> pd.DataFrame:
    """McNemar (exact) and permutation tests between the two best models per dataset x protocol."""
    rows = []
    for (dataset, protocol), group in best.groupby(["dataset", "protocol"]):
        if len(group) < 2:
            continue
        top = group.sort_values("test_metric", ascending=False).head(2)
        row = {
            "dataset": dataset,
            "protocol": protocol,
            "model_a": top["model"].iloc[0],
            "model_b": top["model"].iloc[1],
            "metric_a": top["test_metric"].iloc[0],
            "metric_b": top["test_metric"].iloc[1],
        }
        paths = top["predictions_path"].tolist()
        note = ""
        if not all(isinstance(p, str) and p for p in paths):
            note = "no predictions file recorded"
        else:
            try:
                loaded = [_load_predictions(p) for p in paths]
            except (OSError, ValueError) as e:
                loaded, note = None, f"cannot read predictions: {e}"
            if loaded is not None:
                correct = [_correctness(p) for p in loaded]
                same_order = np.array_equal(loaded[0].get("y_true"), loaded[1].get("y_true"))
                if any(c is None for c in correct):
                    note = "multi-label or malformed predictions: no per-example correctness"
                elif not same_order:
                    note = "the two predictions files list different test examples (y_true differs)"
                else:
                    exact = stats.mcnemar_test(correct[0], correct[1])
                    perm = stats.permutation_test(correct[0], correct[1], permutation_samples, seed)
                    row.update(
                        n_examples=exact.n,
                        a_only=exact.a_only,
                        b_only=exact.b_only,
                        mcnemar_p=exact.p_value,
                        permutation_p=perm.p_value,
                    )
        row["note"] = note
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figures' tables.


def protocol_comparison_tables(best: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 6: per dataset, models with every protocol present there; Morey SE over those models."""
    bars, points = [], []
    for dataset, group in best.groupby("dataset"):
        matrix = group.pivot_table(index="protocol", columns="model", values="logit").dropna(axis=1)
        if matrix.shape[0] < 2 or matrix.shape[1] < 1:
            continue
        se = (
            stats.morey_standard_error(matrix.to_numpy())
            if matrix.shape[1] >= 2
            else np.zeros(matrix.shape[0])
        )
        for protocol, mean, err in zip(matrix.index, matrix.mean(axis=1), se, strict=True):
            bars.append(
                {"dataset": dataset, "protocol": protocol, "n_models": matrix.shape[1],
                 "mean_logit": mean, "mean_accuracy": float(stats.inverse_logit(mean)),
                 "morey_se": err}
            )  # fmt: skip
            for model, value in matrix.loc[protocol].items():
                points.append(
                    {"dataset": dataset, "protocol": protocol, "model": model, "logit": value}
                )
    return pd.DataFrame(bars), pd.DataFrame(points)


def scratch_finetune_pairs(best: pd.DataFrame) -> pd.DataFrame:
    ft = best[best["protocol"] == "finetune"].set_index(["model", "dataset"])["logit"]
    sc = best[best["protocol"] == "scratch"].set_index(["model", "dataset"])["logit"]
    pairs = pd.concat(
        [ft.rename("finetune_logit"), sc.rename("scratch_logit")], axis=1, join="inner"
    )
    return pairs.reset_index()


def convergence_tables(histories: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Steps to 90% of the maximum odds per run, and the geometric-mean speedup (Sec. 4.6)."""
    rows = []
    for (protocol, model, dataset), run in histories.groupby(["protocol", "model", "dataset"]):
        rows.append(
            {
                "protocol": protocol,
                "model": model,
                "dataset": dataset,
                "steps_to_90": stats.steps_to_fraction_of_max_odds(run["step"], run["val_metric"]),
                "max_val_metric": run["val_metric"].max(),
                "last_step": run["step"].max(),
            }
        )
    steps = pd.DataFrame(rows, columns=["protocol", "model", "dataset", "steps_to_90",
                                        "max_val_metric", "last_step"])  # fmt: skip
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
    return steps, summary


def subset_gap_table(subsets: pd.DataFrame) -> pd.DataFrame:
    """Fig. 9 in numbers: mean log odds per protocol at each subset size, and the gaps."""
    if subsets.empty:
        return pd.DataFrame()
    wide = subsets.pivot_table(index=["dataset", "per_class"], columns="protocol", values="logit")
    for a, b in (("finetune", "scratch"), ("finetune", "logreg")):
        if {a, b} <= set(wide.columns):
            wide[f"{a}_minus_{b}"] = wide[a] - wide[b]
    return wide.reset_index()


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
        se = (
            stats.morey_standard_error(matrix.to_numpy())
            if matrix.shape[1] >= 2
            else np.zeros(matrix.shape[0])
        )
        info = arch_rows.drop_duplicates("model").set_index("model")
        for model, mean, err in zip(matrix.index, matrix.mean(axis=1), se, strict=True):
            rows.append(
                {"architecture": architecture, "settings": str(info.loc[model, "settings"]),
                 "model": model, "n_datasets": matrix.shape[1], "mean_logit": mean,
                 "morey_se": err, "imagenet_logit": info.loc[model, "imagenet_logit"],
                 "source_dataset": info.loc[model, "source_dataset"]}
            )  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["architecture", "settings", "model", "n_datasets", "mean_logit", "morey_se",
                 "imagenet_logit", "source_dataset"],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Features: t-SNE and class separation (Fig. 4).


def find_feature_sets(features_dir: str) -> list[tuple[str, str]]:
    """(name, path) of one features .npz per folder under `features_dir` (test split preferred).

    Layout per docs/DESIGN.md: `<folder>/<split>.npz` with `features` [N, D] and `labels`; the
    folder's path relative to `features_dir` names the feature set (e.g. `model/dataset`).
    """
    if not os.path.isdir(features_dir):
        raise FileNotFoundError(
            f"--features_dir {features_dir!r} is not a directory; pass the folder holding the "
            "<split>.npz feature files, or leave it out to skip t-SNE."
        )
    found = []
    for folder, _, files in sorted(os.walk(features_dir)):
        npz = sorted(f for f in files if f.endswith(".npz") and not f.endswith(".predictions.npz"))
        if not npz:
            continue
        rank = {f"{split}.npz": i for i, split in enumerate(FEATURE_SPLIT_PREFERENCE)}
        chosen = min(npz, key=lambda f: (rank.get(f, len(rank)), f))
        name = os.path.relpath(folder, features_dir)
        name = os.path.splitext(chosen)[0] if name == "." else name
        found.append((name, os.path.join(folder, chosen)))
    return found


def class_sample(features, labels, *, name: str, seed: int = 0, num_classes: int = TSNE_CLASSES,
                 max_per_class: int = TSNE_MAX_PER_CLASS) -> dict:  # fmt: skip
    """Up to `max_per_class` examples of the `num_classes` most frequent classes, and their
    silhouette score (cosine) in the feature space: the number behind Fig. 4's picture."""
    from sklearn.metrics import silhouette_score

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(
            f"features set {name!r}: need features [N, D] and single-label labels [N], got "
            f"{features.shape} and {labels.shape}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    keep_classes = classes[np.lexsort((classes, -counts))][:num_classes]
    rng = np.random.default_rng(seed)
    index = np.concatenate(
        [rng.permutation(np.nonzero(labels == c)[0])[:max_per_class] for c in keep_classes]
    )
    x, y = features[index], labels[index]
    if len(keep_classes) < 2 or len(x) < 10:
        raise ValueError(f"features set {name!r}: need 2 classes and 10 examples for t-SNE")
    return {
        "name": name,
        "x": x,
        "labels": y,
        "silhouette": float(silhouette_score(x, y, metric="cosine")),
        "n_examples": len(x),
        "n_classes": len(keep_classes),
    }


def tsne_embedding(sample: dict, *, seed: int = 0, max_iter: int = 1000) -> dict:
    """t-SNE of a `class_sample` (adds `points` [N, 2])."""
    from sklearn.manifold import TSNE

    x = sample["x"]
    perplexity = float(min(30.0, (len(x) - 1) / 3.0))
    points = TSNE(
        perplexity=perplexity, init="pca", max_iter=max_iter, random_state=seed
    ).fit_transform(x)
    return {**sample, "points": points}


def feature_samples(features_dir: str, seed: int) -> tuple[list[dict], list[str]]:
    """A `class_sample` of every feature set under `features_dir`, and the sets that have none."""
    samples, problems = [], []
    for name, path in find_feature_sets(features_dir):
        with np.load(path) as data:
            if "features" not in data.files or "labels" not in data.files:
                problems.append(f"{path}: no 'features' and 'labels' arrays")
                continue
            features, labels = data["features"], data["labels"]
        if labels.ndim != 1:
            problems.append(f"{path}: multi-label labels; t-SNE colours need one class per example")
            continue
        try:
            samples.append(class_sample(features, labels, name=name, seed=seed))
        except ValueError as e:
            problems.append(str(e))
    return samples, problems


def separation_table(samples: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: e[k] for k in ("name", "silhouette", "n_examples", "n_classes")}
                         for e in samples], columns=["name", "silhouette", "n_examples", "n_classes"])  # fmt: skip


def _model_and_dataset(name: str, models) -> tuple[str, str] | None:
    """(model, dataset) of a feature set named `<model>/<dataset>` (or deeper) of a known model."""
    parts = name.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if part in models:
            return part, "/".join(parts[i + 1:]) or "-"
    return None


def settings_pairs(samples: list[dict], model_info: pd.DataFrame) -> list[dict]:
    """Feature sets of one architecture trained with both 'fair' and 'inception_default' settings,
    on the same dataset (Fig. 4 compares exactly these)."""
    by_key = {}
    for sample in samples:
        found = _model_and_dataset(sample["name"], model_info.index)
        if found:
            model, dataset = found
            info = model_info.loc[model]
            by_key[(str(info["architecture"]), dataset, str(info["settings"]))] = sample
    pairs = []
    for (architecture, dataset, settings), fair in sorted(by_key.items()):
        default = by_key.get((architecture, dataset, "inception_default"))
        if settings == "fair" and default is not None:
            pairs.append({"architecture": architecture, "dataset": dataset, "fair": fair,
                          "inception_default": default})  # fmt: skip
    return pairs


def tsne_selection(samples: list[dict], pairs: list[dict], max_sets: int = 6) -> list[dict]:
    """The feature sets t-SNE draws: settings pairs first, from the datasets with the most classes
    (as the paper's Fig. 4: one model's two settings, 10 classes), else the first sets."""
    if not pairs:
        return samples[:max_sets]
    ranked = sorted(pairs, key=lambda p: (-p["fair"]["n_classes"], p["dataset"], p["architecture"]))
    chosen = [s for p in ranked for s in (p["fair"], p["inception_default"])]
    return chosen[: max_sets - max_sets % 2]


def feature_embeddings(features_dir: str, seed: int, model_info: pd.DataFrame,
                       tsne_max_iter: int = 1000) -> tuple[list[dict], list[dict], list[str]]:  # fmt: skip
    """(every feature set's class sample with its silhouette, the t-SNE panels, problems)."""
    samples, problems = feature_samples(features_dir, seed)
    chosen = tsne_selection(samples, settings_pairs(samples, model_info))
    return samples, [tsne_embedding(s, seed=seed, max_iter=tsne_max_iter) for s in chosen], problems


# ---------------------------------------------------------------------------------------------
# Findings in plain words.


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def _verdict(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "cannot be checked"}[holds]


def correlation_finding(protocol: str, fit: dict | None, reason: str | None) -> dict:
    paper_r = PAPER[f"r_{protocol}"]
    name = f"ImageNet accuracy predicts {PROTOCOL_NAMES[protocol]} accuracy"
    if fit is None:
        return {"finding": name, "paper": f"r = {paper_r}", "ours": reason, "holds": None}
    lo, hi = fit["r_ci"]
    holds = bool(fit["r"] > 0 and fit["p"] < SIGNIFICANCE)
    inside = "inside" if lo <= paper_r <= hi else "outside"
    text = (
        f"r between ImageNet accuracy and {PROTOCOL_NAMES[protocol]} transfer is {fit['r']:.2f} "
        f"(95% CI {lo:.2f} to {hi:.2f}, p = {_fmt_p(fit['p'])}, Spearman rho = "
        f"{fit['spearman_rho']:.2f}, {fit['n_models']} models): the paper's finding "
        f"(r = {paper_r}, a significant positive correlation) {_verdict(holds)}; the paper's r is "
        f"{inside} our CI."
    )
    return {"finding": name, "paper": f"r = {paper_r}", "ours": text, "holds": holds}


def findings(results: dict) -> list[dict]:
    out = []
    fits = results["fits"]
    for protocol in ("logreg", "finetune"):
        out.append(
            correlation_finding(protocol, fits.get(protocol), results["fit_reasons"].get(protocol))
        )
    name = "Training from scratch correlates less with ImageNet accuracy than transfer does"
    transfer_rs = [fits[p]["r"] for p in ("logreg", "finetune") if fits.get(p)]
    if fits.get("scratch") and transfer_rs:
        r = fits["scratch"]["r"]
        holds = bool(r < min(transfer_rs))
        text = (f"scratch r = {r:.2f} (95% CI {fits['scratch']['r_ci'][0]:.2f} to "
                f"{fits['scratch']['r_ci'][1]:.2f}) vs {min(transfer_rs):.2f} for transfer: "
                f"the paper's finding (0.55 vs 0.96-0.99) {_verdict(holds)}.")  # fmt: skip
    else:
        holds, text = None, "needs correlations for scratch and at least one transfer protocol"
    out.append({"finding": name, "paper": "r = 0.55 vs 0.99 / 0.96", "ours": text, "holds": holds})

    for key, (winner, loser) in (("finetune_beats_logreg", ("finetune", "logreg")),
                                 ("finetune_beats_scratch", ("finetune", "scratch"))):  # fmt: skip
        counts = results["win_counts"][key]
        paper_w, paper_n = PAPER[key]
        name = f"{PROTOCOL_NAMES[winner].capitalize()} beats {PROTOCOL_NAMES[loser]}"
        if counts["total"] == 0:
            holds, text = None, f"no model x dataset pair has both {winner} and {loser} results"
        else:
            holds = counts["wins"] > counts["total"] / 2
            text = (f"{PROTOCOL_NAMES[winner]} beats {PROTOCOL_NAMES[loser]} in {counts['wins']} "
                    f"of {counts['total']} model x dataset pairs: the paper's finding "
                    f"({paper_w} of {paper_n}) {_verdict(holds)}.")  # fmt: skip
        out.append(
            {"finding": name, "paper": f"{paper_w} / {paper_n}", "ours": text, "holds": holds}
        )

    tests = results["across_models"]
    name = "Fine-tuning is significantly better than logistic regression per dataset (Wilcoxon)"
    ft_lr = tests[tests["comparison"] == "finetune vs logreg"] if len(tests) else tests
    if len(ft_lr):
        significant = ft_lr[(ft_lr["wilcoxon_p"] < 0.01) & (ft_lr["mean_logit_difference"] > 0)]
        at_05 = ft_lr[(ft_lr["wilcoxon_p"] < 0.05) & (ft_lr["mean_logit_difference"] > 0)]
        min_p = float(ft_lr["wilcoxon_min_attainable_p"].min())
        text = (f"fine-tuning is better at p < 0.01 on {len(significant)} and at p < 0.05 on "
                f"{len(at_05)} of {len(ft_lr)} datasets (smallest attainable Wilcoxon p with "
                f"{int(ft_lr['n_models'].max())} models: {min_p:.2g})")  # fmt: skip
        if min_p >= 0.01:
            holds = None
            text += "; too few models to reach the paper's p < 0.01, so it cannot be checked."
        else:
            holds = len(significant) > len(ft_lr) / 2
            text += f": the paper's finding (11 of 12) {_verdict(holds)}."
    out.append(
        {"finding": name, "paper": "11 / 12 datasets, p < 0.01", "ours": text, "holds": holds}
    )

    conv = results["convergence"]
    name = "ImageNet pretraining speeds up convergence (steps to 90% of max odds)"
    if conv:
        holds = conv["speedup"] > 1
        text = (f"fine-tuning reaches 90% of its maximum odds in {conv['finetune_steps_geomean']:.0f} "
                f"steps vs {conv['scratch_steps_geomean']:.0f} from scratch (geometric means over "
                f"{conv['n_pairs']} model x dataset pairs), a {conv['speedup']:.1f}x speedup: the "
                f"paper's finding (17x) {_verdict(holds)}.")  # fmt: skip
    else:
        holds, text = (
            None,
            "needs training histories of fine-tuning and scratch for the same model and dataset",
        )
    out.append({"finding": name, "paper": "17x fewer steps", "ours": text, "holds": holds})

    out.append(_subset_finding(results["subset_gaps"]))
    out.append(_settings_finding(results["variants"]))
    out.append(_tsne_finding(results["feature_samples"], results["model_info"]))
    return out


def _subset_finding(gaps: pd.DataFrame) -> dict:
    name = "The benefit of pretraining shrinks as the training set grows (Fig. 9)"
    if len(gaps) and "finetune_minus_scratch" in gaps.columns:
        shrinks, total = 0, 0
        for _, rows in gaps.dropna(subset=["finetune_minus_scratch"]).groupby("dataset"):
            if rows["per_class"].nunique() >= 2:
                gap = rows.sort_values("per_class")["finetune_minus_scratch"]
                total += 1
                # A benefit at the smallest subset that is smaller at the largest: with no
                # benefit to begin with, nothing shrinks.
                shrinks += int(gap.iloc[0] > 0 and gap.iloc[-1] < gap.iloc[0])
        holds = (shrinks > total / 2) if total else None
        text = (f"fine-tuning beats scratch at the smallest subset and the gap (log odds) is "
                f"smaller at the largest subset on {shrinks} of {total} datasets: the paper's "
                f"finding {_verdict(holds)}.") if total else "needs at least 2 subset sizes per dataset"  # fmt: skip
    else:
        holds, text = None, "needs per_class subset results for fine-tuning and scratch"
    return {"finding": name, "paper": "gap fades with size", "ours": text, "holds": holds}


def _fair_minus_default(variants: pd.DataFrame) -> dict:
    diffs = {}
    for architecture, rows in variants.groupby("architecture"):
        by = rows.set_index("settings")["mean_logit"]
        if "fair" in by.index and "inception_default" in by.index:
            diffs[architecture] = float(by["fair"] - by["inception_default"])
    return diffs


def _settings_finding(variants: dict) -> dict:
    name = "Fair training settings transfer better with fixed features, less so when fine-tuned"
    lr = _fair_minus_default(variants.get("logreg", pd.DataFrame(columns=["architecture"])))
    ft = _fair_minus_default(variants.get("finetune", pd.DataFrame(columns=["architecture"])))
    if not lr:
        return {"finding": name, "paper": "Figs. 3 and 5", "holds": None,
                "ours": "needs an architecture pretrained with both 'fair' and 'inception_default' settings"}  # fmt: skip
    holds = all(d > 0 for d in lr.values())
    text = "fair minus Inception-default log odds with logistic regression: " + ", ".join(
        f"{a} {d:+.2f}" for a, d in lr.items()
    )
    common = sorted(set(lr) & set(ft))
    if common:
        smaller = all(abs(ft[a]) < abs(lr[a]) for a in common)
        holds = holds and smaller
        text += "; with fine-tuning: " + ", ".join(f"{a} {ft[a]:+.2f}" for a in common)
    return {
        "finding": name,
        "paper": "Figs. 3 and 5",
        "ours": text + f": {_verdict(holds)}.",
        "holds": holds,
    }


def _tsne_finding(samples: list[dict], model_info: pd.DataFrame) -> dict:
    name = "Regularized (Inception-default) training gives a less separable feature space (Fig. 4)"
    pairs = settings_pairs(samples, model_info)
    if not pairs:
        text = ("; ".join(f"{e['name']}: silhouette {e['silhouette']:.3f}" for e in samples[:6])
                or "no features given") + (
            ". Needs features of one architecture with both 'fair' and 'inception_default' "
            "settings on the same dataset."
        )  # fmt: skip
        return {"finding": name, "paper": "Fig. 4", "ours": text, "holds": None}
    wins = sum(p["fair"]["silhouette"] > p["inception_default"]["silhouette"] for p in pairs)
    holds = bool(wins > len(pairs) / 2)
    text = ", ".join(
        f"{p['architecture']}/{p['dataset']} {p['fair']['silhouette']:.3f} vs "
        f"{p['inception_default']['silhouette']:.3f}" for p in pairs
    )
    return {
        "finding": name,
        "paper": "Fig. 4",
        "ours": f"silhouette (cosine) of fair vs Inception-default features: {text}; fair features "
                f"are more separable in {wins} of {len(pairs)} pairs: {_verdict(holds)}.",
        "holds": holds,
    }


# ---------------------------------------------------------------------------------------------
# Writing.


def _md_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if frame is None or frame.empty:
        return "_(none)_\n"

    def cell(v):
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else format(v, floatfmt)
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]  # fmt: skip
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def _correlation_rows(correlations: dict) -> pd.DataFrame:
    rows = []
    for key, fit in correlations.items():
        rows.append(
            {"protocol": fit["protocol"], "models": fit["group"], "n_models": fit["n_models"],
             "r": fit["r"], "r_ci_low": fit["r_ci"][0], "r_ci_high": fit["r_ci"][1],
             "p": fit["p"], "spearman_rho": fit["spearman_rho"], "spearman_p": fit["spearman_p"],
             "slope": fit["slope"], "slope_ci_low": fit["slope_ci"][0],
             "slope_ci_high": fit["slope_ci"][1], "intercept": fit["intercept"], "key": key}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _sections(state: dict, report: _Report) -> list[tuple[str, str, pd.DataFrame | None]]:
    """(title, text, table) sections shared by report.md and report.html."""
    sections = [("Which of the paper's findings hold", "", None)]
    corr = _correlation_rows(state["correlations"])
    sections.append((
        "Correlation with ImageNet accuracy (Figs. 1, 2)",
        "Pearson r of logit ImageNet top-1 against the mean logit transfer accuracy over a "
        "complete set of datasets; 95% CI and regression-line band from "
        f"{state['num_bootstrap']} bootstrap resamples of models. Headline group: "
        f"{state['primary_settings'] or 'all models'}.",
        corr.drop(columns="key") if len(corr) else corr,
    ))  # fmt: skip
    wins = pd.DataFrame([{k: v for k, v in w.items() if not k.startswith("per_dataset")}
                         for w in state["win_counts"].values()])  # fmt: skip
    sections.append(
        ("Win counts", "Model x dataset pairs where one protocol's test metric is higher.", wins)
    )
    sections.append((
        "Across models, per dataset (Wilcoxon signed-rank, paired t-test)",
        "Paired by model on logit test accuracy; two-sided.",
        state["across_models"],
    ))  # fmt: skip
    sections.append((
        "Between the two best models per dataset (McNemar exact test, permutation test)",
        f"Per-example correctness from the predictions files; permutation test with "
        f"{state['permutation_samples']} random swaps.",
        state["mcnemar"],
    ))  # fmt: skip
    sections.append(
        (
            "Protocol comparison (Fig. 6)",
            "Mean log odds over models, Morey SE.",
            state["protocol_bars"],
        )
    )
    sections.append(
        (
            "Convergence (Fig. 8)",
            "Steps to reach 90% of each run's maximum odds.",
            state["convergence_steps"],
        )
    )
    sections.append(
        (
            "Training-subset size (Fig. 9)",
            "Mean log odds over models per protocol.",
            state["subset_gaps"],
        )
    )
    separation = separation_table(state["feature_samples"])
    sections.append(
        ("Class separation of features (Fig. 4)", "; ".join(state["feature_problems"]), separation)
    )
    return sections


def _write_markdown(state: dict, report: _Report, path: str) -> None:
    lines = ["# Do better ImageNet models transfer better? — study report", ""]
    for title, text, table in _sections(state, report):
        lines += [f"## {title}", ""]
        if title.startswith("Which"):
            lines += [
                f"- **{f['finding']}** — {_verdict(f['holds'])}. {f['ours']}"
                for f in state["findings"]
            ]
            lines.append("")
            continue
        if text:
            lines += [text, ""]
        if table is not None:
            lines += [_md_table(table), ""]
    lines += ["## Figures", ""]
    for name, fig_path in report.figures.items():
        lines += [
            f"### {name}",
            "",
            f"![{name}]({os.path.relpath(fig_path, report.output_dir)})",
            "",
        ]
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- {name}: {why}" for name, why in report.skipped.items()]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _write_html(state: dict, report: _Report, path: str) -> None:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>transfer_tf study report</title><style>body{font-family:sans-serif;max-width:1100px;"
        "margin:auto}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px}.holds{color:green}.fails{color:#b00}.unknown{color:#666}"
        "img{max-width:100%}</style></head><body>",
        "<h1>Do better ImageNet models transfer better? — study report</h1>",
    ]
    for title, text, table in _sections(state, report):
        parts.append(f"<h2>{esc(title)}</h2>")
        if title.startswith("Which"):
            parts.append("<ul>")
            for f in state["findings"]:
                cls = {True: "holds", False: "fails", None: "unknown"}[f["holds"]]
                parts.append(f"<li><b>{esc(f['finding'])}</b> — <span class='{cls}'>"
                             f"{_verdict(f['holds'])}</span>. {esc(str(f['ours']))}</li>")  # fmt: skip
            parts.append("</ul>")
            continue
        if text:
            parts.append(f"<p>{esc(text)}</p>")
        if table is not None and len(table):
            parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
        elif table is not None:
            parts.append("<p><i>(none)</i></p>")
    parts.append("<h2>Figures</h2>")
    for name, fig_path in report.figures.items():
        with open(fig_path, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(
            f"<h3>{esc(name)}</h3><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
        )
    if report.skipped:
        parts.append("<h2>Skipped</h2><ul>")
        parts += [f"<li>{esc(n)}: {esc(w)}</li>" for n, w in report.skipped.items()]
        parts.append("</ul>")
    parts.append(
        "<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in report.notes) + "</ul>"
    )
    parts.append("</body></html>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    return value


def write_report(
    results_df: pd.DataFrame,
    model_table_df: pd.DataFrame,
    output_dir: str,
    features_dir: str | None = None,
    *,
    num_bootstrap: int = 1000,
    permutation_samples: int = 10000,
    seed: int = 0,
    tsne_max_iter: int = 1000,
) -> dict:
    """Writes the CSV tables, figures, report.html and report.md into `output_dir`.

    results_df: `transfer_tf.results.load(results_dir)`. model_table_df: model, architecture,
    settings, imagenet_top1 (fraction), top1_source. features_dir: optional folder of features
    .npz files for t-SNE (`tsne_max_iter`: sklearn's optimisation steps; 1000 is its default).
    Returns the headline numbers (JSON-able; also saved as headline.json).
    """
    os.makedirs(os.path.join(output_dir, "figures"), exist_ok=True)
    report = _Report(output_dir)
    model_table = tables.validate_model_table(model_table_df)
    best = tables.best_test_metrics(results_df, model_table)
    if best.empty:
        raise ValueError(
            "no final cells with a test_metric in the results: run the sweeps' final stage "
            "(stage == 'final') before transfer-analyze."
        )
    report.table("best_test_metric", best.drop(columns="predictions_path"))
    wide = best.pivot_table(index="model", columns=["protocol", "dataset"], values="test_metric")
    wide.columns = [f"{p}/{d}" for p, d in wide.columns]
    report.table("best_test_metric_wide", wide.reset_index())
    unknown = sorted(set(best["model"]) - set(model_table["model"]))
    if unknown:
        report.notes.append(f"models without ImageNet accuracy in the model table (left out of "
                            f"correlations): {', '.join(unknown)}")  # fmt: skip
    if (best["n_final_configs"] > 1).any():
        report.notes.append("some model x dataset x protocol have several final cells with "
                            "different hyperparameters; the best test metric was kept")  # fmt: skip

    # Correlations (Figs. 1, 2).
    settings = primary_settings(best)
    correlations, summaries, fits, fit_reasons = {}, {}, {}, {}
    for protocol in PROTOCOL_NAMES:
        if not (best["protocol"] == protocol).any():
            fit_reasons[protocol] = f"no {protocol} results"
            report.skipped[f"fig2_{protocol}"] = fit_reasons[protocol]
            continue
        groups = correlation_groups(best, settings)
        if settings not in groups:
            fit_reasons[protocol] = ("the models were pretrained on different source datasets "
                                     "and no training-settings group has 3 models to correlate")
            report.skipped[f"fig2_{protocol}"] = fit_reasons[protocol]
        for group in groups:
            summary, matrix = correlation_summary(best, protocol, group)
            fit, reason = _correlate_or_reason(summary, num_bootstrap, seed)
            if group == settings:
                summaries[protocol], fits[protocol], fit_reasons[protocol] = summary, fit, reason
                if fit is None:
                    report.skipped[f"fig2_{protocol}"] = reason
                else:
                    report.figure(
                        f"fig2_{protocol}", figures.transfer_vs_imagenet, summary, fit, protocol
                    )
                    report.table(f"model_means_{protocol}", summary)
            if fit is not None:
                key = f"{protocol}/{group or 'all'}"
                correlations[key] = {**fit, "protocol": protocol, "group": group or "all",
                                     "n_datasets": matrix.shape[1]}  # fmt: skip
        report.figure(
            f"fig2_{protocol}_datasets", figures.transfer_vs_imagenet_per_dataset, best, protocol
        )
    report.figure("fig1", figures.correlation_overview,
                  {p: s for p, s in summaries.items() if fits.get(p)}, fits)  # fmt: skip
    report.table("correlations", _correlation_rows(correlations))

    win = {
        f"{a}_beats_{b}": tables.win_counts(best, a, b)
        for a, b in (("finetune", "logreg"), ("finetune", "scratch"), ("logreg", "scratch"))
    }
    report.table("win_counts", pd.DataFrame(
        [{**{k: v for k, v in w.items() if not k.startswith("per_dataset")},
          "fraction": w["wins"] / w["total"] if w["total"] else np.nan} for w in win.values()]
    ))  # fmt: skip
    across = pd.concat(
        [
            across_model_tests(best, "finetune", "logreg"),
            across_model_tests(best, "finetune", "scratch"),
        ],
        ignore_index=True,
    )
    report.table("across_models_tests", across)
    mcnemar = report.table("mcnemar_top_models", top_model_tests(best, permutation_samples, seed))

    bars, points = protocol_comparison_tables(best)
    report.table("protocol_comparison", bars)
    report.figure("fig6_protocols", figures.protocol_comparison, bars, points)
    pairs = report.table("scratch_vs_finetune", scratch_finetune_pairs(best))
    report.figure("fig7_scratch_vs_finetune", figures.scratch_vs_finetune, pairs)

    histories = tables.training_histories(results_df)
    steps, convergence = convergence_tables(histories)
    report.table("convergence", steps)
    report.figure("fig8_convergence", figures.convergence, histories, steps)

    subsets = tables.subset_results(results_df)
    gaps = report.table("subset_size", subset_gap_table(subsets))
    report.figure("fig9_subset_size", figures.subset_size, subsets)

    variants = {}
    for protocol, number in (("logreg", 3), ("finetune", 5)):
        variants[protocol] = settings_variant_table(best, protocol)
        report.table(f"settings_variants_{protocol}", variants[protocol])
        report.figure(f"fig{number}_settings_{protocol}", figures.settings_variants,
                      variants[protocol], protocol, number)  # fmt: skip

    model_info = model_table.assign(settings=model_table["settings"].astype(str)).set_index(
        "model", drop=False
    )
    samples, embeddings, feature_problems = [], [], []
    if features_dir:
        samples, embeddings, feature_problems = feature_embeddings(
            features_dir, seed, model_info, tsne_max_iter
        )
        report.figure("fig4_tsne", figures.tsne_embeddings, embeddings)
        report.figure("fig4_class_separation", figures.class_separation, samples)
        report.table("class_separation", separation_table(samples))
    else:
        report.skipped["fig4_tsne"] = "no --features_dir given"

    state = {
        "fits": fits,
        "fit_reasons": fit_reasons,
        "correlations": correlations,
        "primary_settings": settings,
        "num_bootstrap": num_bootstrap,
        "permutation_samples": permutation_samples,
        "win_counts": win,
        "across_models": across,
        "mcnemar": mcnemar,
        "protocol_bars": bars,
        "convergence_steps": steps,
        "convergence": convergence,
        "subset_gaps": gaps,
        "variants": variants,
        "feature_samples": samples,
        "feature_problems": feature_problems,
        "model_info": model_info,
    }
    state["findings"] = findings(state)
    report.table("findings", pd.DataFrame(state["findings"]))
    md_path = os.path.join(output_dir, "report.md")
    html_path = os.path.join(output_dir, "report.html")
    _write_markdown(state, report, md_path)
    _write_html(state, report, html_path)

    headline = _jsonable({
        "output_dir": output_dir,
        "report_html": html_path,
        "report_md": md_path,
        "primary_settings": settings,
        "correlations": {
            key: {k: v for k, v in fit.items() if k not in ("grid", "band_low", "band_high")}
            for key, fit in correlations.items()
        },
        "win_counts": {k: {"wins": w["wins"], "total": w["total"]} for k, w in win.items()},
        "convergence": convergence,
        "findings": [{"finding": f["finding"], "holds": f["holds"], "ours": f["ours"]}
                     for f in state["findings"]],
        "figures": report.figures,
        "skipped": report.skipped,
        "tables": report.tables,
    })  # fmt: skip
    with open(os.path.join(output_dir, "headline.json"), "w") as f:
        json.dump(headline, f, indent=1)
    return headline


def headline_lines(headline: dict) -> list[str]:
    """The headline numbers as printed lines (transfer-analyze and transfer-study print them)."""
    lines = [f"report: {headline['report_html']}", f"        {headline['report_md']}"]
    for key, fit in headline["correlations"].items():
        lines.append(f"r[{key}] = {fit['r']:.3f} (95% CI {fit['r_ci'][0]:.3f} to "
                     f"{fit['r_ci'][1]:.3f}, p = {fit['p']:.3g}, {fit['n_models']} models)")
    for key, counts in headline["win_counts"].items():
        lines.append(f"{key}: {counts['wins']} of {counts['total']}")
    verdicts = {True: "holds", False: "does not hold", None: "cannot be checked"}
    for finding in headline["findings"]:
        lines.append(f"[{verdicts[finding['holds']]}] {finding['finding']}")
    for name, why in headline["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return lines
