"""The evaluation metrics of Table 1 (and of Fang et al. 2023 for the real-world datasets).

Every entry of `METRICS` has the signature `metric(y_true, scores) -> float`: `y_true` holds
integer labels [N] (or a multi-hot [N, C] for multi-label datasets); `scores` holds [N, C] class
scores (logits or probabilities: only their order within a row matters, except `macro_f1`,
which thresholds probabilities at 0.5). `top1_accuracy` and `mean_per_class_accuracy` also take
predicted labels [N].
"""

from __future__ import annotations

import numpy as np


def _predicted_labels(y_pred) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    return np.argmax(y_pred, axis=-1) if y_pred.ndim == 2 else y_pred.astype(np.int64)


def _check_lengths(y_true, y_pred) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} examples, the predictions {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no examples to score")


def top1_accuracy(y_true, y_pred) -> float:
    """Fraction of examples whose (arg-max) prediction is the label."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = _predicted_labels(y_pred)
    _check_lengths(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def mean_per_class_accuracy(y_true, y_pred) -> float:
    """Accuracy averaged over the classes present in `y_true` (FGVC Aircraft, Pets, Caltech-101,
    Flowers in Table 1): every class weighs the same whatever its size."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = _predicted_labels(y_pred)
    _check_lengths(y_true, y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def eleven_point_average_precision(positive, scores) -> float:
    """PASCAL VOC 2007 11-point interpolated AP of one class.

    AP = mean over recall levels t in {0, 0.1, ..., 1} of the highest precision reached at any
    recall >= t (0 where recall t is never reached). Examples are ranked by descending score.
    """
    positive = np.asarray(positive).astype(bool)
    scores = np.asarray(scores, np.float64)
    if not positive.any():
        raise ValueError("11-point AP is undefined for a class without positive examples")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    true_pos = np.cumsum(hits)
    precision = true_pos / np.arange(1, len(hits) + 1)
    recall = true_pos / hits.sum()
    levels = np.linspace(0.0, 1.0, 11)
    return float(
        np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in levels])
    )


def eleven_point_map(y_true_multi_hot, scores) -> float:
    """VOC 2007 classification mAP: 11-point interpolated AP averaged over classes.

    Not scikit-learn's `average_precision_score`, which sums precision at every recall step
    (no interpolation) and gives different numbers.
    """
    y_true = np.asarray(y_true_multi_hot)
    scores = np.asarray(scores, np.float64)
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise ValueError(
            f"eleven_point_map needs multi-hot labels and scores of the same [N, C] shape, got "
            f"{y_true.shape} and {scores.shape}"
        )
    _check_lengths(y_true, scores)
    present = np.flatnonzero(y_true.sum(axis=0) > 0)
    return float(
        np.mean([eleven_point_average_precision(y_true[:, c], scores[:, c]) for c in present])
    )


def quadratic_kappa(y_true, scores) -> float:
    """Quadratic weighted Cohen's kappa of the arg-max prediction (APTOS 2019, Fang et al.)."""
    from sklearn.metrics import cohen_kappa_score

    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = _predicted_labels(scores)
    _check_lengths(y_true, y_pred)
    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def macro_f1(y_true_multi_hot, scores) -> float:
    """F1 averaged over classes, positives = probability >= 0.5 (Human Protein Atlas)."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true_multi_hot).astype(np.int64)
    _check_lengths(y_true, scores)
    y_pred = (np.asarray(scores, np.float64) >= 0.5).astype(np.int64)
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve of a binary task (SIIM-ISIC melanoma); `scores` [N, 2] are
    ranked by score[:, 1] - score[:, 0] (monotone in the class-1 probability), or [N]."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(scores, np.float64)
    _check_lengths(y_true, scores)
    ranking = scores[:, 1] - scores[:, 0] if scores.ndim == 2 else scores
    return float(roc_auc_score(y_true, ranking))


METRICS = {
    "top1": top1_accuracy,
    "mean_per_class": mean_per_class_accuracy,
    "map11": eleven_point_map,
    "quadratic_kappa": quadratic_kappa,
    "macro_f1": macro_f1,
    "roc_auc": roc_auc,
}
