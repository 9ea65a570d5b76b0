"""Two networks on one dataset (Sec. 3, Supp. A.1.1): a test of the two best models per
dataset x protocol on the dataset's own metric, from the sweeps' per-example predictions files.

- top-1: the exact McNemar test on per-example correctness (the paper's "equivalent binomial
  test"), with the permutation test beside it;
- mean per-class accuracy: a paired permutation test whose statistic is the difference in mean
  per-class accuracy (a McNemar test would weigh every example alike, not every class);
- 11-point mAP (multi-label): a paired permutation test on the difference in mAP.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_tf import results
from transfer_tf.analysis import stats

COLUMNS = [
    "dataset",
    "protocol",
    "metric",
    "model_a",
    "model_b",
    "test_metric_a",
    "test_metric_b",
    "test",
    "n_examples",
    "difference",
    "p_value",
    "permutation_p",
    "mcnemar_p",
    "a_only",
    "b_only",
    "note",
]


def correctness(predictions: dict) -> np.ndarray | None:
    """Per-example correctness of single-label predictions (`y_pred` class ids, or scores →
    argmax); None for multi-label or malformed predictions."""
    y_true = np.asarray(predictions.get("y_true"))
    y_pred = np.asarray(predictions.get("y_pred"))
    if y_true.ndim != 1:
        return None  # Multi-label (VOC 2007): no single per-example "correct".
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    if y_pred.shape != y_true.shape:
        return None
    return y_pred == y_true


def multi_label_scores(predictions: dict) -> np.ndarray | None:
    """Scores [N, C] of multi-label predictions: logistic regression stores its 0/1 decisions as
    `y_pred` and the scores as `y_score`; fine-tuning stores the scores as `y_pred`."""
    y_true = np.asarray(predictions.get("y_true"))
    for key in ("y_score", "y_pred"):
        scores = predictions.get(key)
        if scores is not None and np.asarray(scores).shape == y_true.shape:
            if np.issubdtype(np.asarray(scores).dtype, np.floating):
                return np.asarray(scores)
    return None


def _top1(a: dict, b: dict, samples: int, seed: int) -> tuple[dict, str]:
    correct = [correctness(a), correctness(b)]
    if any(c is None for c in correct):
        return {}, "top-1 needs single-label predictions (class ids or scores [N, C])"
    exact = stats.mcnemar_test(*correct)
    perm = stats.permutation_test(*correct, samples, seed)
    return {
        "test": "McNemar exact (top-1)",
        "n_examples": exact.n,
        "difference": float(correct[0].mean() - correct[1].mean()),
        "p_value": exact.p_value,
        "permutation_p": perm.p_value,
        "mcnemar_p": exact.p_value,
        "a_only": exact.a_only,
        "b_only": exact.b_only,
    }, ""


def _mean_per_class(a: dict, b: dict, samples: int, seed: int) -> tuple[dict, str]:
    correct = [correctness(a), correctness(b)]
    if any(c is None for c in correct):
        return {}, "mean per-class accuracy needs single-label predictions"
    perm = stats.mean_per_class_permutation_test(
        a["y_true"], a["y_pred"], b["y_pred"], samples, seed
    )
    exact = stats.mcnemar_test(*correct)  # on top-1 correctness, for comparison only
    return {
        "test": "permutation (mean per-class accuracy)",
        "n_examples": perm.n,
        "difference": perm.difference,
        "p_value": perm.p_value,
        "permutation_p": perm.p_value,
        "mcnemar_p": exact.p_value,
        "a_only": exact.a_only,
        "b_only": exact.b_only,
    }, ""


def _map11(a: dict, b: dict, samples: int, seed: int) -> tuple[dict, str]:
    scores = [multi_label_scores(a), multi_label_scores(b)]
    if any(s is None for s in scores):
        return {}, "11-point mAP needs multi-hot y_true and float scores (y_score or y_pred)"
    perm = stats.map_permutation_test(a["y_true"], *scores, samples, seed)
    return {
        "test": "permutation (11-point mAP)",
        "n_examples": perm.n,
        "difference": perm.difference,
        "p_value": perm.p_value,
        "permutation_p": perm.p_value,
    }, ""


# One paired test per metric of Table 1 (the registry's `metric` names).
PAIRED_TESTS = {"top1": _top1, "mean_per_class": _mean_per_class, "map11": _map11}


def paired_test(metric: str, paths: list, samples: int, seed: int) -> tuple[dict, str]:
    """(test columns, note) for the predictions files of models a and b on one dataset."""
    if metric not in PAIRED_TESTS:
        return {}, f"no paired test for metric {metric!r} (known: {', '.join(PAIRED_TESTS)})"
    if not all(isinstance(p, str) and p for p in paths):
        return {}, "no predictions file recorded"
    try:
        a, b = (results.load_predictions(p) for p in paths)
    except (OSError, ValueError) as e:
        return {}, f"cannot read predictions: {e}"
    if not np.array_equal(a.get("y_true"), b.get("y_true")):
        return {}, "the two predictions files list different test examples (y_true differs)"
    if "ids" in a and "ids" in b and not np.array_equal(a["ids"], b["ids"]):
        return {}, "the two predictions files list the test examples in different orders (ids)"
    return PAIRED_TESTS[metric](a, b, samples, seed)


def top_model_tests(best: pd.DataFrame, permutation_samples: int, seed: int) -> pd.DataFrame:
    """The two models with the highest test metric per dataset x protocol, tested on that metric."""
    rows = []
    for (dataset, protocol), group in best.groupby(["dataset", "protocol"]):
        if len(group) < 2:
            continue
        top = group.sort_values("test_metric", ascending=False, kind="stable").head(2)
        metrics = top["metric"].astype(str).unique()
        row = {
            "dataset": dataset,
            "protocol": protocol,
            "metric": "/".join(metrics),
            "model_a": top["model"].iloc[0],
            "model_b": top["model"].iloc[1],
            "test_metric_a": top["test_metric"].iloc[0],
            "test_metric_b": top["test_metric"].iloc[1],
        }
        if len(metrics) > 1:
            columns, note = {}, f"the two models were scored with different metrics {list(metrics)}"
        else:
            paths = top["predictions_path"].tolist()
            columns, note = paired_test(metrics[0], paths, permutation_samples, seed)
        rows.append({**row, **columns, "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)
