"""No selection on the test set: when a results folder holds several final cells of one model,
dataset and protocol (reruns, other grids), the analysis keeps the one its grid cells chose by
validation, or refuses and names the cells. Written through the real sweep writer."""

import numpy as np
import pandas as pd
import pytest

from transfer_tf import results
from transfer_tf.analysis import report, tables
from transfer_tf.protocols import sweep


def _cell(stage, hparams, *, protocol="finetune", model="m", dataset="d", seed=0, per_class=None):
    return {
        "protocol": protocol,
        "model": model,
        "dataset": dataset,
        "metric": "top1",
        "stage": stage,
        "hparams": hparams,
        "seed": seed,
        "per_class": per_class,
    }


def _write(results_dir, scored: list[tuple[dict, float]]) -> dict:
    """Cells with their metric (val for grid cells, test for final ones) and predictions."""
    outputs = {sweep.cell_id(cell): value for cell, value in scored}

    def run(cell):
        value = outputs[sweep.cell_id(cell)]
        if cell["stage"] == "grid":
            return {"val_metric": value}
        y_true = np.arange(100) % 4
        correct = np.arange(100) < round(100 * value)
        return {
            "test_metric": value,
            "predictions": {
                "y_true": y_true,
                "y_pred": np.where(correct, y_true, 0 + (y_true == 0)),
            },
        }

    sweep.run_cells([c for c, _ in scored], str(results_dir), run, progress=False)
    return {sweep.cell_id(c): c for c, _ in scored}


# Grid A's best validation (0.90) led to a final scoring 0.70 on test; grid B's best (0.80) led
# to one scoring 0.85. Validation chooses A; the test metric would have chosen B.
GRID_A = [({"lr": 0.1}, 0.90), ({"lr": 0.01}, 0.50)]
GRID_B = [({"lr": 0.3}, 0.80)]
FINALS = [({"lr": 0.1}, 0.70), ({"lr": 0.3}, 0.85)]


def _disagreeing_folder(tmp_path, finals=FINALS, grids=GRID_A + GRID_B):
    scored = [(_cell("grid", hp), v) for hp, v in grids] + [
        (_cell("final", hp), v) for hp, v in finals
    ]
    _write(tmp_path / "results", scored)
    return results.load(str(tmp_path / "results"))


def test_validation_not_test_chooses_among_final_cells(tmp_path):
    frame = _disagreeing_folder(tmp_path)
    best = tables.final_metrics(frame)
    assert len(best) == 1
    row = best.iloc[0]
    assert row["test_metric"] == 0.70  # not the higher 0.85
    assert row["selection_val_metric"] == 0.90 and row["selected_by"] == "validation"
    assert row["n_final_configs"] == 2
    assert row["cell_id"] == sweep.cell_id(_cell("final", {"lr": 0.1}))
    assert results.load_predictions(row["predictions_path"])["y_pred"].shape == (100,)


def test_the_report_uses_the_validated_final_and_says_so(tmp_path):
    frame = _disagreeing_folder(tmp_path)
    frame = pd.concat([frame, frame.assign(model="m2")], ignore_index=True)
    table = pd.DataFrame({"model": ["m", "m2"], "source_top1": [0.7, 0.8]})
    headline = report.write_report(
        frame, table, str(tmp_path / "out"), num_bootstrap=20, permutation_samples=50
    )
    best = pd.read_csv(tmp_path / "out" / "best_test_metric.csv")
    assert best["test_metric"].tolist() == [0.70, 0.70]
    assert (
        "grid cells reached the best validation metric"
        in (tmp_path / "out" / "report.md").read_text()
    )
    assert headline["win_counts"]["finetune_beats_logreg"]["total"] == 0


def test_one_final_per_model_needs_no_grid(tmp_path):
    frame = _disagreeing_folder(tmp_path, finals=FINALS[1:], grids=[])
    row = tables.final_metrics(frame).iloc[0]
    assert row["test_metric"] == 0.85 and row["selected_by"] == "only final"
    assert np.isnan(row["selection_val_metric"]) and row["n_final_configs"] == 1


def test_seeds_of_one_configuration_are_averaged(tmp_path):
    scored = [(_cell("final", {"lr": 0.1}, seed=s), v) for s, v in ((0, 0.6), (1, 0.8))]
    _write(tmp_path / "results", scored)
    row = tables.final_metrics(results.load(str(tmp_path / "results"))).iloc[0]
    assert row["test_metric"] == pytest.approx(0.7) and row["n_seeds"] == 2
    assert row["n_final_configs"] == 1


def test_finals_without_grid_cells_are_refused_by_name(tmp_path):
    frame = _disagreeing_folder(tmp_path, grids=GRID_A)  # nothing validated lr = 0.3
    ids = [sweep.cell_id(_cell("final", hp)) for hp, _ in FINALS]
    with pytest.raises(ValueError, match="never chooses by test score") as error:
        tables.final_metrics(frame)
    message = str(error.value)
    assert all(i in message for i in ids) and "finetune / m / d" in message
    assert "grid val_metric none" in message and "grid val_metric 0.9" in message


def test_tied_validation_is_refused(tmp_path):
    frame = _disagreeing_folder(tmp_path, grids=[({"lr": 0.1}, 0.8), ({"lr": 0.3}, 0.8)])
    with pytest.raises(ValueError, match="do not choose one"):
        tables.final_metrics(frame)


def test_logreg_finals_match_their_grid_cells_by_l2_not_c(tmp_path):
    """The refit on train+val keeps λ (l2) but has another scikit-learn C = 1 / (λ n)."""
    grid = [
        (_cell("grid", {"l2": 1.0, "C": 0.01}, protocol="logreg"), 0.6),
        (_cell("grid", {"l2": 0.1, "C": 0.1}, protocol="logreg"), 0.9),
    ]
    finals = [
        (_cell("final", {"l2": 1.0, "C": 0.008}, protocol="logreg"), 0.95),
        (_cell("final", {"l2": 0.1, "C": 0.08}, protocol="logreg"), 0.75),
    ]
    _write(tmp_path / "results", grid + finals)
    row = tables.final_metrics(results.load(str(tmp_path / "results"))).iloc[0]
    assert (row["test_metric"], row["selection_val_metric"]) == (0.75, 0.9)


def test_subset_finals_are_chosen_by_validation_too(tmp_path):
    scored = [
        (_cell("grid", {"lr": 0.1}, per_class=5), 0.9),
        (_cell("grid", {"lr": 0.3}, per_class=5), 0.4),
        (_cell("final", {"lr": 0.1}, per_class=5), 0.5),
        (_cell("final", {"lr": 0.3}, per_class=5), 0.6),
        # The full-data final of the same model is a separate choice.
        (_cell("final", {"lr": 0.3}), 0.8),
    ]
    _write(tmp_path / "results", scored)
    frame = results.load(str(tmp_path / "results"))
    subsets = tables.subset_results(frame)
    assert subsets[["per_class", "test_metric"]].values.tolist() == [[5.0, 0.5]]
    assert tables.final_metrics(frame)["test_metric"].tolist() == [0.8]
