"""Metrics against hand-computed cases and independent implementations."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score

from transfer_tf.metrics import (
    METRICS,
    eleven_point_average_precision,
    eleven_point_map,
    macro_f1,
    mean_per_class_accuracy,
    quadratic_kappa,
    roc_auc,
    top1_accuracy,
)


def test_top1_accuracy_hand_case_labels_and_scores():
    y = [0, 1, 2, 2]
    assert top1_accuracy(y, [0, 2, 2, 1]) == 0.5
    scores = np.array([[3, 1, 0], [0, 1, 5], [0, 0, 9], [1, 2, 0]], float)  # argmax 0, 2, 2, 1
    assert top1_accuracy(y, scores) == 0.5
    assert METRICS["top1"](y, scores) == 0.5


def test_mean_per_class_accuracy_hand_case():
    # class 0: 2 of 3 right, class 1: 1 of 1 -> (2/3 + 1) / 2; plain accuracy would be 3/4.
    y, pred = [0, 0, 0, 1], [0, 0, 1, 1]
    assert mean_per_class_accuracy(y, pred) == pytest.approx(5 / 6)
    assert top1_accuracy(y, pred) == 0.75


def test_mean_per_class_accuracy_matches_sklearn_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    scores = rng.normal(size=(500, 7)) + 1.5 * np.eye(7)[y]
    expected = balanced_accuracy_score(y, scores.argmax(1))
    assert mean_per_class_accuracy(y, scores) == pytest.approx(expected)


def test_eleven_point_ap_hand_case_and_sklearn_differs():
    # Ranked: pos (P=1, R=.5), neg (P=.5, R=.5), pos (P=2/3, R=1).
    # 11-point: t = 0..0.5 -> 1 (6 levels), t = 0.6..1 -> 2/3 (5 levels): (6 + 10/3) / 11 = 28/33.
    positive, scores = [1, 0, 1], [0.9, 0.8, 0.7]
    assert eleven_point_average_precision(positive, scores) == pytest.approx(28 / 33)
    # scikit-learn's AP (no interpolation): 0.5 * 1 + 0.5 * 2/3 = 5/6 != 28/33.
    sk = average_precision_score(positive, scores)
    assert sk == pytest.approx(5 / 6)
    assert abs(sk - 28 / 33) > 0.01


def test_eleven_point_ap_more_hand_cases():
    assert eleven_point_average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert eleven_point_average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    # One positive ranked third of four: precision 1/3 at recall 1 for every level.
    assert eleven_point_average_precision([0, 0, 1, 0], [4, 3, 2, 1]) == pytest.approx(1 / 3)


def test_eleven_point_map_averages_classes_and_skips_absent_ones():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.4], [0.7, 0.3, 0.2]])
    # class 0: the hand case above (28/33); class 1: its positive ranks first (1.0); class 2 has
    # no positives and is left out.
    assert eleven_point_map(y, scores) == pytest.approx((28 / 33 + 1.0) / 2)
    assert METRICS["map11"](y, scores) == pytest.approx((28 / 33 + 1.0) / 2)


def test_eleven_point_map_bad_input():
    with pytest.raises(ValueError, match="same"):
        eleven_point_map(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="without positive"):
        eleven_point_average_precision([0, 0], [0.1, 0.2])


def test_length_mismatch_and_empty_input_raise():
    with pytest.raises(ValueError, match="3 examples"):
        top1_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="no examples"):
        mean_per_class_accuracy([], [])


def _weighted_kappa(y, pred, k):
    observed = np.zeros((k, k))
    for a, b in zip(y, pred, strict=True):
        observed[a, b] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.subtract.outer(np.arange(k), np.arange(k)) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_quadratic_kappa_against_formula():
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2, 2, 4])
    pred = np.array([0, 1, 1, 3, 3, 0, 2, 2, 2, 4])
    assert quadratic_kappa(y, np.eye(5)[pred]) == pytest.approx(_weighted_kappa(y, pred, 5))
    assert quadratic_kappa(y, np.eye(5)[y]) == pytest.approx(1.0)


def test_macro_f1_hand_case():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.8], [0.1, 0.1]])
    # class 0: tp=1, fp=1, fn=1 -> F1 = 0.5; class 1: tp=2, fp=0, fn=0 -> 1.0.
    assert macro_f1(y, probs) == pytest.approx(0.75)


def test_roc_auc_hand_case():
    y = [0, 0, 1, 1]
    p1 = np.array([0.1, 0.6, 0.4, 0.8])
    # Positive-negative pairs ranked right: (0.4>0.1), (0.8>0.1), (0.8>0.6) of 4 -> 0.75.
    assert roc_auc(y, np.stack([1 - p1, p1], 1)) == pytest.approx(0.75)
    assert roc_auc(y, p1) == pytest.approx(0.75)


def test_registry_metrics_all_exist():
    from transfer_tf.data import DATASETS

    assert {spec.metric for spec in DATASETS.values()} <= set(METRICS)
