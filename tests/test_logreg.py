"""Logistic regression on fixed features: scikit-learn oracle, the protocol sweep, subsets, errors."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.special
import threadpoolctl
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from transfer_tf import metrics, results
from transfer_tf.protocols import logreg


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """These problems are tiny: BLAS threads only contend for the 2 shared cores."""
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order].astype(np.float32), y[order]


def _objective(x, y, weights, bias, l2, multi_label):
    """Hand-written objective on the raw features: mean loss + λ/2 ‖W‖² (bias unregularised)."""
    z = x.astype(np.float64) @ weights + bias
    if multi_label:
        loss = np.sum(np.logaddexp(0, z) - y * z) / len(x)
    elif z.shape[1] == 1:
        loss = np.mean(np.logaddexp(0, z[:, 0]) - y * z[:, 0])
    else:
        loss = np.mean(scipy.special.logsumexp(z, axis=1) - z[np.arange(len(y)), y])
    return loss + 0.5 * l2 * np.sum(weights**2)


def _sklearn(x, y, l2, **kw):
    c = logreg.l2_to_c(l2, len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning would make the oracle meaningless
        clf = LogisticRegression(C=c, solver="lbfgs", tol=1e-7, max_iter=20000, **kw)
        # float64: with float32 input scikit-learn's line search stalls well above the optimum.
        return clf.fit(np.asarray(x, np.float64), y)


@pytest.mark.parametrize("l2", [1.0, 1e-2, 1e-4])
def test_multinomial_agrees_with_sklearn(digits, l2):
    x, y = digits
    x_tr, y_tr, x_te = x[:700], y[:700], x[700:]
    ours = logreg.LogisticRegressionProblem(x_tr, y_tr).fit(l2, tol=1e-7, max_iter=20000)
    ref = _sklearn(x_tr, y_tr, l2)
    agree = np.mean(ours.predict(x_te) == ref.predict(x_te))
    assert agree >= 0.995, agree
    f_ours = _objective(x_tr, y_tr, ours.weights, ours.bias, l2, False)
    f_ref = _objective(x_tr, y_tr, ref.coef_.T, ref.intercept_, l2, False)
    assert abs(f_ours - f_ref) <= 1e-4 * f_ref, (f_ours, f_ref)
    assert ours.objective == pytest.approx(f_ours, rel=1e-9)
    assert f_ours <= f_ref * (1 + 1e-7)  # at least as converged as the oracle


def test_binary_and_one_vs_rest_agree_with_sklearn(digits):
    x, y = digits
    x_tr, y_tr, x_te = x[:700], y[:700], x[700:]
    l2 = 1e-3
    # Two classes: scikit-learn's binary model (one logit), not a 2-way softmax.
    pair = np.isin(y_tr, [3, 8])
    y_bin = (y_tr[pair] == 8).astype(np.int64)
    ours = logreg.LogisticRegressionProblem(x_tr[pair], y_bin).fit(l2, tol=1e-7, max_iter=20000)
    ref = _sklearn(x_tr[pair], y_bin, l2)
    assert ours.weights.shape == (64, 1)
    assert np.mean(ours.predict(x_te) == ref.predict(x_te)) >= 0.995
    f_ref = _objective(x_tr[pair], y_bin, ref.coef_.T, ref.intercept_, l2, False)
    assert abs(ours.objective - f_ref) <= 1e-4 * f_ref

    # Multi-label: one-vs-rest, one binary scikit-learn model per class.
    def tags(labels):
        return np.stack([labels >= 5, labels % 2 == 0, np.isin(labels, [0, 6, 8, 9])], 1)

    y_multi = tags(y_tr).astype(np.int8)
    ours = logreg.LogisticRegressionProblem(x_tr, y_multi).fit(l2, tol=1e-7, max_iter=20000)
    pred = ours.predict(x_te)
    f_ref = 0.0
    for k in range(3):
        ref = _sklearn(x_tr, y_multi[:, k], l2)
        assert np.mean(pred[:, k] == ref.predict(x_te)) >= 0.995
        f_ref += _objective(x_tr, y_multi[:, k], ref.coef_.T, ref.intercept_, l2, False)
    f_ours = _objective(x_tr, y_multi, ours.weights, ours.bias, l2, True)
    assert abs(f_ours - f_ref) <= 1e-4 * f_ref


def test_rank_reduction_when_fewer_examples_than_features():
    """N < D: the fit works in the data's span and still matches scikit-learn."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 200)) + rng.normal(size=(1, 200))
    y = (x[:, :3] @ [1.0, -1.0, 0.5] > 0).astype(int) + (x[:, 3] > 1)
    x_before = x.copy()
    problem = logreg.LogisticRegressionProblem(x, y)
    np.testing.assert_array_equal(x, x_before)  # float64 features are used in place, unchanged
    assert problem.rank == 59  # centred: N − 1 directions
    ours = problem.fit(1e-2, tol=1e-7, max_iter=20000)
    ref = _sklearn(x, y, 1e-2)
    x_new = rng.normal(size=(500, 200))
    assert np.mean(ours.predict(x_new) == ref.predict(x_new)) >= 0.995
    f_ref = _objective(x, y, ref.coef_.T, ref.intercept_, 1e-2, False)
    assert abs(ours.objective - f_ref) <= 1e-4 * f_ref


def _hand_gradient_norm(x, y, model, multi_label=False):
    """‖∇f‖₂ over (W, b) on the raw features, written out in float64."""
    z = x.astype(np.float64) @ model.weights + model.bias
    if multi_label or z.shape[1] == 1:
        targets = y.reshape(len(y), -1).astype(np.float64)
        residual = scipy.special.expit(z) - targets
    else:
        residual = scipy.special.softmax(z, axis=1)
        residual[np.arange(len(y)), y] -= 1.0
    grad_w = x.astype(np.float64).T @ residual / len(x) + model.l2 * model.weights
    return np.sqrt(np.sum(grad_w**2) + np.sum((residual.sum(axis=0) / len(x)) ** 2))


@pytest.mark.parametrize("l2", [1e-1, 1e-3, 1e-5])
def test_converged_means_float64_gradient_below_tol(digits, l2):
    """The float32 phase does not decide convergence: the gradient in float64 is below tol, in
    scikit-learn's parametrisation (uncentred features). (At strong λ a fit can end first on the
    64 ε relative decrease of f, as scikit-learn's: λ = 10 here stops at ‖∇f‖ = 1.3e-6.)"""
    x, y = digits
    x64 = x[:700].astype(np.float64)  # float32 and float64 features take the same path
    problem = logreg.LogisticRegressionProblem(x64, y[:700])
    model = problem.fit(l2, tol=1e-6, max_iter=5000)
    np.testing.assert_array_equal(x64, x[:700])
    assert _hand_gradient_norm(x[:700], y[:700], model) <= 1e-6
    assert model.objective == pytest.approx(
        _objective(x[:700], y[:700], model.weights, model.bias, l2, False), rel=1e-12
    )
    # Warm-started from a weaker λ's model, as the grid goes, the same holds.
    warm = problem.fit(l2 * 3, model, tol=1e-6, max_iter=5000)
    assert _hand_gradient_norm(x[:700], y[:700], warm) <= 1e-6
    assert problem.half_passes[64] >= 2  # at least the float64 check of each fit


def test_grid_and_c_mapping():
    grid = logreg.l2_grid()
    assert len(grid) == 45 and grid[0] == pytest.approx(1e5) and grid[-1] == pytest.approx(1e-6)
    np.testing.assert_allclose(np.diff(np.log10(grid)), -11 / 44)
    assert logreg.l2_to_c(1e-3, 500) == pytest.approx(2.0)
    assert logreg.c_to_l2(logreg.l2_to_c(0.3, 77), 77) == pytest.approx(0.3)


def test_class_balanced_subset_gives_exactly_n_per_class(digits):
    _, y = digits
    idx = logreg.class_balanced_subset(y, 7, seed=3)
    assert len(idx) == 70 and len(np.unique(idx)) == 70
    np.testing.assert_array_equal(np.bincount(y[idx]), [7] * 10)
    np.testing.assert_array_equal(idx, logreg.class_balanced_subset(y, 7, seed=3))
    assert not np.array_equal(idx, logreg.class_balanced_subset(y, 7, seed=4))
    with pytest.raises(ValueError, match="class 2 has only 1 examples"):
        logreg.class_balanced_subset(np.array([0, 0, 1, 1, 2]), 2)
    with pytest.raises(ValueError, match="multi-label"):
        logreg.class_balanced_subset(np.ones((4, 2)), 1)


def _splits(digits):
    x, y = digits
    return {"train": (x[:900], y[:900]), "val": (x[900:1300], y[900:1300]),
            "test": (x[1300:], y[1300:])}  # fmt: skip


def test_protocol_sweep_chooses_on_val_refits_on_train_val(digits, tmp_path):
    splits = _splits(digits)
    grid = logreg.l2_grid(9, 1e-4, 1e4)
    final = logreg.run_logreg(
        splits, str(tmp_path), model="pixels", dataset="digits", metric="top1", l2s=grid,
        architecture="none", settings="raw", progress=False,
    )  # fmt: skip
    frame = results.load(str(tmp_path))
    grid_rows = frame[frame.stage == "grid"].sort_values("hp.l2", ascending=False)
    assert len(grid_rows) == 9 and len(frame) == 10
    np.testing.assert_allclose(grid_rows["hp.l2"], grid)
    np.testing.assert_allclose(grid_rows["hp.C"], 1 / (grid * 900))
    assert grid_rows.test_metric.isna().all() and (grid_rows.steps > 0).all()
    # A grid value is the top-1 on val of the model at that λ (checked against scikit-learn).
    x_tr, y_tr = splits["train"]
    x_va, y_va = splits["val"]
    for l2, val in zip(grid_rows["hp.l2"][::3], grid_rows.val_metric[::3], strict=True):
        ref = LogisticRegression(C=logreg.l2_to_c(l2, 900), tol=1e-6, max_iter=5000)
        ref.fit(x_tr.astype(np.float64), y_tr)
        assert abs(val - ref.score(x_va, y_va)) <= 2.5 / len(y_va)
    best = grid_rows.iloc[int(np.argmax(grid_rows.val_metric.to_numpy()))]
    assert final["stage"] == "final" and final["hparams"]["l2"] == best["hp.l2"]
    assert final["hparams"]["C"] == pytest.approx(1 / (best["hp.l2"] * 1300))
    assert final["val_metric"] is None
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    x_te, y_te = splits["test"]
    np.testing.assert_array_equal(preds["y_true"], y_te)
    assert final["test_metric"] == pytest.approx(np.mean(preds["y_pred"] == y_te))
    ref = LogisticRegression(C=final["hparams"]["C"], tol=1e-6, max_iter=5000)
    ref.fit(np.concatenate([x_tr, x_va]).astype(np.float64), np.concatenate([y_tr, y_va]))
    assert np.mean(ref.predict(x_te) == preds["y_pred"]) >= 0.995
    assert set(frame.architecture) == {"none"} and set(frame.settings) == {"raw"}


def test_protocol_with_per_class_subset(digits, tmp_path):
    final = logreg.run_logreg(
        _splits(digits), str(tmp_path), model="pixels", dataset="digits", metric="top1",
        l2s=[1e-2, 1e-3], per_class=5, seed=1, progress=False,
    )  # fmt: skip
    frame = results.load(str(tmp_path))
    assert (frame.per_class == 5).all() and (frame.seed == 1).all()
    # C = 1/(λ·N): the grid trained on 5 × 10 examples, the final fit on another 5 × 10.
    grid = frame[frame.stage == "grid"]
    np.testing.assert_allclose(grid["hp.C"], 1 / (grid["hp.l2"] * 50))
    assert final["hparams"]["C"] == pytest.approx(1 / (final["hparams"]["l2"] * 50))
    # The final model is the one fitted on exactly those 5 per class of train+val.
    splits = _splits(digits)
    x_trva = np.concatenate([splits["train"][0], splits["val"][0]]).astype(np.float64)
    y_trva = np.concatenate([splits["train"][1], splits["val"][1]])
    subset = logreg.class_balanced_subset(y_trva, 5, seed=1)
    np.testing.assert_array_equal(np.bincount(y_trva[subset]), [5] * 10)
    ref = _sklearn(x_trva[subset], y_trva[subset], final["hparams"]["l2"])
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    assert np.mean(ref.predict(splits["test"][0].astype(np.float64)) == preds["y_pred"]) >= 0.995


def test_protocol_multi_label_one_vs_rest_scored_by_map11(digits, tmp_path):
    x, y = digits
    tags = np.stack([y >= 5, y % 2 == 0, np.isin(y, [0, 6, 8, 9])], 1).astype(np.int8)
    splits = {"train": (x[:900], tags[:900]), "val": (x[900:1300], tags[900:1300]),
              "test": (x[1300:], tags[1300:])}  # fmt: skip
    final = logreg.run_logreg(
        splits, str(tmp_path), model="pixels", dataset="digit_tags", metric="map11",
        l2s=[1e-1, 1e-2, 1e-3], progress=False,
    )  # fmt: skip
    frame = results.load(str(tmp_path))
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    np.testing.assert_array_equal(preds["y_true"], tags[1300:])
    assert preds["y_score"].shape == (497, 3) and set(np.unique(preds["y_pred"])) == {0, 1}
    assert final["test_metric"] == pytest.approx(
        metrics.eleven_point_map(tags[1300:], preds["y_score"])
    )
    assert 0.8 < final["test_metric"] <= 1.0


def test_bad_input_is_a_clear_error(digits, tmp_path):
    splits = _splits(digits)
    x, y = splits["train"]
    kw = dict(model="m", dataset="digits", metric="top1", l2s=[1.0], progress=False)
    cases = [
        ({"train": (x, y[:-1])}, "900 feature rows but 899 labels"),
        ({"train": (x, np.zeros_like(y))}, "needs at least two classes"),
        ({"test": (np.where(np.arange(497)[:, None] == 4, np.nan, splits["test"][0]), splits["test"][1])},
         "1 examples have NaN"),
        ({"val": (splits["val"][0][:, :10], splits["val"][1])}, "10-d features but the training"),
    ]  # fmt: skip
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            logreg.run_logreg({**splits, **change}, str(tmp_path), **kw)
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        logreg.run_logreg(splits, str(tmp_path), **{**kw, "metric": "top5"})
    assert not (tmp_path / "logreg").exists()  # nothing written for bad input


class _Killed(BaseException):
    """What SIGKILL leaves a process: nothing after the fit it interrupted."""


def _sweep_files(root):
    """{cell id: (val, test, steps, predictions)} of every cell under `root`."""
    frame = results.load(str(root))
    out = {}
    for row in frame.itertuples():
        preds = results.load_predictions(row.predictions_path) if row.stage == "final" else {}
        out[row.cell_id] = (row.val_metric, row.test_metric, row.steps, preds)
    return out


@pytest.mark.parametrize(
    "kill_at_fit, lose_warm_start",
    [(4, False), (4, True), (8, False)],
    ids=["in-grid", "in-grid-before-its-save", "in-final"],
)
def test_sweep_resumed_after_a_kill_equals_an_uninterrupted_one(
    digits, tmp_path, monkeypatch, kill_at_fit, lose_warm_start
):
    """Each λ warm-starts from the previous one, so a resumed sweep must restart the path from
    the finished cells' fits, not from zero (which gave other iterates, up to 4e-4 off)."""
    kw = dict(model="pixels", dataset="digits", metric="top1", l2s=logreg.l2_grid(7, 1e-4, 1e2),
              progress=False)  # fmt: skip
    splits = _splits(digits)
    logreg.run_logreg(splits, str(tmp_path / "whole"), **kw)

    fit, calls = logreg.LogisticRegressionProblem.fit, []

    def fit_until_killed(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == kill_at_fit:
            raise _Killed
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(logreg.LogisticRegressionProblem, "fit", fit_until_killed)
    with pytest.raises(_Killed):
        logreg.run_logreg(splits, str(tmp_path / "resumed"), **kw)
    monkeypatch.undo()
    warm = list((tmp_path / "resumed" / ".warm_start").iterdir())
    assert len(warm) == 1  # the state after the finished cells
    if lose_warm_start:  # killed after a cell's record but before the next save
        warm[0].unlink()
    logreg.run_logreg(splits, str(tmp_path / "resumed"), **kw)

    whole, resumed = _sweep_files(tmp_path / "whole"), _sweep_files(tmp_path / "resumed")
    assert sorted(whole) == sorted(resumed) and len(whole) == 8
    for cid, (val, test, steps, preds) in whole.items():
        assert resumed[cid][:3] == pytest.approx((val, test, steps), abs=0, nan_ok=True), cid
        for name, array in preds.items():
            np.testing.assert_array_equal(resumed[cid][3][name], array)
    assert not list((tmp_path / "resumed" / ".warm_start").iterdir())  # removed when done


def _write_features_dir(path, splits, manifest):
    path.mkdir()
    for name, (x, y) in splits.items():
        ids = np.array([f"{name}/{i}" for i in range(len(x))])
        np.savez(path / f"{name}.npz", features=x, labels=y, ids=ids)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.subprocess
def test_cli_end_to_end_and_nan_features_exit_nonzero(digits, tmp_path):
    splits = _splits(digits)
    good = tmp_path / "good"
    _write_features_dir(good, splits, {"model": "pixels", "dataset": "digits", "metric": "top1"})
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "transfer_tf.bin.logreg", f"--results_dir={out}", "--num_l2=4",
           "--l2_min=1e-3", "--l2_max=1", "--blas_threads=1"]  # fmt: skip
    proc = subprocess.run(cmd + [f"--features_dir={good}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "[4/4] logreg pixels digits grid" in proc.stdout and "test top1 = 0.9" in proc.stdout
    frame = results.load(str(out))
    assert sorted(frame.stage) == ["final"] + ["grid"] * 4
    assert (frame.model == "pixels").all() and (frame.metric == "top1").all()
    preds = results.load_predictions(frame[frame.stage == "final"].predictions_path.item())
    np.testing.assert_array_equal(preds["ids"], [f"test/{i}" for i in range(497)])

    bad = tmp_path / "bad"
    x_te, y_te = splits["test"]
    x_te = x_te.copy()
    x_te[3, 5] = np.nan
    _write_features_dir(bad, {**splits, "test": (x_te, y_te)}, {"model": "m", "dataset": "d"})
    proc = subprocess.run(
        cmd + [f"--features_dir={bad}", "--metric=top1"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "d test: 1 examples have NaN or infinite features" in proc.stderr


def test_tensorflow_backend_agrees_with_numpy(digits, tmp_path):
    """Same passes, same fits, same protocol result with the TensorFlow backend (on the CPU here)."""
    x, y = digits
    x_tr, y_tr = x[:700], y[:700]
    problems = {b: logreg.LogisticRegressionProblem(x_tr, y_tr, backend=b)
                for b in ("numpy", "tensorflow")}  # fmt: skip
    np.testing.assert_allclose(problems["tensorflow"].basis, problems["numpy"].basis, atol=1e-8)
    rng = np.random.default_rng(0)
    m, b = rng.normal(size=(problems["numpy"].rank, 10)) * 0.01, rng.normal(size=10)
    passes = {name: p.passes for name, p in problems.items()}
    for precision, rtol in ((64, 1e-12), (32, 1e-5)):
        logits = {n: p.forward(m, b, precision) for n, p in passes.items()}
        got = {n: p.backward(logits[n], precision) for n, p in passes.items()}
        assert got["tensorflow"][0] == pytest.approx(got["numpy"][0], rel=rtol)
        for i in (1, 2):
            np.testing.assert_allclose(got["tensorflow"][i], got["numpy"][i], rtol=rtol,
                                       atol=rtol * np.abs(got["numpy"][i]).max())  # fmt: skip
    # Fits: the objective within 1e-8 (both have ‖∇f‖ ≤ 1e-7), the same predictions.
    for l2 in (1e-1, 1e-4):
        fits = {n: p.fit(l2, tol=1e-7, max_iter=5000) for n, p in problems.items()}
        assert fits["tensorflow"].objective == pytest.approx(fits["numpy"].objective, rel=1e-8)
        agree = np.mean(fits["tensorflow"].predict(x[700:]) == fits["numpy"].predict(x[700:]))
        assert agree >= 0.995, (l2, agree)
    pair = np.isin(y_tr, [3, 8])  # the binary model (sigmoid) too
    y_bin = (y_tr[pair] == 8).astype(np.int64)
    fits = {b: logreg.LogisticRegressionProblem(x_tr[pair], y_bin, backend=b).fit(1e-3, tol=1e-7)
            for b in ("numpy", "tensorflow")}  # fmt: skip
    assert fits["tensorflow"].objective == pytest.approx(fits["numpy"].objective, rel=1e-8)
    assert np.mean(fits["tensorflow"].predict(x) == fits["numpy"].predict(x)) >= 0.995
    # The protocol: the same λ chosen on val, ≥ 99.5% equal test predictions.
    finals = {
        b: logreg.run_logreg(
            _splits(digits),
            str(tmp_path / b),
            model="pixels",
            dataset="digits",
            metric="top1",
            l2s=logreg.l2_grid(5, 1e-3, 10.0),
            progress=False,
            backend=b,
        )  # fmt: skip
        for b in ("numpy", "tensorflow")
    }
    assert finals["tensorflow"]["hparams"] == finals["numpy"]["hparams"]
    preds = {b: results.load_predictions(str(tmp_path / b / "logreg" / f["predictions"]))
             for b, f in finals.items()}  # fmt: skip
    assert np.mean(preds["tensorflow"]["y_pred"] == preds["numpy"]["y_pred"]) >= 0.995
    assert abs(finals["tensorflow"]["test_metric"] - finals["numpy"]["test_metric"]) <= 2 / 497
