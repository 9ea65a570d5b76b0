"""Fig. 9 with several subsets per size: each subset (seed) is chosen on its own validation,
and the figure / table give the mean and the standard error over the subsets, checked against
numbers worked out by hand. Written through the real sweep writer."""

import math

import pytest

from transfer_tf import results
from transfer_tf.analysis import comparisons, figures, tables
from transfer_tf.protocols import sweep


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _cell(stage, hparams, *, protocol, model, seed, per_class=4):
    return {
        "protocol": protocol,
        "model": model,
        "dataset": "d",
        "metric": "top1",
        "stage": stage,
        "hparams": hparams,
        "seed": seed,
        "per_class": per_class,
    }


def _write(results_dir, scored):
    outputs = {sweep.cell_id(cell): value for cell, value in scored}

    def run(cell):
        value = outputs[sweep.cell_id(cell)]
        return {"val_metric": value} if cell["stage"] == "grid" else {"test_metric": value}

    sweep.run_cells([c for c, _ in scored], str(results_dir), run, progress=False)


@pytest.fixture
def subsets(tmp_path):
    """Fine-tuning of model m on 3 subsets whose test log odds are 0, 1 and 2; each subset's grid
    chooses its own learning rate (seed 1 another than seeds 0 and 2). Logistic regression of
    models m and m2 on 2 subsets: log odds m (0, 2), m2 (2, 2)."""
    scored = []
    for seed, (lr, logit) in enumerate([(0.1, 0.0), (0.3, 1.0), (0.1, 2.0)]):
        other = 0.3 if lr == 0.1 else 0.1
        kw = dict(protocol="finetune", model="m", seed=seed)
        scored += [
            (_cell("grid", {"lr": lr}, **kw), 0.9),
            (_cell("grid", {"lr": other}, **kw), 0.4),
            (_cell("final", {"lr": lr}, **kw), _sigmoid(logit)),
        ]
    for model, logits in (("m", (0.0, 2.0)), ("m2", (2.0, 2.0))):
        for seed, logit in enumerate(logits):
            kw = dict(protocol="logreg", model=model, seed=seed)
            scored += [
                (_cell("grid", {"l2": 1.0}, **kw), 0.8),
                (_cell("final", {"l2": 1.0}, **kw), _sigmoid(logit)),
            ]
    # The whole training set (no per_class) is a separate choice, and not a subset.
    scored.append(
        (_cell("final", {"lr": 0.1}, protocol="finetune", model="m", seed=0, per_class=None), 0.8)
    )
    _write(tmp_path / "results", scored)
    return tables.subset_results(results.load(str(tmp_path / "results")))


def test_each_subset_is_its_own_final(subsets):
    ft = subsets[subsets["protocol"] == "finetune"].sort_values("seed")
    assert ft["seed"].tolist() == [0, 1, 2]
    assert ft["logit"].tolist() == pytest.approx([0.0, 1.0, 2.0], abs=1e-9)
    assert len(subsets[subsets["protocol"] == "logreg"]) == 4
    assert set(subsets["per_class"]) == {4}


def test_mean_and_standard_error_over_subsets_by_hand(subsets, tmp_path):
    summary = comparisons.subset_summary(subsets).set_index("protocol")
    # Fine-tuning: mean(0, 1, 2) = 1; SE = sd / sqrt(3) = 1 / sqrt(3).
    assert summary.loc["finetune", "mean_logit"] == pytest.approx(1.0)
    assert summary.loc["finetune", "se_logit"] == pytest.approx(1 / math.sqrt(3))
    assert summary.loc["finetune", "n_subsets"] == 3
    # Logistic regression: per subset the mean over models, (0 + 2) / 2 = 1 and (2 + 2) / 2 = 2;
    # mean 1.5, SE = sd(1, 2) / sqrt(2) = 0.5.
    assert summary.loc["logreg", "mean_logit"] == pytest.approx(1.5)
    assert summary.loc["logreg", "se_logit"] == pytest.approx(0.5)
    assert summary.loc["logreg", "n_models"] == 2
    gaps = comparisons.subset_gap_table(comparisons.subset_summary(subsets)).iloc[0]
    assert (gaps["finetune"], gaps["finetune_se"]) == pytest.approx((1.0, 1 / math.sqrt(3)))
    assert (gaps["logreg"], gaps["logreg_se"]) == pytest.approx((1.5, 0.5))
    assert gaps["finetune_minus_logreg"] == pytest.approx(-0.5)
    assert gaps["n_subsets"] == 2
    path = figures.subset_size(comparisons.subset_summary(subsets), str(tmp_path / "fig9.png"))
    assert (tmp_path / "fig9.png").stat().st_size > 0 and path.endswith("fig9.png")


def test_one_subset_has_no_standard_error(subsets):
    one = comparisons.subset_summary(subsets[subsets["seed"] == 0]).set_index("protocol")
    assert math.isnan(one.loc["finetune", "se_logit"]) and one.loc["finetune", "n_subsets"] == 1
