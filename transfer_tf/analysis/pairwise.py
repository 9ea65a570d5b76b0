"""Two networks on one dataset (Sec. 3, Supp. A.1.1): tests on the per-example test predictions
of the two best models per dataset x protocol, read from the sweeps' predictions files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_tf import results
from transfer_tf.analysis import stats


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


def _pair_test(paths: list, permutation_samples: int, seed: int) -> tuple[dict, str]:
    """(test columns, note) for the predictions files of models a and b."""
    if not all(isinstance(p, str) and p for p in paths):
        return {}, "no predictions file recorded"
    try:
        loaded = [results.load_predictions(p) for p in paths]
    except (OSError, ValueError) as e:
        return {}, f"cannot read predictions: {e}"
    correct = [correctness(p) for p in loaded]
    if any(c is None for c in correct):
        return {}, "multi-label or malformed predictions: no per-example correctness"
    if not np.array_equal(loaded[0].get("y_true"), loaded[1].get("y_true")):
        return {}, "the two predictions files list different test examples (y_true differs)"
    exact = stats.mcnemar_test(correct[0], correct[1])
    perm = stats.permutation_test(correct[0], correct[1], permutation_samples, seed)
    columns = {
        "n_examples": exact.n,
        "a_only": exact.a_only,
        "b_only": exact.b_only,
        "mcnemar_p": exact.p_value,
        "permutation_p": perm.p_value,
    }
    return columns, ""


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
        columns, note = _pair_test(top["predictions_path"].tolist(), permutation_samples, seed)
        rows.append({**row, **columns, "note": note})
    return pd.DataFrame(rows)
