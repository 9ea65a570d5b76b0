"""Protocol 1 (Sec. 4.1): L2-regularised logistic regression on fixed penultimate features.

The objective, for features X [N, D], weights W [D, K] and an unregularised bias b [K], is

    mean_i loss(x_i W + b, y_i) + λ/2 ‖W‖²

with `loss` the multinomial cross-entropy (single-label) or, for multi-label datasets, the sum
over classes of binary cross-entropies (one-vs-rest: the K binary problems are independent and
are solved together). scikit-learn's LogisticRegression minimises C·Σ_i loss_i + ½‖W‖², the same
objective divided by C·N, so λ = 1 / (C·N) and C = 1 / (λ·N). A single-label dataset with two
classes uses the binary model, as scikit-learn does.

Speed (the sweep solves 45 problems on the same features) comes from exact reparametrisations
shared by all λ, not from approximations:
  - centring X (absorbed by the unregularised bias);
  - rotating X into the eigenbasis of its covariance, X_c U, and dropping directions with zero
    variance, in which the optimal weights are exactly zero (this shrinks D to rank(X_c) ≤ N − 1
    for small datasets);
  - a diagonal preconditioner per λ in that basis: L-BFGS works on V with M = diag(d) V,
    d_j = 1/sqrt(s_j + λ/c), s_j the variance along direction j, c an assumed loss curvature;
  - warm starts along the grid from strong to weak regularisation.
The penalty ‖W‖² = ‖U M‖² = ‖M‖² is unchanged by the rotation, so every fit minimises the same
objective as scikit-learn; the final weights are mapped back to W = U M and b − μW.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping

import numpy as np
import scipy.optimize
import scipy.special

from transfer_tf.protocols import sweep

# Sec. 4.1 / SimCLR appendix B.8: 45 log-spaced regularisation strengths from 1e-6 to 1e5.
NUM_L2 = 45
L2_MIN = 1e-6
L2_MAX = 1e5
# Curvature of the loss (per unit feature variance) assumed by the preconditioner. The logistic
# loss has at most 1/4, but most iterations are spent at weak λ, where the model is confident and
# p(1 − p) is small: 1e-3 needed 3.4× (CNN features) and 2.7× (pixels) fewer iterations over the
# 45-λ digits path than 1/4 did (1e-2: 3.0×, 2.1×; 1e-4: 2.4×, 3.0×). Only speed depends on it.
_CURVATURE = 1e-3
# Directions whose variance is below this fraction of the largest are numerically null.
_RANK_RTOL = 1e-10
_FTOL = 64 * np.finfo(float).eps  # as scikit-learn's lbfgs: stop on the gradient, not f


def l2_grid(num: int = NUM_L2, l2_min: float = L2_MIN, l2_max: float = L2_MAX) -> np.ndarray:
    """Regularisation strengths λ, strongest first (the order warm starts go in)."""
    if num < 1 or not 0 < l2_min <= l2_max:
        raise ValueError(f"bad λ grid: num={num}, l2_min={l2_min}, l2_max={l2_max}")
    return np.logspace(np.log10(l2_max), np.log10(l2_min), num)


def l2_to_c(l2: float, num_examples: int) -> float:
    """scikit-learn's C for regularisation strength λ on `num_examples` training examples."""
    return 1.0 / (l2 * num_examples)


def c_to_l2(c: float, num_examples: int) -> float:
    return 1.0 / (c * num_examples)


def check_features(features: np.ndarray, labels: np.ndarray, name: str = "features") -> None:
    """Raises ValueError with what is wrong for inputs the fit cannot use."""
    if features.ndim != 2:
        raise ValueError(f"{name}: features must be [N, D], got shape {features.shape}")
    if len(features) != len(labels):
        raise ValueError(
            f"{name}: {len(features)} feature rows but {len(labels)} labels; re-extract the "
            "features so that both come from the same split"
        )
    if len(features) == 0:
        raise ValueError(f"{name}: no examples")
    if not np.all(np.isfinite(features)):
        bad = np.unique(np.nonzero(~np.isfinite(features))[0])
        raise ValueError(
            f"{name}: {len(bad)} examples have NaN or infinite features (first rows {bad[:5]}); "
            "check the model export and the extraction"
        )
    if labels.ndim == 1:
        if len(np.unique(labels)) < 2:
            raise ValueError(
                f"{name}: all {len(labels)} examples have label {labels[0]}; logistic regression "
                "needs at least two classes"
            )
    elif labels.ndim == 2:
        constant = np.nonzero(np.all(labels == labels[:1], axis=0))[0]
        if len(constant):
            raise ValueError(
                f"{name}: classes {constant[:10].tolist()} are positive for all or none of the "
                f"{len(labels)} examples; a one-vs-rest model needs both"
            )
    else:
        raise ValueError(f"{name}: labels must be [N] or multi-hot [N, K], got {labels.shape}")


@dataclasses.dataclass
class LinearModel:
    """Logits = features @ weights + bias, in the original feature space."""

    weights: np.ndarray  # [D, K]
    bias: np.ndarray  # [K]
    multi_label: bool
    l2: float
    objective: float
    iterations: int

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[N, C] class probabilities: softmax, per-class sigmoid (multi-label), or [1 − p, p]."""
        z = self.logits(features)
        if self.multi_label:
            return scipy.special.expit(z)
        if z.shape[1] == 1:
            p = scipy.special.expit(z)
            return np.concatenate([1 - p, p], axis=1)
        return scipy.special.softmax(z, axis=1)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class index per example, or a 0/1 matrix for multi-label."""
        z = self.logits(features)
        if self.multi_label:
            return (z > 0).astype(np.int8)
        return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)


class LogisticRegressionProblem:
    """One training set, precomputed for fitting many λ (centring, rotation, rank reduction)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int | None = None):
        check_features(features, labels, "training set")
        x = np.array(features, np.float64)  # a copy: centred in place below
        self.num_examples, self.num_features = x.shape
        self.multi_label = labels.ndim == 2
        if self.multi_label:
            self.targets = np.asarray(labels, np.float64)
        else:
            labels = np.asarray(labels)
            if labels.min() < 0:
                raise ValueError(f"training set: negative label {labels.min()}")
            k = int(num_classes or labels.max() + 1)
            if labels.max() >= k:
                raise ValueError(f"training set: label {labels.max()} ≥ num_classes {k}")
            self.labels = labels.astype(np.int64)
            if k == 2:  # scikit-learn's binary model: one logit for class 1
                self.targets = self.labels[:, None].astype(np.float64)
            else:
                self.targets = np.zeros((len(labels), k))
                self.targets[np.arange(len(labels)), self.labels] = 1.0
        self.binary = self.multi_label or self.targets.shape[1] == 1
        self.num_outputs = self.targets.shape[1]

        self.mean = x.mean(axis=0)
        x -= self.mean
        # Eigenbasis of the (uncentred-by-N) scatter; via the smaller Gram matrix when N < D.
        n, d = x.shape
        if n >= d:
            s, u = np.linalg.eigh(x.T @ x)
        else:
            s, v = np.linalg.eigh(x @ x.T)
            keep = s > _RANK_RTOL * max(s.max(), 1e-300)
            s, v = s[keep], v[:, keep]
            u = (x.T @ v) / np.sqrt(s)
        keep = s > _RANK_RTOL * max(s.max(), 1e-300)
        self.basis = u[:, keep][:, ::-1]  # [D, r], largest variance first
        self.variance = s[keep][::-1] / n  # [r]
        self.z = x @ self.basis  # [N, r]
        del x
        prior = self.targets.mean(axis=0)
        if self.binary:
            self.prior_bias = np.log(prior) - np.log1p(-prior)
        else:
            self.prior_bias = np.log(np.maximum(prior, 1e-12))
            self.prior_bias -= self.prior_bias.mean()

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def _loss_and_grad_logits(self, logits: np.ndarray) -> tuple[float, np.ndarray]:
        n = self.num_examples
        if self.binary:
            loss = np.sum(np.logaddexp(0.0, logits) - self.targets * logits) / n
            return loss, (scipy.special.expit(logits) - self.targets) / n
        lse = scipy.special.logsumexp(logits, axis=1, keepdims=True)
        loss = np.sum(lse[:, 0] - np.sum(self.targets * logits, axis=1)) / n
        return loss, (np.exp(logits - lse) - self.targets) / n

    def objective(self, m: np.ndarray, b: np.ndarray, l2: float) -> float:
        """The objective at rotated weights M [r, K] and bias (of the centred features)."""
        loss, _ = self._loss_and_grad_logits(self.z @ m + b)
        return float(loss + 0.5 * l2 * np.sum(m * m))

    def fit(
        self,
        l2: float,
        init: LinearModel | None = None,
        *,
        tol: float = 1e-6,
        max_iter: int = 1000,
    ) -> LinearModel:
        """Minimises the objective at λ = `l2`, starting from `init` (e.g. the previous λ)."""
        if not l2 > 0:
            raise ValueError(f"regularisation strength must be > 0, got {l2}")
        r, k = self.rank, self.num_outputs
        scale = 1.0 / np.sqrt(self.variance + l2 / _CURVATURE)  # d, [r]
        if init is None:
            m0, b0 = np.zeros((r, k)), self.prior_bias.copy()
        else:
            m0 = self.basis.T @ init.weights
            b0 = init.bias + self.mean @ init.weights
        z = self.z
        last = {}

        def fun(theta):
            v, b = theta[: r * k].reshape(r, k), theta[r * k :]
            m = scale[:, None] * v
            loss, g = self._loss_and_grad_logits(z @ m + b)
            grad_m, grad_b = z.T @ g + l2 * m, g.sum(axis=0)
            last.update(theta=theta, norm=np.sqrt(np.sum(grad_m**2) + np.sum(grad_b**2)))
            grad = np.concatenate([(scale[:, None] * grad_m).ravel(), grad_b])
            return loss + 0.5 * l2 * np.sum(m * m), grad

        def stop_when_converged(intermediate_result):
            # The gradient is measured in the original parametrisation (W, b), not in the
            # preconditioned one, so `tol` means what it means for scikit-learn's lbfgs (there:
            # max |∂f/∂w|; here the Euclidean norm, which is never smaller).
            if np.array_equal(last["theta"], intermediate_result.x) and last["norm"] <= tol:
                raise StopIteration

        theta0 = np.concatenate([(m0 / scale[:, None]).ravel(), b0])
        fun(theta0)
        if last["norm"] <= tol:  # already converged, e.g. a warm start at nearly the same λ
            result = scipy.optimize.OptimizeResult(x=theta0, fun=fun(theta0)[0], nit=0)
        else:
            result = scipy.optimize.minimize(
                fun,
                theta0,
                method="L-BFGS-B",
                jac=True,
                callback=stop_when_converged,
                options={"maxiter": max_iter, "maxls": 50, "gtol": 0.0, "ftol": _FTOL},
            )
        m = scale[:, None] * result.x[: r * k].reshape(r, k)
        b = result.x[r * k :]
        weights = self.basis @ m
        return LinearModel(
            weights=weights,
            bias=b - self.mean @ weights,
            multi_label=self.multi_label,
            l2=float(l2),
            objective=float(result.fun),
            iterations=int(result.nit),
        )

    def objective_of(self, model: LinearModel) -> float:
        """The objective of any model (e.g. scikit-learn's) on this training set."""
        m = self.basis.T @ model.weights
        residual = model.weights - self.basis @ m  # weight outside the data's span
        b = model.bias + self.mean @ model.weights
        return self.objective(m, b, model.l2) + 0.5 * model.l2 * float(np.sum(residual**2))

    def fit_path(self, l2s, *, tol: float = 1e-6, max_iter: int = 1000):
        """Yields a LinearModel per λ in `l2s`, each warm-started from the previous one."""
        model = None
        for l2 in l2s:
            model = self.fit(float(l2), model, tol=tol, max_iter=max_iter)
            yield model


def class_balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of exactly `per_class` random examples of every class (Fig. 9)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            "--per_class needs single-label data; a class-balanced subset of a multi-label "
            "dataset is not defined"
        )
    if per_class < 1:
        raise ValueError(f"--per_class must be ≥ 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        if len(members) < per_class:
            raise ValueError(
                f"--per_class {per_class}: class {c} has only {len(members)} examples; use a "
                f"value ≤ {len(members)}"
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------------------------
# The protocol as a resumable sweep: 45 grid cells (train → val) and one final cell
# (train+val → test), written through `transfer_tf.protocols.sweep`.


def metric_fn(name: str):
    """`transfer_tf.metrics.METRICS[name]`: (y_true, scores [N, C]) → float."""
    from transfer_tf.metrics import METRICS

    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; use --metric with one of {sorted(METRICS)}")
    return METRICS[name]


def _eval_checks(features, labels, dim, name):
    if features.ndim != 2 or len(features) != len(labels) or not np.all(np.isfinite(features)):
        check_features(features, labels, name)  # raises the specific error
    if features.shape[1] != dim:
        raise ValueError(
            f"{name}: {features.shape[1]}-d features but the training split has {dim}-d; "
            "extract all splits from the same model"
        )


def run_logreg(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    results_dir: str,
    *,
    model: str,
    dataset: str,
    metric: str,
    architecture: str | None = None,
    settings: str | None = None,
    l2s=None,
    per_class: int | None = None,
    seed: int = 0,
    tol: float = 1e-6,
    max_iter: int = 1000,
    progress: bool = True,
    test_ids=None,
) -> dict:
    """The whole protocol on `splits` {"train", "val", "test": (features, labels)}.

    Writes one grid cell per λ (stage "grid": fit on train, `val_metric` on val) and one final
    cell (stage "final": refit on train+val at the best λ, `test_metric` and per-example test
    predictions, with `test_ids` if given); returns the final record. Scores passed to the
    metric are probabilities (softmax, or sigmoid per class). A rerun skips finished cells. With `per_class`, the
    training examples of both stages are a class-balanced random subset (seeded) of train, then
    of train+val; validation and test stay whole.
    """
    for split in ("train", "val", "test"):
        if split not in splits:
            raise ValueError(f"the {split} split is missing; extract features for train, val, test")
    x_tr, y_tr = splits["train"]
    check_features(x_tr, y_tr, f"{dataset} train")
    dim = x_tr.shape[1]
    for split in ("val", "test"):
        _eval_checks(*splits[split], dim, f"{dataset} {split}")
    x_va, y_va = splits["val"]
    x_te, y_te = splits["test"]
    if (y_tr.ndim == 2) != (y_te.ndim == 2) or (y_tr.ndim == 2) != (y_va.ndim == 2):
        raise ValueError(f"{dataset}: some splits are multi-label and some are not")
    num_classes = (
        y_tr.shape[1] if y_tr.ndim == 2 else int(max(y_tr.max(), y_va.max(), y_te.max())) + 1
    )
    score = metric_fn(metric)
    l2s = l2_grid() if l2s is None else np.asarray(sorted(l2s, reverse=True), np.float64)
    x_trva, y_trva = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    if per_class is not None:
        x_tr, y_tr = _take(x_tr, y_tr, class_balanced_subset(y_tr, per_class, seed))
        x_trva, y_trva = _take(x_trva, y_trva, class_balanced_subset(y_trva, per_class, seed))
    base = dict(
        protocol="logreg", model=model, architecture=architecture, settings=settings,
        dataset=dataset, metric=metric, seed=seed, per_class=per_class,
    )  # fmt: skip

    state = {}

    def run_grid_cell(cell):
        if "train" not in state:
            state["train"] = LogisticRegressionProblem(x_tr, y_tr, num_classes)
        fit = state["train"].fit(
            cell["hparams"]["l2"], state.get("last"), tol=tol, max_iter=max_iter
        )
        state["last"] = fit
        val_metric = float(score(y_va, fit.probabilities(x_va)))
        if val_metric > state.get("best_val", -np.inf):  # keep one model, not 45
            state.update(best_val=val_metric, best=fit)
        return {"val_metric": val_metric, "steps": fit.iterations}

    grid_cells = [
        dict(base, stage="grid", hparams={"l2": float(l2), "C": l2_to_c(l2, len(x_tr))})
        for l2 in l2s
    ]
    records = sweep.run_cells(grid_cells, results_dir, run_grid_cell, progress=progress)
    val = np.array([np.nan if r["val_metric"] is None else r["val_metric"] for r in records])
    if np.all(np.isnan(val)):
        raise ValueError(f"{dataset}: no grid cell has a validation metric")
    best = int(np.nanargmax(val))  # ties: the first, i.e. the strongest regularisation
    chosen = float(l2s[best])

    def run_final_cell(cell):
        state.pop("train", None)  # free the grid's precomputation (2 × N × D float64)
        problem = LogisticRegressionProblem(x_trva, y_trva, num_classes)
        if "best" in state and state["best"].l2 == chosen:
            fit = problem.fit(chosen, state["best"], tol=tol, max_iter=max_iter)
        else:  # resumed after the grid finished: warm-start along the grid on train+val
            *_, fit = problem.fit_path(l2s[: best + 1], tol=tol, max_iter=max_iter)
        scores = fit.probabilities(x_te)
        predictions = {"y_true": y_te, "y_pred": fit.predict(x_te)}
        if fit.multi_label:  # mAP needs the scores, not only the decisions
            predictions["y_score"] = scores.astype(np.float32)
        if test_ids is not None:
            predictions["ids"] = np.asarray(test_ids)
        return {"test_metric": float(score(y_te, scores)), "steps": fit.iterations,
                "predictions": predictions}  # fmt: skip

    final_cell = dict(
        base, stage="final", hparams={"l2": chosen, "C": l2_to_c(chosen, len(x_trva))}
    )
    (final,) = sweep.run_cells([final_cell], results_dir, run_final_cell, progress=progress)
    return final


def load_features(features_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of one split written by `extract_features`."""
    path = sweep.join(features_dir, f"{split}.npz")
    if not sweep.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist; run transfer-extract-features with --features_dir "
            f"{features_dir} first"
        )
    with np.load(io.BytesIO(sweep.read_bytes(path))) as data:
        if "features" not in data.files or "labels" not in data.files:
            raise ValueError(f"{path} lacks 'features' or 'labels' (has {data.files})")
        return data["features"], data["labels"]


def load_ids(features_dir: str, split: str) -> np.ndarray | None:
    """The records' image ids of one split, or None if the features file has none."""
    with np.load(io.BytesIO(sweep.read_bytes(sweep.join(features_dir, f"{split}.npz")))) as data:
        return data["ids"] if "ids" in data.files else None


def load_manifest(features_dir: str) -> dict:
    path = sweep.join(features_dir, "manifest.json")
    return json.loads(sweep.read_bytes(path)) if sweep.exists(path) else {}


def _take(features, labels, index):
    return features[index], labels[index]
