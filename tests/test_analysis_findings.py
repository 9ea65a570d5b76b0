"""Verdicts as strict as the paper's claims, each of the three earned: synthetic numbers just
above and below each threshold, oracles from scipy, and every paper number from `PAPER`."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from transfer_tf.analysis import comparisons, findings, paper, separation, stats
from transfer_tf.analysis.findings import FAILS, HOLDS, INCONCLUSIVE, UNCHECKED


def _counts(wins, total, winner="finetune", loser="logreg"):
    return {"winner": winner, "loser": loser, "wins": wins, "ties": 0, "total": total}


def _clopper_pearson(k, n):
    """The exact interval from the beta distribution (the textbook form, not binomtest)."""
    low = scipy_stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    high = scipy_stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return low, high


@pytest.mark.parametrize(
    "wins, total, verdict",
    [
        (16, 20, HOLDS),  # CI 0.563-0.943: above 1/2 and reaches 179/192 = 0.932
        (15, 20, FAILS),  # CI 0.509-0.913: wholly below the paper's 0.932
        (6, 6, HOLDS),  # CI 0.541-1
        (5, 5, INCONCLUSIVE),  # CI 0.478-1: includes 1/2
        (3, 20, FAILS),  # logistic regression wins: below 1/2
    ],
)
def test_win_rate_verdict_against_179_of_192(wins, total, verdict):
    low, high = _clopper_pearson(wins, total)
    interval = stats.binomial_proportion(wins, total)
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert (low <= 0.5 <= high) == (verdict == INCONCLUSIVE)
    finding = findings.win_finding("finetune_beats_logreg", _counts(wins, total))
    assert finding.verdict == verdict
    assert f"{low * 100:.1f} to {high * 100:.1f}%" in finding.ours
    assert "179 of 192" in finding.paper
    assert ("which includes 50%" in finding.ours) == (verdict == INCONCLUSIVE)


def test_win_rate_verdict_against_189_of_192():
    # 19 of 20: CI 0.751-0.9987 reaches 189/192 = 0.984; 18 of 20: CI up to 0.9877 also does.
    assert (
        findings.win_finding("finetune_beats_scratch", _counts(19, 20, loser="scratch")).verdict
        == HOLDS
    )
    # 58 of 60 reaches 0.9959; a larger sample with the same rate, 290 of 300, does not.
    assert stats.binomial_proportion(290, 300).high < 189 / 192
    assert (
        findings.win_finding("finetune_beats_scratch", _counts(290, 300, loser="scratch")).verdict
        == FAILS
    )
    assert (
        findings.win_finding("finetune_beats_scratch", _counts(0, 0, loser="scratch")).verdict
        == UNCHECKED
    )


def test_binomial_proportion_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes <= trials"):
        stats.binomial_proportion(5, 4)
    with pytest.raises(ValueError, match="trials >= 1"):
        stats.binomial_proportion(0, 0)


def _fit(r, low, high, n_models=3):
    return {"r": r, "r_ci": (low, high), "p": 0.5, "spearman_rho": r, "n_models": n_models}


@pytest.mark.parametrize(
    "low, high, verdict",
    [
        (-1.0, 1.0, INCONCLUSIVE),  # r = -0.73 over three models: was "does not hold"
        (0.0, 0.999, INCONCLUSIVE),  # touches zero
        (0.001, 0.99, HOLDS),  # just above zero, reaches the paper's 0.99
        (0.2, 0.989, FAILS),  # above zero, wholly below the paper's 0.99
        (-0.9, -0.2, FAILS),  # a negative correlation
    ],
)
def test_correlation_verdict_needs_its_ci_above_zero(low, high, verdict):
    finding = findings.correlation_finding("logreg", _fit(-0.73, low, high), None)
    assert finding.verdict == verdict and finding.ours.endswith(f": {verdict}.")


def test_correlation_finding_without_a_fit_cannot_be_checked():
    finding = findings.correlation_finding("finetune", None, "2 models; r needs 3")
    assert (finding.verdict, finding.ours) == (UNCHECKED, "2 models; r needs 3")


def _wilcoxon_rows(n_datasets, n_significant, n_models):
    p_min = stats.wilcoxon_min_attainable_p(n_models)
    return pd.DataFrame(
        {
            "comparison": "finetune vs logreg",
            "n_models": n_models,
            "wilcoxon_min_attainable_p": p_min,
            "mean_logit_difference": 0.3,
            "wilcoxon_p": [p_min if i < n_significant else 0.2 for i in range(n_datasets)],
        }
    )


@pytest.mark.parametrize(
    "n_datasets, n_significant, n_models, verdict",
    [
        (12, 11, 16, HOLDS),  # the paper's 11 of 12
        (12, 10, 16, FAILS),  # one short
        (3, 3, 8, HOLDS),  # 8 models: the smallest p is 2 / 2^8 < 0.01
        (3, 2, 8, FAILS),  # 2 of 3 < 11 of 12
        (3, 3, 7, INCONCLUSIVE),  # 7 models cannot reach p < 0.01 (2 / 2^7 = 0.016)
    ],
)
def test_per_dataset_significance_against_11_of_12(n_datasets, n_significant, n_models, verdict):
    finding = findings.wilcoxon_finding(_wilcoxon_rows(n_datasets, n_significant, n_models))
    assert finding.verdict == verdict
    assert "needs 8 models" in finding.ours


def test_significance_in_the_wrong_direction_does_not_count():
    rows = _wilcoxon_rows(12, 12, 16).assign(mean_logit_difference=-0.3)
    assert findings.wilcoxon_finding(rows).verdict == FAILS
    assert findings.wilcoxon_finding(pd.DataFrame()).verdict == UNCHECKED


@pytest.mark.parametrize(
    "ci, verdict",
    [
        ((1.2, 30.0), HOLDS),
        ((2.0, 10.0), FAILS),
        ((0.8, 20.0), INCONCLUSIVE),
        ((0.2, 0.9), FAILS),
    ],
)
def test_convergence_verdict_against_17x(ci, verdict):
    conv = {
        "n_pairs": 5,
        "finetune_steps_geomean": 10.0,
        "scratch_steps_geomean": 50.0,
        "speedup": 5.0,
        "speedup_ci": ci,
    }
    assert findings.convergence_finding(conv).verdict == verdict
    one = {k: v for k, v in conv.items() if k != "speedup_ci"} | {"n_pairs": 1}
    assert findings.convergence_finding(one).verdict == INCONCLUSIVE
    assert findings.convergence_finding({}).verdict == UNCHECKED


def test_geometric_mean_ratio_matches_a_t_interval_on_log_ratios():
    scratch, finetune = np.array([400.0, 900, 250, 1600]), np.array([20.0, 30, 50, 40])
    interval = stats.geometric_mean_ratio(scratch, finetune)
    logs = np.log(scratch / finetune)
    ci = scipy_stats.t.interval(0.95, len(logs) - 1, logs.mean(), scipy_stats.sem(logs))
    assert interval.estimate == pytest.approx(np.exp(logs.mean()))
    assert (interval.low, interval.high) == pytest.approx(tuple(np.exp(ci)))
    with pytest.raises(ValueError, match="positive"):
        stats.geometric_mean_ratio([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        stats.geometric_mean_ratio([1.0], [1.0])


def test_scratch_correlates_less_and_its_size_split():
    fits = {
        "logreg": _fit(0.95, 0.9, 0.99),
        "finetune": _fit(0.9, 0.8, 0.97),
        "scratch": _fit(0.5, 0.2, 0.8),
    }
    assert findings.scratch_correlation_finding(fits).verdict == HOLDS  # 0.9 above 0.2-0.8
    fits["scratch"] = _fit(0.8, 0.6, 0.95)
    assert findings.scratch_correlation_finding(fits).verdict == INCONCLUSIVE
    fits["scratch"] = _fit(0.99, 0.95, 1.0)
    assert findings.scratch_correlation_finding(fits).verdict == FAILS

    def by_size(small, large):
        return {
            "small": {"fit": small, "reason": None, "datasets": ["a", "b", "c"]},
            "large": {"fit": large, "reason": None, "datasets": ["d", "e"]},
            "unknown": [],
        }

    split = by_size(_fit(0.29, -0.2, 0.7), _fit(0.86, 0.6, 0.95))
    finding = findings.scratch_size_finding(split)
    assert finding.verdict == HOLDS and "on 3 small and 0.86" in finding.ours
    assert (
        findings.scratch_size_finding(by_size(_fit(0.29, -0.2, 0.9), _fit(0.86, 0.6, 0.95))).verdict
        == INCONCLUSIVE
    )
    missing = by_size(None, _fit(0.86, 0.6, 0.95))
    missing["small"]["reason"], missing["unknown"] = "no small dataset", ["sklearn_digits"]
    finding = findings.scratch_size_finding(missing)
    assert finding.verdict == UNCHECKED and "no small dataset" in finding.ours
    assert "sklearn_digits" in finding.ours
    assert "10,000 training examples" in finding.finding


def _sample(name, silhouette, spread=0.01, paired=True):
    rng = np.random.default_rng(len(name))
    values = silhouette + spread * rng.standard_normal(30)
    labels = np.arange(30) % 10 if paired else rng.permutation(30) % 10
    return {
        "name": name,
        "silhouette": float(values.mean()),
        "n_classes": 10,
        "n_examples": 30,
        "labels": labels,
        "silhouette_values": values,
    }


def test_feature_space_majority_and_tie():
    info = pd.DataFrame(
        {
            "model": ["a_fair", "a_default", "b_fair", "b_default"],
            "architecture": ["a", "a", "b", "b"],
            "settings": ["fair", "inception_default"] * 2,
        }
    ).set_index("model", drop=False)
    samples = [
        _sample("a_fair/x", 0.3),
        _sample("a_default/x", 0.1),
        _sample("b_fair/x", 0.1),
        _sample("b_default/x", 0.2),
    ]
    finding = findings.feature_space_finding(samples, info)
    assert finding.verdict == INCONCLUSIVE and "1 of 2 pairs" in finding.ours
    assert "our measure, not the paper's" in finding.ours
    samples[2] = _sample("b_fair/x", 0.4)
    assert findings.feature_space_finding(samples, info).verdict == HOLDS
    # A difference within the per-example scatter is no evidence either way.
    noisy = [_sample("a_fair/x", 0.087, spread=0.3), _sample("a_default/x", 0.086, spread=0.3)]
    finding = findings.feature_space_finding(noisy, info)
    assert finding.verdict == INCONCLUSIVE and "0 of 1 pairs" in finding.ours


def test_separation_test_pairs_the_same_examples_else_compares_distributions():
    fair, default = _sample("a_fair/x", 0.3), _sample("a_default/x", 0.1)
    expected = scipy_stats.wilcoxon(fair["silhouette_values"], default["silhouette_values"])
    assert separation.separation_test(fair, default) == pytest.approx(expected.pvalue)
    other = _sample("a_default/x", 0.1, paired=False)
    expected = scipy_stats.mannwhitneyu(fair["silhouette_values"], other["silhouette_values"])
    assert separation.separation_test(fair, other) == pytest.approx(expected.pvalue)


def _effects(*rows):
    return pd.DataFrame(list(rows), columns=comparisons.EFFECT_COLUMNS)


@pytest.mark.parametrize(
    "rows, verdict",
    [
        ([("a", "logreg", 3, 0.5, 0.01), ("a", "finetune", 3, 0.1, 0.3)], HOLDS),
        ([("a", "logreg", 3, 0.5, 0.01)], HOLDS),  # no fine-tuning to compare
        ([("a", "logreg", 3, 0.5, 0.01), ("a", "finetune", 3, 0.6, 0.01)], FAILS),  # as large
        ([("a", "logreg", 3, -0.5, 0.01)], FAILS),  # clearly the other way
        ([("a", "logreg", 3, 0.5, 0.2)], INCONCLUSIVE),  # p >= 0.05
        ([("a", "logreg", 1, 0.5, np.nan)], INCONCLUSIVE),  # one dataset: no test
        ([("a", "logreg", 3, 0.5, 0.01), ("b", "logreg", 3, 0.5, 0.2)], INCONCLUSIVE),  # 1 of 2
        ([], UNCHECKED),
    ],
)
def test_settings_verdict_needs_a_clear_effect_on_most_architectures(rows, verdict):
    assert findings.settings_finding(_effects(*rows)).verdict == verdict


def test_settings_effect_tests_match_a_paired_t_test():
    logits = {"fair": [1.0, 0.5, 2.0], "inception_default": [0.6, 0.4, 1.5]}
    best = pd.DataFrame(
        [
            {
                "protocol": "logreg",
                "architecture": "a",
                "settings": s,
                "model": f"a_{s}",
                "dataset": d,
                "logit": v,
            }
            for s, values in logits.items()
            for d, v in zip("xyz", values, strict=True)
        ]
    )
    row = comparisons.settings_effect_tests(best, "logreg").iloc[0]
    ref = scipy_stats.ttest_rel(logits["fair"], logits["inception_default"])
    assert (row["n_datasets"], row["t_p"]) == (3, pytest.approx(ref.pvalue))
    assert row["fair_minus_default"] == pytest.approx(np.mean([0.4, 0.1, 0.5]))
    assert comparisons.settings_effect_tests(best, "finetune").empty


def test_every_paper_number_in_the_findings_comes_from_the_constants_table(monkeypatch):
    """Change the table; the findings' paper numbers and their verdicts follow it."""
    table = dict(paper.PAPER)
    table["r_logreg"] = dataclasses.replace(table["r_logreg"], value=0.5, quote="r = 0.5")
    table["finetune_beats_logreg"] = dataclasses.replace(
        table["finetune_beats_logreg"], value=(3, 4), quote="3 of 4"
    )
    monkeypatch.setattr(findings, "PAPER", table)
    finding = findings.correlation_finding("logreg", _fit(0.4, 0.2, 0.6), None)
    assert finding.verdict == HOLDS and "r = 0.5" in finding.paper and "0.99" not in finding.paper
    finding = findings.win_finding("finetune_beats_logreg", _counts(15, 20))
    assert finding.verdict == HOLDS and finding.paper.startswith("3 of 4 (75.0%")


def test_a_finding_must_have_one_of_the_verdicts():
    with pytest.raises(ValueError, match="verdict must be one of"):
        findings.Finding("k", "f", "p", "o", "true")
