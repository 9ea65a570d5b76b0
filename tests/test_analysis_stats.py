"""Every statistic in transfer_tf.analysis.stats against scipy/numpy or a hand-computed case."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from transfer_tf.analysis import stats


def test_logit_matches_definition_and_handles_0_and_1():
    p = np.array([0.1, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(stats.logit(p), np.log(p / (1 - p)))
    np.testing.assert_allclose(stats.inverse_logit(stats.logit(p)), p)
    # Clipping without n.
    np.testing.assert_allclose(
        stats.logit([0.0, 1.0]), [np.log(1e-4 / (1 - 1e-4)), np.log((1 - 1e-4) / 1e-4)]
    )
    # Half-count correction with n: (k + 0.5) / (n + 1); 0 of 9 correct -> 0.05, 9 of 9 -> 0.95.
    np.testing.assert_allclose(
        stats.logit([0.0, 1.0], n=9), [np.log(0.05 / 0.95), np.log(0.95 / 0.05)]
    )
    assert np.isnan(stats.logit([np.nan, 0.5])[0])
    with pytest.raises(ValueError, match="divide percentages by 100"):
        stats.logit([75.0])
    with pytest.raises(ValueError, match="n"):
        stats.logit([0.5], n=0)


def test_morey_standard_error_hand_computed_3x4():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 3.0], [0.0, 5.0, 1.0, 2.0]])
    # Dataset means over models: [1, 3, 3, 3]. Adjusted rows:
    #   model 0: [0, -1, 0, 1]   -> sample sd = sqrt(2/3)
    #   model 1: [1, -1, 2, 0]   -> mean 0.5, deviations [.5,-1.5,1.5,-.5], ss = 5, sd = sqrt(5/3)
    #   model 2: [-1, 2, -2, -1] -> mean -0.5, deviations [-.5,2.5,-1.5,-.5], ss = 9, sd = sqrt(3)
    sd = np.array([np.sqrt(2 / 3), np.sqrt(5 / 3), np.sqrt(3.0)])
    expected = sd / np.sqrt(4) * np.sqrt(3 / 2)
    np.testing.assert_allclose(stats.morey_standard_error(x), expected)
    # Adding a per-dataset offset (dataset difficulty) leaves the SE unchanged.
    np.testing.assert_allclose(stats.morey_standard_error(x + np.array([5, -3, 0, 10.0])), expected)


def test_morey_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        stats.morey_standard_error(np.ones(4))
    with pytest.raises(ValueError, match="missing"):
        stats.morey_standard_error(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2 models"):
        stats.morey_standard_error(np.ones((1, 4)))


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = 0.8 * x + rng.normal(scale=0.5, size=12)
    result = stats.correlate(x, y)
    ref_p = scipy_stats.pearsonr(x, y)
    ref_s = scipy_stats.spearmanr(x, y)
    assert result.pearson_r == pytest.approx(ref_p.statistic)
    assert result.pearson_p == pytest.approx(ref_p.pvalue)
    assert result.spearman_rho == pytest.approx(ref_s.statistic)
    assert result.spearman_p == pytest.approx(ref_s.pvalue)
    ref_line = scipy_stats.linregress(x, y)
    assert result.slope == pytest.approx(ref_line.slope)
    assert result.intercept == pytest.approx(ref_line.intercept)
    assert result.n == 12
    with pytest.raises(ValueError, match="same length"):
        stats.correlate(x, y[:5])
    with pytest.raises(ValueError, match="all equal"):
        stats.correlate(np.ones(5), np.arange(5.0))


def test_bootstrap_band_contains_fit_and_is_seeded():
    rng = np.random.default_rng(1)
    x = np.linspace(0.5, 1.5, 16)
    y = 0.2 + 2.0 * x + rng.normal(scale=0.05, size=16)
    boot = stats.bootstrap_regression(x, y, num_samples=500, seed=3)
    fit = np.polyval(np.polyfit(x, y, 1), boot.grid)
    assert np.all(boot.band_low <= fit) and np.all(fit <= boot.band_high)
    assert boot.slope_ci[0] < 2.0 < boot.slope_ci[1]
    again = stats.bootstrap_regression(x, y, num_samples=500, seed=3)
    np.testing.assert_array_equal(boot.band_low, again.band_low)
    # The band and the CIs are percentiles over bootstrap resamples: recompute them by hand.
    rng2 = np.random.default_rng(3)
    idx = rng2.integers(0, 16, size=(500, 16))
    lines = [np.polyval(np.polyfit(x[i], y[i], 1), boot.grid[0]) for i in idx]
    assert boot.band_low[0] == pytest.approx(np.percentile(lines, 2.5))
    slopes = [np.polyfit(x[i], y[i], 1)[0] for i in idx]
    rs = [np.corrcoef(x[i], y[i])[0, 1] for i in idx]
    assert boot.slope_ci == pytest.approx(tuple(np.percentile(slopes, [2.5, 97.5])))
    assert boot.r_ci == pytest.approx(tuple(np.percentile(rs, [2.5, 97.5])))


def test_mcnemar_matches_scipy_binomtest():
    rng = np.random.default_rng(2)
    for n, pa, pb in [(200, 0.7, 0.6), (500, 0.8, 0.8), (57, 0.5, 0.2)]:
        a = rng.random(n) < pa
        b = rng.random(n) < pb
        result = stats.mcnemar_test(a, b)
        a_only, b_only = int(np.sum(a & ~b)), int(np.sum(b & ~a))
        ref = scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert (result.a_only, result.b_only, result.n) == (a_only, b_only, n)
        assert result.p_value == pytest.approx(ref, rel=1e-9)
    assert stats.mcnemar_test([1, 0, 1], [1, 0, 1]).p_value == 1.0
    with pytest.raises(ValueError, match="equal length"):
        stats.mcnemar_test([True, False], [True])
    with pytest.raises(ValueError, match="correctness"):
        stats.mcnemar_test([0, 2], [1, 1])


def test_permutation_agrees_with_exact_test():
    rng = np.random.default_rng(4)
    a = rng.random(300) < 0.75
    b = rng.random(300) < 0.68
    exact = stats.mcnemar_test(a, b).p_value
    perm = stats.permutation_test(a, b, num_samples=20000, seed=0)
    # Monte-Carlo standard error of a p-value estimate is sqrt(p (1 - p) / S).
    assert abs(perm.p_value - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-3
    assert perm.p_value == stats.permutation_test(a, b, num_samples=20000, seed=0).p_value
    assert (perm.a_only, perm.b_only) == (int(np.sum(a & ~b)), int(np.sum(b & ~a)))
    # Equal accuracy: the statistic is 0 and every permutation is at least as extreme.
    assert stats.permutation_test([1, 0, 1, 0], [0, 1, 0, 1], num_samples=100).p_value == 1.0


def test_paired_t_and_wilcoxon_match_scipy():
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, 0.3, size=9)
    b = a - rng.normal(0.2, 0.2, size=9)
    t = stats.paired_t_test(a, b)
    ref_t = scipy_stats.ttest_rel(a, b)
    assert t.statistic == pytest.approx(ref_t.statistic)
    assert t.p_value == pytest.approx(ref_t.pvalue)
    assert t.mean_difference == pytest.approx(np.mean(a - b))
    w = stats.wilcoxon_signed_rank(a, b)
    ref_w = scipy_stats.wilcoxon(a, b)
    assert w.statistic == pytest.approx(ref_w.statistic)
    assert w.p_value == pytest.approx(ref_w.pvalue)
    assert stats.wilcoxon_signed_rank(a, a).p_value == 1.0
    # Constant differences (up to rounding): scipy's t is infinite and p = 0; we say so directly.
    shifted = stats.paired_t_test(a + 0.3, a)
    assert shifted.p_value == 0.0 and shifted.mean_difference == pytest.approx(0.3)
    assert stats.paired_t_test(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="NaN"):
        stats.wilcoxon_signed_rank([1.0, np.nan], [0.0, 0.0])


def test_steps_to_fraction_of_max_odds_hand_computed():
    steps = [0, 100, 200, 300, 400]
    acc = [0.5, 0.8, 0.89, 0.9, 0.88]  # odds: 1, 4, 8.09, 9, 7.33; 90% of max odds = 8.1
    assert stats.steps_to_fraction_of_max_odds(steps, acc) == 300
    assert stats.steps_to_fraction_of_max_odds(steps, acc, fraction=0.85) == 200
    # Unsorted input is sorted by step first.
    assert stats.steps_to_fraction_of_max_odds(steps[::-1], acc[::-1]) == 300
    assert stats.geometric_mean([1, 100]) == pytest.approx(10.0)


def test_fisher_r_ci_against_hand_values_and_three_points():
    # r = 0.5 over 28 pairs: atanh(0.5) = 0.549306, half width 1.959964 / 5 = 0.391993.
    low, high = stats.fisher_r_ci(0.5, 28)
    assert low == pytest.approx(np.tanh(0.549306 - 0.391993), abs=1e-6)
    assert high == pytest.approx(np.tanh(0.549306 + 0.391993), abs=1e-6)
    assert (round(low, 3), round(high, 3)) == (0.156, 0.736)
    # Three models: nothing can be said, however collinear (the bootstrap would say [0.997, 1]).
    assert stats.fisher_r_ci(0.997, 3) == (-1.0, 1.0)
