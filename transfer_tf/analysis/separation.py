"""Class separation of penultimate features (Fig. 4): t-SNE pictures and a silhouette score.

The paper's Fig. 4 is a picture: t-SNE of Inception v4 features of 10 Oxford Flowers test
classes, with the Inception-default settings visibly less separable. It gives no number; the
silhouette score (cosine, in the original feature space) is ours, a number that does not depend
on t-SNE's randomness.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_samples

from transfer_tf.analysis import stats
from transfer_tf.analysis.paper import PAPER

TSNE_CLASSES = PAPER["tsne_classes"].value
# A few dozen examples per class keep t-SNE to seconds on a CPU.
TSNE_MAX_PER_CLASS = 30
FEATURE_SPLIT_PREFERENCE = ("test", "val", "train")
SEPARATION_COLUMNS = ["name", "silhouette", "n_examples", "n_classes"]


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
    rank = {f"{split}.npz": i for i, split in enumerate(FEATURE_SPLIT_PREFERENCE)}
    found = []
    for folder, _, files in sorted(os.walk(features_dir)):
        npz = sorted(f for f in files if f.endswith(".npz") and not f.endswith(".predictions.npz"))
        if not npz:
            continue
        chosen = min(npz, key=lambda f: (rank.get(f, len(rank)), f))
        name = os.path.relpath(folder, features_dir)
        name = os.path.splitext(chosen)[0] if name == "." else name
        found.append((name, os.path.join(folder, chosen)))
    return found


def class_sample(
    features,
    labels,
    *,
    name: str,
    seed: int = 0,
    num_classes: int = TSNE_CLASSES,
    max_per_class: int = TSNE_MAX_PER_CLASS,
) -> dict:
    """Up to `max_per_class` examples of the `num_classes` most frequent classes, and their
    silhouette (cosine) in the feature space, per example and its mean: our number beside
    Fig. 4's picture (the mean is sklearn's `silhouette_score`)."""
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
    values = silhouette_samples(x, y, metric="cosine")
    return {
        "name": name,
        "x": x,
        "labels": y,
        "silhouette_values": values,
        "silhouette": float(np.mean(values)),
        "n_examples": len(x),
        "n_classes": len(keep_classes),
    }


def tsne_embedding(sample: dict, *, seed: int = 0, max_iter: int = 1000) -> dict:
    """t-SNE of a `class_sample` (adds `points` [N, 2])."""
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
    return pd.DataFrame(
        [{k: s[k] for k in SEPARATION_COLUMNS} for s in samples], columns=SEPARATION_COLUMNS
    )


def _model_and_dataset(name: str, models) -> tuple[str, str] | None:
    """(model, dataset) of a feature set named `<model>/<dataset>` (or deeper) of a known model."""
    parts = name.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if part in models:
            return part, "/".join(parts[i + 1 :]) or "-"
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
            pairs.append(
                {
                    "architecture": architecture,
                    "dataset": dataset,
                    "fair": fair,
                    "inception_default": default,
                }
            )
    return pairs


def tsne_selection(samples: list[dict], pairs: list[dict], max_sets: int = 6) -> list[dict]:
    """The feature sets t-SNE draws: settings pairs first, from the datasets with the most classes
    (as the paper's Fig. 4: one model's two settings, 10 classes), else the first sets."""
    if not pairs:
        return samples[:max_sets]
    ranked = sorted(pairs, key=lambda p: (-p["fair"]["n_classes"], p["dataset"], p["architecture"]))
    chosen = [s for p in ranked for s in (p["fair"], p["inception_default"])]
    return chosen[: max_sets - max_sets % 2]


def feature_embeddings(
    features_dir: str, seed: int, model_info: pd.DataFrame, tsne_max_iter: int = 1000
) -> tuple[list[dict], list[dict], list[str]]:
    """(every feature set's class sample with its silhouette, the t-SNE panels, problems)."""
    samples, problems = feature_samples(features_dir, seed)
    chosen = tsne_selection(samples, settings_pairs(samples, model_info))
    return samples, [tsne_embedding(s, seed=seed, max_iter=tsne_max_iter) for s in chosen], problems


def separation_test(fair: dict, default: dict) -> float:
    """p of fair vs Inception-default per-example silhouettes (two-sided): the Wilcoxon
    signed-rank test when both samples hold the same examples (same seed, same labels), else
    the Mann-Whitney U test."""
    a, b = fair["silhouette_values"], default["silhouette_values"]
    if np.array_equal(fair["labels"], default["labels"]):
        return stats.wilcoxon_signed_rank(a, b).p_value
    return float(scipy_stats.mannwhitneyu(a, b).pvalue)
