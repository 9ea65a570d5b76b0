"""The predictor analysis (issue 19): weighted τ against scipy.stats.weightedtau, bootstrap
intervals that cover, and a synthetic study with planted agreement recovered by the report."""

import os

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from transfer_tf.analysis import predictors as A
from transfer_tf.analysis import report, stats


def test_weighted_tau_rows_equal_scipy_weightedtau_with_ties_and_resamples():
    rng = np.random.default_rng(0)
    cases = []
    for n in (3, 5, 8, 16):
        for _ in range(30):
            x, y = rng.normal(size=n), rng.normal(size=n)
            cases.append((x, y))
            cases.append((np.round(x), np.round(y * 2)))  # ties in x, in y and joint ties
            idx = rng.integers(0, n, n)  # a bootstrap resample: duplicated models
            cases.append((x[idx], (x + rng.normal(size=n))[idx]))
    cases.append((np.arange(6.0), np.arange(6.0)[::-1]))
    for x, y in cases:
        expected = scipy.stats.weightedtau(x, y).statistic
        ours = A.weighted_tau_rows(x[None], y[None])[0]
        if np.isnan(expected):
            assert np.isnan(ours)
        else:
            assert ours == pytest.approx(expected, abs=1e-12)
        assert A.weighted_tau(x, y) == pytest.approx(expected, abs=0, nan_ok=True)
    # Many rows at once give each row's value.
    x, y = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
    np.testing.assert_allclose(
        A.weighted_tau_rows(x, y),
        [scipy.stats.weightedtau(a, b).statistic for a, b in zip(x, y, strict=True)],
    )
    assert np.isnan(A.weighted_tau_rows(np.ones((1, 4)), rng.normal(size=(1, 4)))[0])


def test_pearson_rows_equal_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 9)), rng.normal(size=(20, 9))
    np.testing.assert_allclose(
        A.pearson_rows(x, y), [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y, strict=True)]
    )
    assert np.isnan(A.pearson_rows(np.ones((1, 5)), y[:1, :5])[0])


def test_intervals_perfect_random_and_coverage():
    rng = np.random.default_rng(2)
    y = rng.normal(size=15)
    perfect = A.rank_agreement(
        np.exp(y), y, source=y + rng.normal(scale=2.0, size=15), num_bootstrap=500
    )
    # A monotone predictor agrees on every resample: τ = 1 with the interval [1, 1].
    assert perfect["weighted_tau"] == 1.0
    assert (perfect["tau_low"], perfect["tau_high"]) == pytest.approx((1, 1), abs=1e-12)
    assert perfect["diff_low"] > 0  # beats a noisy source accuracy by its interval
    # Pearson r's percentile interval covers the true ρ about 95% of the time (bivariate normal).
    rho, n, covered = 0.6, 25, 0
    cov = [[1, rho], [rho, 1]]
    for study in range(150):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        row = A.rank_agreement(x, y, num_bootstrap=300, seed=study)
        covered += row["r_low"] <= rho <= row["r_high"]
    assert 0.88 <= covered / 150 <= 0.99
    # A predictor exactly as noisy as the source accuracy "beats" it rarely (one-sided 2.5%).
    beats = 0
    for study in range(100):
        truth = rng.normal(size=12)
        row = A.rank_agreement(
            truth + rng.normal(size=12),
            truth,
            source=truth + rng.normal(size=12),
            num_bootstrap=300,
            seed=study,
        )
        beats += row["diff_low"] > 0
    assert beats <= 8
    few = A.rank_agreement([1.0, 2.0], [2.0, 3.0])
    assert few["n_models"] == 2 and np.isnan(few["weighted_tau"])


def test_predictor_scores_average_seeds_and_put_accuracies_in_log_odds():
    rows = pd.DataFrame(
        {
            "protocol": "predictors",
            "model": "m",
            "dataset": "d",
            "hp.predictor": ["fewshot_5"] * 5 + ["logme"],
            "metric": ["top1"] * 5 + ["logme"],
            "test_metric": [0.5, 0.6, 0.7, 0.8, 0.9, -1.25],
            "wall_time_s": [1.0] * 5 + [2.0],
        }
    )
    scores = A.predictor_scores(rows).set_index("predictor")
    few = scores.loc["fewshot_5"]
    assert few["score"] == pytest.approx(0.7) and few["n_seeds"] == 5
    assert few["score_se"] == pytest.approx(np.std([0.5, 0.6, 0.7, 0.8, 0.9], ddof=1) / np.sqrt(5))
    assert few["x"] == pytest.approx(stats.logit(0.7)) and few["wall_time_s"] == 5.0
    assert scores.loc["logme", "x"] == -1.25 and np.isnan(scores.loc["logme", "score_se"])


def test_parameter_counts_from_the_table_or_the_registry():
    table = pd.DataFrame(
        {"model": ["a", "b"], "architecture": ["mobilenet_v2", "custom"], "params": [3.5e6, np.nan]}
    )
    assert A.parameter_counts(table).tolist()[0] == 3.5e6
    from transfer_tf.models import get_spec

    counts = A.parameter_counts(table.drop(columns="params"))
    assert counts["a"] == get_spec("mobilenet_v2").published_params and np.isnan(counts["b"])


# ---------------------------------------------------------------------------------------------
# A synthetic study with planted agreement, through the report.

DATASETS = ("d0", "d1", "d2")
MODELS = 14


def _study(rng):
    """Results of logistic regression and fine-tuning for 14 models on 3 datasets, and the
    predictors: 'planted' is a monotone function of the logistic-regression result, 'random'
    is unrelated; the source top-1 is the truth plus heavy noise."""
    quality = rng.normal(size=MODELS)
    table = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(MODELS)],
            "architecture": [f"a{i}" for i in range(MODELS)],
            "settings": "fair",
            "top1_source": "synthetic",
            "source_top1": stats.inverse_logit(
                1.0 + 0.4 * (quality + 1.5 * rng.normal(size=MODELS))
            ),
            "params": np.exp(rng.normal(16, 1, size=MODELS)),
        }
    )
    rows, truth = [], {}
    for d, dataset in enumerate(DATASETS):
        for protocol, shift in (("logreg", 0.0), ("finetune", 0.5)):
            logit = d * 0.3 + shift + quality + 0.3 * rng.normal(size=MODELS)
            for i in range(MODELS):
                truth[protocol, f"m{i}", dataset] = logit[i]
                rows.append(
                    dict(
                        protocol=protocol,
                        model=f"m{i}",
                        architecture=f"a{i}",
                        settings="fair",
                        dataset=dataset,
                        metric="top1",
                        stage="final",
                        test_metric=float(stats.inverse_logit(logit[i])),
                        seed=0,
                        per_class=np.nan,
                        wall_time_s=100.0,
                        cell_id=f"{protocol}-{i}-{dataset}",
                    )
                )
        for i in range(MODELS):
            for predictor, value in (
                ("planted", np.exp(truth["logreg", f"m{i}", dataset])),
                ("random", rng.normal()),
            ):
                rows.append(
                    dict(
                        protocol="predictors",
                        model=f"m{i}",
                        architecture=f"a{i}",
                        settings="fair",
                        dataset=dataset,
                        metric=predictor,
                        stage="final",
                        test_metric=value,
                        seed=0,
                        per_class=np.nan,
                        wall_time_s=1.0,
                        cell_id=f"p-{predictor}-{i}-{dataset}",
                        **{"hp.predictor": predictor},
                    )
                )
    return pd.DataFrame(rows), table


def test_synthetic_study_with_planted_agreement_through_the_report(tmp_path):
    results_df, table = _study(np.random.default_rng(3))
    headline = report.write_report(
        results_df, table, str(tmp_path), num_bootstrap=400, permutation_samples=200
    )
    agreement = pd.read_csv(tmp_path / "predictor_agreement.csv")
    assert set(agreement["predictor"]) == {"planted", "random", A.SOURCE, A.PARAMS}
    planted = agreement[(agreement["predictor"] == "planted") & (agreement["protocol"] == "logreg")]
    assert len(planted) == 3 and (planted["weighted_tau"] == 1.0).all()
    np.testing.assert_allclose(planted[["tau_low", "tau_high"]], 1.0, atol=1e-12)
    assert (planted["beats_source"] == A.BEATS).all()
    random = agreement[agreement["predictor"] == "random"]
    assert ((random["tau_low"] < 0) & (random["tau_high"] > 0)).all()
    assert not (random["beats_source"] == A.BEATS).any()
    # The τ values are scipy's on the same models.
    best = results_df[results_df["protocol"] == "finetune"]
    for dataset in DATASETS:
        row = agreement[
            (agreement["predictor"] == "planted")
            & (agreement["protocol"] == "finetune")
            & (agreement["dataset"] == dataset)
        ].iloc[0]
        truth = best[best["dataset"] == dataset].sort_values("model")
        scores = results_df[
            (results_df["hp.predictor"] == "planted") & (results_df["dataset"] == dataset)
        ].sort_values("model")
        expected = scipy.stats.weightedtau(
            scores["test_metric"].to_numpy(), stats.logit(truth["test_metric"].to_numpy())
        ).statistic
        assert row["weighted_tau"] == pytest.approx(expected, abs=1e-12)
        assert row["n_models"] == MODELS
    summary = pd.read_csv(tmp_path / "predictor_summary.csv").set_index(["protocol", "predictor"])
    assert summary.loc[("logreg", "planted"), "beats_source"] == 3
    assert summary.loc[("logreg", "random"), "beats_source"] == 0
    cost = pd.read_csv(tmp_path / "predictor_cost.csv").set_index("predictor")
    # 1 s per predictor cell against 100 s of logistic regression per model x dataset.
    assert cost.loc["planted", "fraction_of_logreg"] == pytest.approx(0.01)
    assert cost.loc["all predictors", "fraction_of_logreg"] == pytest.approx(0.02)
    assert os.path.exists(headline["figures"]["predictors_vs_transfer"])
    text = (tmp_path / "report.md").read_text()
    assert "## Beyond the paper: cheap transfer predictors" in text
    assert "## Cost of the predictors" in text
    # The paper's analysis is unchanged by the predictor rows beside it.
    without = report.write_report(
        results_df[results_df["protocol"] != "predictors"],
        table,
        str(tmp_path / "without"),
        num_bootstrap=400,
        permutation_samples=200,
    )
    assert without["correlations"] == headline["correlations"]
    assert "predictors_vs_transfer" not in without["figures"]
