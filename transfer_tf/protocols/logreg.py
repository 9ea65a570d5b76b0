"""Protocol 1 (Sec. 4.1): L2-regularised logistic regression on fixed penultimate features.

The objective, for features X [N, D], weights W [D, K] and an unregularised bias b [K], is

    mean_i loss(x_i W + b, y_i) + λ/2 ‖W‖²

with `loss` the multinomial cross-entropy (single-label) or, for multi-label datasets, the sum
over classes of binary cross-entropies (one-vs-rest: the K binary problems are independent and
are solved together). scikit-learn's LogisticRegression minimises C·Σ_i loss_i + ½‖W‖², the same
objective divided by C·N, so λ = 1 / (C·N) and C = 1 / (λ·N). A single-label dataset with two
classes uses the binary model, as scikit-learn does.

Speed (the sweep solves 45 problems on the same features) comes from exact reparametrisations
shared by all λ and from where precision is spent, not from approximations of the objective:
  - centring X (absorbed by the unregularised bias);
  - rotating X into the eigenbasis of its covariance, Z = X_c U, and dropping directions with
    zero variance, in which the optimal weights are exactly zero (this shrinks D to
    rank(X_c) ≤ N − 1 for small datasets);
  - a diagonal preconditioner per λ in that basis: L-BFGS works on V with M = diag(d) V,
    d_j = 1/sqrt(s_j + λ/c), s_j the variance along direction j, c an assumed loss curvature;
  - one pass over the features per L-BFGS step: the logits are kept, the search direction's
    logits are one matrix product, and the line search (Newton steps on the loss along that
    line) is elementwise work on them; the gradient at the accepted step is the other product;
  - those products in float32 on Z stored in float32 (the softmax, loss and sums in float64)
    until the gradient is below the tolerance, then recomputed in float64 from the features as
    given, which decides convergence and does any last iterations (see `fit`);
  - warm starts along the grid from strong to weak regularisation.
The penalty ‖W‖² = ‖U M‖² = ‖M‖² is unchanged by the rotation, so every fit minimises the same
objective as scikit-learn; the final weights are mapped back to W = U M and b − μW. Memory: the
features as given plus Z in float32 and a few [N, K] float64 arrays; float64 copies of the
features are made a chunk of rows at a time (`NumpyPasses.chunk_rows`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Mapping

import numpy as np
import scipy.special

from transfer_tf import files
from transfer_tf.data import subsets
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
# The float32 phase stops a little inside the tolerance, so the float64 check usually passes.
_FLOAT32_TARGET = 0.9
_FTOL = 64 * np.finfo(float).eps  # scikit-learn's lbfgs: relative decrease of f that ends a fit
_MEMORY = 10  # L-BFGS correction pairs, as scipy's and scikit-learn's default
_WOLFE_C1, _WOLFE_C2 = 1e-4, 0.9  # strong Wolfe conditions (Nocedal & Wright's values)
_LINE_SEARCH_STEPS = 30


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


def check_feature_rows(
    features: np.ndarray, labels: np.ndarray, name: str, error: type[ValueError] = ValueError
) -> None:
    """Raises `error` naming `name` for a features matrix no protocol can use: not [N, D], rows
    and labels of different counts, no rows, NaN or infinite values (logistic regression and
    the predictors check the same)."""
    if features.ndim != 2:
        raise error(f"{name}: features must be [N, D], got shape {features.shape}")
    if len(features) != len(labels):
        raise error(
            f"{name}: {len(features)} feature rows but {len(labels)} labels; re-extract the "
            "features so that both come from the same split"
        )
    if len(features) == 0:
        raise error(f"{name}: no examples")
    if not np.all(np.isfinite(features)):
        bad = np.unique(np.nonzero(~np.isfinite(features))[0])
        raise error(
            f"{name}: {len(bad)} examples have NaN or infinite features (first rows "
            f"{bad[:5].tolist()}); check the model export and the extraction"
        )


def check_features(features: np.ndarray, labels: np.ndarray, name: str = "features") -> None:
    """Raises ValueError with what is wrong for inputs the fit cannot use."""
    check_feature_rows(features, labels, name)
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
        """float64 logits [N, K]; the features go to float64 a chunk of rows at a time."""
        out = np.empty((len(features), self.weights.shape[1]))
        for start in range(0, len(features), NumpyPasses.chunk_rows):
            rows = slice(start, start + NumpyPasses.chunk_rows)
            np.matmul(np.asarray(features[rows], np.float64), self.weights, out=out[rows])
        out += self.bias
        return out

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


def _loss_and_residual(logits: np.ndarray, targets: np.ndarray, binary: bool):
    """(summed loss, per-example gradient of the loss w.r.t. the logits); overwrites `logits`.

    `targets`: [N, K] 0/1 for the binary and one-vs-rest models, else the labels [N].
    """
    if binary:
        loss = float(np.sum(np.logaddexp(0.0, logits) - targets * logits))
        return loss, np.subtract(scipy.special.expit(logits, out=logits), targets, out=logits)
    rows = np.arange(len(logits))
    loss = -float(np.sum(logits[rows, targets]))
    loss += float(_softmax_(logits))
    logits[rows, targets] -= 1.0
    return loss, logits


def _softmax_(z: np.ndarray) -> float:
    """Softmax of the rows of `z` in place; returns the summed log-sum-exp."""
    top = z.max(axis=1, keepdims=True)
    z -= top
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    z /= total
    return float(np.sum(top) + np.sum(np.log(total)))


def _loss_along(logits, direction, alpha, targets, binary):
    """Summed loss at logits + α·direction and its first two derivatives in α."""
    z = direction * alpha
    z += logits
    if binary:
        loss = float(np.sum(np.logaddexp(0.0, z) - targets * z))
        p = scipy.special.expit(z, out=z)
        slope = float(np.sum((p - targets) * direction))
        p *= 1.0 - p
        p *= direction
        return loss, slope, float(np.sum(p * direction))
    rows = np.arange(len(z))
    at_label = direction[rows, targets]
    loss = _softmax_(z) - float(np.sum(logits[rows, targets]) + alpha * np.sum(at_label))
    z *= direction  # p t
    mean_t = z.sum(axis=1)
    z *= direction  # p t²
    return loss, float(np.sum(mean_t) - np.sum(at_label)), float(np.sum(z) - mean_t @ mean_t)


class NumpyPasses:
    """The passes over the training set that the solver makes, with numpy (BLAS) on the CPU.

    Precision 32 works on the centred, rotated features Z = (X − μ) U, computed once in float64
    and stored in float32: one sgemm per pass. Precision 64 recomputes from the features as given
    (float32 features are exact in float64) in float64, a chunk of rows at a time, so nothing
    N × D is held in float64. Logits, their softmax and the loss are float64 in both.
      forward(m, b, precision)         logits [N, K] of rotated weights m [r, K] and bias b [K]
                                       of the centred features (also of a search direction)
      backward(logits, precision)      (mean loss, ∂/∂m, ∂/∂b) at those logits, unregularised
      along(logits, direction, α)      (mean loss, d/dα, d²/dα²) at logits + α·direction
      step(logits, direction, α)       logits + α·direction (may reuse `logits`' memory)
    """

    name = "numpy"
    chunk_rows = 8192

    def __init__(self, features: np.ndarray):
        self.features = features  # as given: no copy

    def _chunks(self):
        """(rows, a float64 copy of those rows' features): callers may change it in place."""
        for start in range(0, len(self.features), self.chunk_rows):
            stop = start + self.chunk_rows
            yield slice(start, stop), np.array(self.features[start:stop], np.float64)

    def mean_and_scatter(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean [D] and centred scatter matrix [D, D], both float64."""
        mean = np.zeros(self.features.shape[1])
        for _, x in self._chunks():
            mean += x.sum(axis=0)
        mean /= len(self.features)
        scatter = np.zeros((len(mean), len(mean)))
        for _, x in self._chunks():
            x -= mean
            scatter += x.T @ x
        return mean, scatter

    def prepare(self, mean, basis, targets, binary: bool, num_outputs: int):
        """Z from the mean [D] and basis [D, r]; `targets` as `_loss_and_residual` takes them."""
        self.mean, self.basis, self.targets, self.binary = mean, basis, targets, binary
        self.z = np.empty((len(self.features), basis.shape[1]), np.float32)
        for rows, x in self._chunks():
            x -= mean
            self.z[rows] = x @ basis

    def forward(self, m: np.ndarray, b: np.ndarray, precision: int) -> np.ndarray:
        if precision == 32:
            logits = (self.z @ m.astype(np.float32)).astype(np.float64)
            logits += b
            return logits
        w = self.basis @ m
        c = b - self.mean @ w
        logits = np.empty((len(self.features), len(b)))
        for rows, x in self._chunks():
            np.matmul(x, w, out=logits[rows])
        logits += c
        return logits

    def backward(self, logits: np.ndarray, precision: int):
        n = len(self.features)
        loss, g = _loss_and_residual(logits.copy(), self.targets, self.binary)
        grad_b = g.sum(axis=0)
        if precision == 32:
            grad_m = (self.z.T @ g.astype(np.float32)).astype(np.float64)
        else:
            grad_w = np.zeros((len(self.mean), g.shape[1]))
            for rows, x in self._chunks():
                grad_w += x.T @ g[rows]
            grad_w -= np.outer(self.mean, grad_b)
            grad_m = self.basis.T @ grad_w
        return loss / n, grad_m / n, grad_b / n

    def along(self, logits: np.ndarray, direction: np.ndarray, alpha: float):
        loss, slope, curvature = _loss_along(logits, direction, alpha, self.targets, self.binary)
        n = len(self.features)
        return loss / n, slope / n, curvature / n

    def step(self, logits: np.ndarray, direction: np.ndarray, alpha: float) -> np.ndarray:
        logits += alpha * direction
        return logits

    def mean_loss(self, weights: np.ndarray, bias: np.ndarray) -> float:
        """Mean loss of any model in the original feature space, float64."""
        loss = 0.0
        for rows, x in self._chunks():
            loss += _loss_and_residual(x @ weights + bias, self.targets[rows], self.binary)[0]
        return loss / len(self.features)


def make_passes(features: np.ndarray, backend: str):
    if backend == "numpy":
        return NumpyPasses(features)
    if backend == "tensorflow":
        from transfer_tf.protocols import logreg_tf  # TensorFlow only when asked for

        return logreg_tf.TensorFlowPasses(features)
    raise ValueError(f"unknown logistic-regression backend {backend!r}; use numpy or tensorflow")


def _two_loop(grad: np.ndarray, memory: list) -> np.ndarray:
    """L-BFGS's approximation of H⁻¹ grad from the (s, y, 1/yᵀs) pairs in `memory`."""
    q = grad.copy()
    alphas = []
    for s, y, rho in reversed(memory):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if memory:
        s, y, _ = memory[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(memory, reversed(alphas), strict=True):
        q += (a - rho * float(y @ q)) * s
    return q


def _remember(memory: list, s: np.ndarray, y: np.ndarray) -> None:
    sy = float(s @ y)
    if sy > 1e-10 * float(y @ y):  # curvature pairs only (rounding can break yᵀs > 0)
        memory.append((s, y, 1.0 / sy))
        del memory[:-_MEMORY]


def _line_search(phi, value0: float, slope0: float):
    """Step α along a descent direction meeting the strong Wolfe conditions, or None.

    `phi(α)` → (value, slope, curvature) is cheap (elementwise work on the logits, no pass over
    the features), so the search takes safeguarded Newton steps on it, starting at α = 1.
    """
    lo, hi, alpha = 0.0, np.inf, 1.0
    for _ in range(_LINE_SEARCH_STEPS):
        value, slope, curvature = phi(alpha)
        armijo = value <= value0 + _WOLFE_C1 * alpha * slope0
        if armijo and abs(slope) <= _WOLFE_C2 * abs(slope0):
            return alpha
        if not armijo or slope > 0:
            hi = alpha
        else:
            lo = alpha
        newton = alpha - slope / curvature if curvature > 0 else np.nan
        if not lo < newton < hi:
            newton = 0.5 * (lo + hi) if np.isfinite(hi) else 4.0 * alpha
        alpha = min(newton, 10.0 * alpha) if not np.isfinite(hi) else newton
    return None


class LogisticRegressionProblem:
    """One training set, precomputed for fitting many λ (centring, rotation, rank reduction)."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        num_classes: int | None = None,
        *,
        backend: str = "numpy",
    ):
        check_features(features, labels, "training set")
        if features.dtype not in (np.float32, np.float64):
            features = np.asarray(features, np.float64)
        self.num_examples, self.num_features = features.shape
        self.multi_label = labels.ndim == 2
        if self.multi_label:
            targets = np.asarray(labels, np.float64)  # [N, K] 0/1
            prior = targets.mean(axis=0)
        else:
            labels = np.asarray(labels)
            if labels.min() < 0:
                raise ValueError(f"training set: negative label {labels.min()}")
            k = int(num_classes or labels.max() + 1)
            if labels.max() >= k:
                raise ValueError(f"training set: label {labels.max()} ≥ num_classes {k}")
            targets = labels.astype(np.int64)  # the multinomial model's labels [N]
            prior = np.bincount(targets, minlength=k) / len(targets)
            if k == 2:  # scikit-learn's binary model: one logit for class 1
                targets, prior = targets[:, None].astype(np.float64), prior[1:]
        self.binary = self.multi_label or len(prior) == 1
        self.num_outputs = len(prior)
        self.passes = make_passes(features, backend)

        # Eigenbasis of the centred scatter matrix; via the smaller Gram matrix when N < D.
        n, d = features.shape
        if n >= d:
            self.mean, scatter = self.passes.mean_and_scatter()
            s, u = np.linalg.eigh(scatter)
            del scatter
        else:
            x = np.array(features, np.float64)
            self.mean = x.mean(axis=0)
            x -= self.mean
            s, v = np.linalg.eigh(x @ x.T)
            keep = s > _RANK_RTOL * max(s.max(), 1e-300)
            s, v = s[keep], v[:, keep]
            u = (x.T @ v) / np.sqrt(s)
            del x
        keep = s > _RANK_RTOL * max(s.max(), 1e-300)
        self.basis = np.ascontiguousarray(u[:, keep][:, ::-1])  # [D, r], largest variance first
        self.variance = s[keep][::-1] / n  # [r]
        self._rotated_mean, self._mean_sq = self.basis.T @ self.mean, float(self.mean @ self.mean)
        self.passes.prepare(self.mean, self.basis, targets, self.binary, self.num_outputs)
        # Matrix products over all the features so far (forward or backward), by precision.
        self.half_passes = {32: 0, 64: 0}
        if self.binary:
            self.prior_bias = np.log(prior) - np.log1p(-prior)
        else:
            self.prior_bias = np.log(np.maximum(prior, 1e-12))
            self.prior_bias -= self.prior_bias.mean()

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def fit(
        self,
        l2: float,
        init: LinearModel | None = None,
        *,
        tol: float = 1e-6,
        max_iter: int = 1000,
    ) -> LinearModel:
        """Minimises the objective at λ = `l2`, starting from `init` (e.g. the previous λ).

        L-BFGS on θ = (V, b) with M = diag(d) V. A step costs one pass over the features: the
        logits of the search direction (forward) and, at the accepted step, the gradient
        (backward); the logits are kept and moved along the direction, so the line search
        needs no pass of its own. Float32 passes do the iterations until the gradient is below
        `tol` (or float32 rounding stops progress); then the logits and gradient are recomputed
        in float64, which decides convergence and, if needed, does the last iterations with the
        same L-BFGS memory. Converged means ‖∇f‖₂ ≤ `tol` in float64, in the original
        parametrisation (W, b) of the uncentred features: scikit-learn's lbfgs test is
        max |∂f/∂w| ≤ tol there, which ours implies. As scikit-learn's, a fit also ends when
        f decreases by less than 64 ε relative (float64's resolution of f).

        One function of ~90 lines on purpose: the iteration, its line search and the switch of
        precision share their state (m, b, the logits, the L-BFGS memory), which reads top to
        bottom here and would be passed around if split.
        """
        if not l2 > 0:
            raise ValueError(f"regularisation strength must be > 0, got {l2}")
        r, k = self.rank, self.num_outputs
        scale = 1.0 / np.sqrt(self.variance + l2 / _CURVATURE)[:, None]  # d, [r, 1]
        if init is None:
            m, b = np.zeros((r, k)), self.prior_bias.copy()
        else:
            m = self.basis.T @ init.weights
            b = init.bias + self.mean @ init.weights
        passes = self.passes

        def forward(m, b, precision):
            self.half_passes[precision] += 1
            return passes.forward(m, b, precision)

        def evaluate(logits, precision):
            """Objective, gradient in θ and ‖∇f‖ in (W, b) at the current (m, b) and logits."""
            self.half_passes[precision] += 1
            loss, grad_m, grad_b = passes.backward(logits, precision)
            grad_m += l2 * m
            # ∂f/∂W of the uncentred features, as scikit-learn's, is U ∂f/∂m + μ ∂f/∂bᵀ.
            norm = float(np.sqrt(
                np.sum(grad_m**2) + 2.0 * float(self._rotated_mean @ grad_m @ grad_b)
                + (self._mean_sq + 1.0) * np.sum(grad_b**2)
            ))  # fmt: skip
            value = loss + 0.5 * l2 * float(np.sum(m * m))
            return value, np.concatenate([(scale * grad_m).ravel(), grad_b]), norm

        precision, iterations, memory = 32, 0, []
        logits = forward(m, b, precision)
        value, grad, norm = evaluate(logits, precision)
        while True:
            target = _FLOAT32_TARGET * tol if precision == 32 else tol
            if norm > target and iterations < max_iter:
                direction = -_two_loop(grad, memory)
                dm, db = scale * direction[: r * k].reshape(r, k), direction[r * k :]
                t = forward(dm, db, precision)
                pen = (float(np.sum(m * m)), float(np.sum(m * dm)), float(np.sum(dm * dm)))

                def phi(alpha, logits=logits, t=t, pen=pen):
                    loss, slope, curv = passes.along(logits, t, alpha)
                    return (loss + 0.5 * l2 * (pen[0] + 2 * alpha * pen[1] + alpha**2 * pen[2]),
                            slope + l2 * (pen[1] + alpha * pen[2]), curv + l2 * pen[2])  # fmt: skip

                slope = float(grad @ direction)  # φ'(0); φ(0) is `value`, the same logits
                alpha = _line_search(phi, value, slope) if slope < 0 else None
                if alpha is not None:
                    logits = passes.step(logits, t, alpha)
                    m, b = m + alpha * dm, b + alpha * db
                    new_value, new_grad, norm = evaluate(logits, precision)
                    _remember(memory, alpha * direction, new_grad - grad)
                    decrease = value - new_value
                    value, grad, iterations = new_value, new_grad, iterations + 1
                    if decrease > _FTOL * max(abs(value), 1.0):
                        continue
            # Converged at this precision, out of iterations, or no progress left: as
            # scikit-learn's lbfgs, a relative decrease of f below 64 ε ends a fit; in float32
            # it ends the float32 phase (its rounding usually sets in first).
            if precision == 64:
                break
            precision = 64  # exact logits and gradient here; go on with the same memory
            logits = forward(m, b, precision)
            value, grad, norm = evaluate(logits, precision)
        weights = self.basis @ m
        return LinearModel(
            weights=weights,
            bias=b - self.mean @ weights,
            multi_label=self.multi_label,
            l2=float(l2),
            objective=float(value),
            iterations=iterations,
        )

    def objective_of(self, model: LinearModel) -> float:
        """The objective of any model (e.g. scikit-learn's) on this training set, float64."""
        weights = np.asarray(model.weights, np.float64)
        loss = self.passes.mean_loss(weights, np.asarray(model.bias, np.float64))
        return float(loss + 0.5 * model.l2 * np.sum(weights**2))

    def fit_path(self, l2s, *, tol: float = 1e-6, max_iter: int = 1000):
        """Yields a LinearModel per λ in `l2s`, each warm-started from the previous one."""
        model = None
        for l2 in l2s:
            model = self.fit(float(l2), model, tol=tol, max_iter=max_iter)
            yield model


def class_balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of exactly `per_class` examples of every class (Fig. 9): the one rule of
    every protocol, `transfer_tf.data.subsets.class_balanced_subset`, over the features' rows
    (the records' evaluation order)."""
    return subsets.class_balanced_subset(labels, per_class, seed)


# ---------------------------------------------------------------------------------------------
# The grid's λ path, resumable exactly.

_MODEL_FIELDS = ("weights", "bias", "multi_label", "l2", "objective", "iterations")


class GridPath:
    """The grid stage's fits along the λ path (strong → weak), each warm-started from the one
    before, so that a sweep resumed after SIGKILL computes exactly what an uninterrupted run
    does: before each fit, the state after the finished cells (the last fit, the best fit on
    validation so far, the validation metrics) is saved to `warm_file`; a resumed run loads it
    when its validation metrics equal the finished cells' records, and otherwise (a kill
    between a cell's record and the next save, a record deleted) refits from the nearest saved
    state, or from the start, without writing. Refits repeat the original arithmetic exactly.
    """

    def __init__(
        self, features, labels, num_classes, l2s, validate, *, fit_args, backend, warm_file,
        cell_paths,
    ):  # fmt: skip
        self._data = (features, labels, num_classes, backend)
        self.l2s, self.validate, self.fit_args = l2s, validate, fit_args
        self.warm_file, self.cell_paths = warm_file, cell_paths
        self._problem = None
        self._reset()

    def _reset(self):
        self.last = self.best = None
        self.vals: list[float] = []  # validation metric of fits 0 .. done

    @property
    def done(self) -> int:
        """Index of the last fit in the state (-1: none)."""
        return len(self.vals) - 1

    def fit_cell(self, index: int) -> tuple[float, LinearModel]:
        """(validation metric, fit) of grid point `index`, the cells before it finished."""
        self._advance(index - 1)
        self._save()
        return self._step()

    def grid_fit(self, index: int) -> LinearModel:
        """The fit at grid point `index`, all grid cells finished (the best fit, kept)."""
        self._advance(len(self.l2s) - 1)
        if self.best is not None and self.best.l2 == float(self.l2s[index]):
            return self.best
        # The records chose another point than this path's validation metrics would (records
        # from another machine): refit the path up to it.
        self._reset()
        self._advance(index)
        return self.last

    def close(self):
        self._problem = None

    def forget(self):
        if files.exists(self.warm_file):
            files.remove(self.warm_file)

    def _step(self) -> tuple[float, LinearModel]:
        if self._problem is None:
            self._problem = LogisticRegressionProblem(*self._data[:3], backend=self._data[3])
        fit = self._problem.fit(float(self.l2s[self.done + 1]), self.last, **self.fit_args)
        val = self.validate(fit)
        best_val = max((v for v in self.vals if not np.isnan(v)), default=-np.inf)
        if val > best_val:  # ties: the earlier (stronger) λ, as the choice from the records
            self.best = fit
        self.last = fit
        self.vals.append(val)
        return val, fit

    def _advance(self, index: int):
        """Brings the state to fits 0 .. `index`."""
        if self.done > index:
            self._reset()
        if self.done < index:
            self._load(index)
        while self.done < index:
            self._step()

    def _load(self, index: int):
        if not files.exists(self.warm_file):
            return
        try:
            with np.load(io.BytesIO(files.read_bytes(self.warm_file))) as data:
                saved = {k: data[k] for k in data.files}
            vals = saved["vals"].tolist()
            last, best = (
                LinearModel(**{f: saved[f"{which}.{f}"].item() if saved[f"{which}.{f}"].ndim == 0
                               else saved[f"{which}.{f}"] for f in _MODEL_FIELDS})
                for which in ("last", "best")
            )  # fmt: skip
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return  # a damaged warm start: refit instead
        if not self.done < len(vals) - 1 <= index:
            return
        for val, path in zip(vals, self.cell_paths, strict=False):
            record = sweep.load_record(path)
            if record is None or record.get("val_metric") != val:
                return  # not the state of these records
        self.vals, self.last, self.best = vals, last, best

    def _save(self):
        if self.last is None:
            return
        arrays = {"vals": np.asarray(self.vals, np.float64)}
        for which, model in (("last", self.last), ("best", self.best)):
            arrays.update({f"{which}.{f}": np.asarray(getattr(model, f)) for f in _MODEL_FIELDS})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files.makedirs(files.dirname(self.warm_file))
        files.atomic_write_bytes(self.warm_file, buffer.getvalue())


def _warm_file(results_dir, base, l2s, inputs, tol, max_iter, backend) -> str:
    """Where a sweep's grid path keeps its warm start: hidden beside the cell locks, named by
    everything the path's fits depend on."""
    key = dict(base, l2s=[float(v) for v in l2s], inputs=dict(inputs or {}), tol=tol,
               max_iter=max_iter, backend=backend)  # fmt: skip
    return files.join(results_dir, ".warm_start", f"logreg-{sweep.fingerprint(key)}.npz")


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


def _checked_num_classes(splits: Mapping, dataset: str) -> int:
    """The number of classes of `splits`, each split checked (one error naming the split)."""
    for split in ("train", "val", "test"):
        if split not in splits:
            raise ValueError(f"the {split} split is missing; extract features for train, val, test")
    x_tr, y_tr = splits["train"]
    check_features(x_tr, y_tr, f"{dataset} train")
    for split in ("val", "test"):
        _eval_checks(*splits[split], x_tr.shape[1], f"{dataset} {split}")
    labels = [splits[s][1] for s in ("train", "val", "test")]
    if len({y.ndim for y in labels}) > 1:
        raise ValueError(f"{dataset}: some splits are multi-label and some are not")
    return y_tr.shape[1] if y_tr.ndim == 2 else int(max(y.max() for y in labels)) + 1


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
    backend: str = "numpy",
    inputs: Mapping[str, str] | None = None,
) -> dict:
    """The whole protocol on `splits` {"train", "val", "test": (features, labels)}.

    Writes one grid cell per λ (stage "grid": fit on train, `val_metric` on val) and one final
    cell (stage "final": refit on train+val at the best λ, `test_metric` and per-example test
    predictions, with `test_ids` if given); returns the final record. Scores passed to the
    metric are probabilities (softmax, or sigmoid per class). A rerun skips finished cells. With
    `per_class`, the training examples of both stages are a class-balanced random subset (seeded)
    of train, then of train+val; validation and test stay whole. `backend` ("numpy" or
    "tensorflow") computes the passes over the training set (see `NumpyPasses`).
    """
    num_classes = _checked_num_classes(splits, dataset)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (splits[s] for s in ("train", "val", "test"))
    score = metric_fn(metric)
    l2s = l2_grid() if l2s is None else np.asarray(sorted(l2s, reverse=True), np.float64)
    x_trva, y_trva = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    if per_class is not None:
        inputs = {**(inputs or {}), **subsets.SUBSET_INPUTS}  # cells of an older rule: stale
        x_tr, y_tr = _take(x_tr, y_tr, class_balanced_subset(y_tr, per_class, seed))
        x_trva, y_trva = _take(x_trva, y_trva, class_balanced_subset(y_trva, per_class, seed))
    base = dict(
        protocol="logreg", model=model, architecture=architecture, settings=settings,
        dataset=dataset, metric=metric, seed=seed, per_class=per_class,
    )  # fmt: skip
    grid_cells = [
        dict(base, stage="grid", hparams={"l2": float(l2), "C": l2_to_c(l2, len(x_tr))})
        for l2 in l2s
    ]
    path = GridPath(
        x_tr, y_tr, num_classes, l2s, lambda fit: float(score(y_va, fit.probabilities(x_va))),
        fit_args=dict(tol=tol, max_iter=max_iter), backend=backend,
        warm_file=_warm_file(results_dir, base, l2s, inputs, tol, max_iter, backend),
        cell_paths=[sweep.cell_path(results_dir, c) for c in grid_cells],
    )  # fmt: skip

    def run_grid_cell(cell):
        val_metric, fit = path.fit_cell(l2s.tolist().index(cell["hparams"]["l2"]))
        return {"val_metric": val_metric, "steps": fit.iterations}

    records = sweep.run_cells(
        grid_cells, results_dir, run_grid_cell, progress=progress, inputs=inputs
    )
    val = np.array([np.nan if r["val_metric"] is None else r["val_metric"] for r in records])
    if np.all(np.isnan(val)):
        raise ValueError(f"{dataset}: no grid cell has a validation metric")
    best = int(np.nanargmax(val))  # ties: the first, i.e. the strongest regularisation
    chosen = float(l2s[best])

    def run_final_cell(cell):
        start = path.grid_fit(best)  # the final fit is warm-started from the chosen grid fit
        path.close()  # free the grid's precomputation (N × D float32)
        problem = LogisticRegressionProblem(x_trva, y_trva, num_classes, backend=backend)
        fit = problem.fit(chosen, start, tol=tol, max_iter=max_iter)
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
    (final,) = sweep.run_cells(
        [final_cell], results_dir, run_final_cell, progress=progress, inputs=inputs
    )
    path.forget()  # a finished sweep needs no warm start
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
