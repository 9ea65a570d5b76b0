"""Two networks on one dataset, on the dataset's metric: the permutation tests of mean per-class
accuracy and 11-point mAP against hand-computed and enumerated null distributions, and the
report's per-metric dispatch on real predictions files."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from transfer_tf import metrics
from transfer_tf.analysis import pairwise, stats


def _mean_per_class_case():
    """Top-1 McNemar and the per-class permutation test disagree.

    Class 0 has 2000 test examples, class 1 has 10. On class 0, a alone is right on 70 examples
    and b alone on 30; on class 1, b alone is right on 2. Top-1: 70 vs 32 discordant examples,
    McNemar p ~ 2e-4. Mean per-class accuracy weighs each class 1/2: a class-0 example weighs
    1 / 4000, a class-1 example 1 / 20, so the difference is 40 / 4000 - 2 / 20 = -0.09 (b is
    better) and the sign of the two class-1 terms decides |T*|: with S1 = the sum of their two
    random signs, |T*| >= 0.09 exactly when S1 = +-2 (probability 1/2; the 100 class-0 terms move
    T* by 0.00025 x S0, and |S0| > 40 has probability ~1e-4). So p = 0.5.
    """
    y_true = np.r_[np.zeros(2000, int), np.ones(10, int)]
    correct_a = np.ones(2010, bool)
    correct_b = np.ones(2010, bool)
    correct_b[:70] = False  # a alone right
    correct_a[70:100] = False  # b alone right
    correct_a[2000:2002] = False  # b alone right on class 1
    pred_a = np.where(correct_a, y_true, 1 - y_true)
    pred_b = np.where(correct_b, y_true, 1 - y_true)
    return y_true, pred_a, pred_b


def test_mean_per_class_permutation_disagrees_with_top1_mcnemar():
    y_true, pred_a, pred_b = _mean_per_class_case()
    mcnemar = stats.mcnemar_test(pred_a == y_true, pred_b == y_true)
    assert (mcnemar.a_only, mcnemar.b_only) == (70, 32)
    assert mcnemar.p_value == pytest.approx(scipy_stats.binomtest(70, 102).pvalue)
    assert mcnemar.p_value < 0.001
    result = stats.mean_per_class_permutation_test(y_true, pred_a, pred_b, 20000, seed=0)
    expected = metrics.mean_per_class_accuracy(y_true, pred_a) - metrics.mean_per_class_accuracy(
        y_true, pred_b
    )
    assert result.difference == pytest.approx(expected) and expected == pytest.approx(-0.09)
    assert abs(result.p_value - 0.5) < 4 * np.sqrt(0.25 / 20000)
    assert (result.n, result.num_samples) == (2010, 20000)
    # Scores [N, C] are read by arg-max, class ids as they are: the same test.
    scores_a = np.eye(2)[pred_a]
    again = stats.mean_per_class_permutation_test(y_true, scores_a, pred_b, 20000, seed=0)
    assert again == result


def test_mean_per_class_permutation_with_equal_class_sizes_is_the_top1_permutation_test():
    """With every class the same size all weights are equal: the same p as `permutation_test`."""
    rng = np.random.default_rng(3)
    y_true = np.repeat(np.arange(4), 50)
    pred_a = np.where(rng.random(200) < 0.8, y_true, (y_true + 1) % 4)
    pred_b = np.where(rng.random(200) < 0.7, y_true, (y_true + 2) % 4)
    weighted = stats.mean_per_class_permutation_test(y_true, pred_a, pred_b, 3000, seed=5)
    plain = stats.permutation_test(pred_a == y_true, pred_b == y_true, 3000, seed=5)
    assert weighted.p_value == plain.p_value
    assert weighted.difference == pytest.approx(
        np.mean(pred_a == y_true) - np.mean(pred_b == y_true)
    )


def test_mean_per_class_permutation_rejects_bad_input():
    with pytest.raises(ValueError, match=r"class ids \[N\]"):
        stats.mean_per_class_permutation_test(np.zeros((3, 2)), [0, 1, 0], [0, 1, 0])
    with pytest.raises(ValueError, match="pred_b must be class ids"):
        stats.mean_per_class_permutation_test([0, 1, 0], [0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="num_samples"):
        stats.mean_per_class_permutation_test([0, 1], [0, 1], [1, 0], num_samples=0)


def _multi_label(rng, n, c):
    y_true = (rng.random((n, c)) < 0.3).astype(np.float32)
    y_true[0] = 1.0  # every class has a positive
    return y_true


def test_eleven_point_ap_rows_matches_the_metric_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(40) < 0.3
    positive[0] = True
    scores = np.round(rng.random((5, 40)), 1)  # many ties
    expected = [metrics.eleven_point_average_precision(positive, row) for row in scores]
    np.testing.assert_allclose(stats.eleven_point_ap_rows(positive, scores), expected, atol=1e-12)
    with pytest.raises(ValueError, match="without positive"):
        stats.eleven_point_ap_rows(np.zeros(4, bool), scores[:, :4])


def test_map_permutation_difference_is_the_map_difference_and_ignores_score_scales():
    rng = np.random.default_rng(1)
    y_true = _multi_label(rng, 60, 5)
    y_true[:, 4] = 0  # a class without positives is left out, as eleven_point_map does
    a = y_true + rng.normal(scale=0.8, size=y_true.shape)
    b = y_true + rng.normal(scale=1.2, size=y_true.shape)
    result = stats.map_permutation_test(y_true, a, b, 500, seed=0)
    expected = metrics.eleven_point_map(y_true, a) - metrics.eleven_point_map(y_true, b)
    assert result.difference == pytest.approx(expected)
    # A monotone transform of one network's scores (logits vs probabilities) changes nothing.
    squashed = stats.map_permutation_test(y_true, a, 1.0 / (1.0 + np.exp(-b)), 500, seed=0)
    assert squashed == result


def _exact_map_p(y_true, a, b) -> float:
    """Every one of the 2^N swap patterns, with the metric itself on within-class ranks."""
    present = y_true.sum(axis=0) > 0
    y, ra, rb = y_true[:, present], a[:, present], b[:, present]
    ra = scipy_stats.rankdata(ra, axis=0) / len(y)
    rb = scipy_stats.rankdata(rb, axis=0) / len(y)
    observed = abs(metrics.eleven_point_map(y, ra) - metrics.eleven_point_map(y, rb))
    extreme = 0
    patterns = list(itertools.product((False, True), repeat=len(y)))
    for swap in patterns:
        swap = np.array(swap)[:, None]
        pa, pb = np.where(swap, rb, ra), np.where(swap, ra, rb)
        diff = metrics.eleven_point_map(y, pa) - metrics.eleven_point_map(y, pb)
        extreme += abs(diff) >= observed - 1e-12
    return extreme / len(patterns)


def test_map_permutation_p_matches_full_enumeration():
    rng = np.random.default_rng(2)
    y_true = _multi_label(rng, 9, 3)
    a = y_true + rng.normal(scale=0.3, size=y_true.shape)
    b = rng.normal(size=y_true.shape)
    exact = _exact_map_p(y_true, a, b)
    result = stats.map_permutation_test(y_true, a, b, 20000, seed=0)
    assert abs(result.p_value - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-3
    assert 0.0 < exact < 0.5  # a informative, b noise: far from 1


def test_map_permutation_rejects_bad_input():
    y_true = np.eye(3)
    with pytest.raises(ValueError, match="same \\[N, C\\] shape"):
        stats.map_permutation_test(y_true, np.ones((3, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        stats.map_permutation_test(y_true, np.full((3, 3), np.nan), np.ones((3, 3)))


def _write(tmp_path, name, **arrays):
    path = tmp_path / f"{name}.predictions.npz"
    np.savez(path, **arrays)
    return str(path)


def _best(rows):
    return pd.DataFrame(rows).assign(protocol="logreg")


def test_top_model_tests_use_each_datasets_metric(tmp_path):
    y_true, pred_a, pred_b = _mean_per_class_case()
    rng = np.random.default_rng(4)
    multi = _multi_label(rng, 30, 4)
    ml_a, ml_b = multi + rng.normal(size=multi.shape), rng.normal(size=multi.shape)
    rows = [
        # test_metric only ranks the models; the tests read the predictions files.
        {
            "dataset": "pets",
            "model": "a",
            "metric": "mean_per_class",
            "test_metric": 0.9,
            "predictions_path": _write(tmp_path, "pa", y_true=y_true, y_pred=pred_a),
        },
        {
            "dataset": "pets",
            "model": "b",
            "metric": "mean_per_class",
            "test_metric": 0.8,
            "predictions_path": _write(tmp_path, "pb", y_true=y_true, y_pred=pred_b),
        },
        # VOC: logistic regression stores 0/1 decisions as y_pred and scores as y_score.
        {
            "dataset": "voc",
            "model": "a",
            "metric": "map11",
            "test_metric": 0.7,
            "predictions_path": _write(
                tmp_path,
                "va",
                y_true=multi,
                y_pred=(ml_a > 0).astype(np.int8),
                y_score=ml_a.astype(np.float32),
            ),
        },
        {
            "dataset": "voc",
            "model": "b",
            "metric": "map11",
            "test_metric": 0.6,
            "predictions_path": _write(
                tmp_path, "vb", y_true=multi, y_pred=ml_b.astype(np.float32)
            ),
        },
        {
            "dataset": "top",
            "model": "a",
            "metric": "top1",
            "test_metric": 0.9,
            "predictions_path": _write(tmp_path, "ta", y_true=y_true, y_pred=pred_a),
        },
        {
            "dataset": "top",
            "model": "b",
            "metric": "top1",
            "test_metric": 0.8,
            "predictions_path": _write(tmp_path, "tb", y_true=y_true[::-1], y_pred=pred_b),
        },
        {
            "dataset": "kappa",
            "model": "a",
            "metric": "quadratic_kappa",
            "test_metric": 0.9,
            "predictions_path": None,
        },
        {
            "dataset": "kappa",
            "model": "b",
            "metric": "quadratic_kappa",
            "test_metric": 0.8,
            "predictions_path": None,
        },
    ]
    table = pairwise.top_model_tests(_best(rows), 2000, 0).set_index("dataset")
    assert list(table.columns) == [c for c in pairwise.COLUMNS if c != "dataset"]
    pets = table.loc["pets"]
    ref = stats.mean_per_class_permutation_test(y_true, pred_a, pred_b, 2000, 0)
    assert pets["test"] == "permutation (mean per-class accuracy)" and pets["note"] == ""
    assert (pets["p_value"], pets["difference"]) == (ref.p_value, ref.difference)
    assert pets["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(70, 102).pvalue)
    voc = table.loc["voc"]
    ref = stats.map_permutation_test(multi, ml_a, ml_b, 2000, 0)
    assert voc["test"] == "permutation (11-point mAP)" and np.isnan(voc["mcnemar_p"])
    assert voc["p_value"] == ref.p_value and voc["difference"] == pytest.approx(ref.difference)
    assert "different test examples" in table.loc["top", "note"]
    assert "no paired test for metric 'quadratic_kappa'" in table.loc["kappa", "note"]


def test_multi_label_decisions_without_scores_are_named(tmp_path):
    multi = np.eye(4)[np.arange(8) % 4]
    rows = [
        {
            "dataset": "voc",
            "model": m,
            "metric": "map11",
            "test_metric": t,
            "predictions_path": _write(tmp_path, m, y_true=multi, y_pred=multi.astype(np.int8)),
        }
        for m, t in (("a", 0.9), ("b", 0.8))
    ]
    note = pairwise.top_model_tests(_best(rows), 100, 0)["note"].iloc[0]
    assert "float scores" in note
