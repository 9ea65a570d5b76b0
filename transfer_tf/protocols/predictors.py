"""Cheap transfer predictors (issue 19, beyond the paper): numbers computed from a model's fixed
features of a target dataset, or from its source-task predictions on it, that claim to rank models
by how well they transfer, at a fraction of the cost of training on the target.

One function per method, named as in the literature; higher always predicts better transfer:

- `knn`: k-nearest-neighbour classifier, cosine similarity, majority vote; k chosen on the
  validation split, then train+val as the reference set scored on test.
- `fewshot_ridge`: the few-shot linear probe of big_vision (and Ericsson et al. 2021): closed-form
  ridge regression onto one-hot targets on L2-normalised features, `shots` random training
  examples per class; λ chosen on validation, scored on test.
- `logme` (You et al. 2021): mean over classes of the log maximum evidence per example of a
  Bayesian linear model from the features to the one-hot label column.
- `leep` (Nguyen et al. 2020): log expected empirical prediction from the source model's class
  probabilities.
- `nce` (Tran et al. 2019): negative conditional entropy H(Y | Z) of the target label given the
  source model's hard prediction.
- `h_score` (Bao et al. 2019): tr(cov(f)⁺ cov(E[f | y])).
- `gbc` (Pándy et al. 2022): minus the summed Bhattacharyya coefficients between per-class
  Gaussians of PCA-reduced features.

Plain numpy / scipy; inputs are checked and errors name what is wrong in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack
import scipy.special

from transfer_tf.protocols.logreg import check_feature_rows

# k of the nearest-neighbour classifier, tried on validation (those ≤ the training-set size).
K_GRID = (1, 3, 5, 10, 20, 50, 100, 200)
# Training examples per class of the few-shot probes (big_vision reports 1, 5, 10, 25 shots).
FEWSHOT_SHOTS = (1, 5, 10, 25)
# Ridge strengths of the few-shot probe, half a decade apart; on unit-norm features the Gram
# matrix's entries are cosines, so 1e-4 … 1e4 spans nearly-interpolating to nearly-constant.
RIDGE_L2_GRID = tuple(float(v) for v in np.logspace(-4, 4, 17))
# GBC (Pándy et al. 2022; their source-selection configuration): PCA to 64 dimensions,
# spherical class Gaussians, class variances floored at 1e-4 as in their code.
GBC_PCA_DIM = 64
GBC_VARIANCE_FLOOR = 1e-4
# Eigenvalues below this fraction of the largest are numerically zero (rank of the features).
_RANK_RTOL = 1e-10
_EPS = 4 * np.finfo(float).eps

Metric = Callable[[np.ndarray, np.ndarray], float]


class PredictorError(ValueError):
    """Input a predictor cannot use; the message names the data and what to do."""


# ---------------------------------------------------------------------------------------------
# Input checks.


def check_features(features: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Raises PredictorError for features a predictor cannot use (shape, count, NaN)."""
    check_feature_rows(features, labels, name, PredictorError)
    if labels.ndim not in (1, 2):
        raise PredictorError(f"{name}: labels must be [N] or multi-hot [N, C], got {labels.shape}")
    if labels.ndim == 1 and len(labels) and labels.min() < 0:
        raise PredictorError(f"{name}: negative label {labels.min()}")


def class_counts(labels: np.ndarray) -> dict[int, int]:
    """Examples per class present in single-label `labels`."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts, strict=True)}


def require_per_class(labels: np.ndarray, minimum: int, name: str, why: str) -> None:
    """Every class present in `labels` has at least `minimum` examples, or a one-line error."""
    counts = class_counts(labels)
    short = {c: n for c, n in counts.items() if n < minimum}
    if short:
        c, n = next(iter(short.items()))
        more = f" (and {len(short) - 1} more classes)" if len(short) > 1 else ""
        raise PredictorError(
            f"{name}: class {c} has {n} example{'s' * (n != 1)}{more}; {why} needs at least "
            f"{minimum} per class: add examples or leave it out of --predictors"
        )


def _single_label(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PredictorError(f"{what} needs single-label data; these labels are {labels.shape}")
    return labels.astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (a zero row stays zero); keeps float32 as float32."""
    x = np.asarray(features)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


# ---------------------------------------------------------------------------------------------
# Probes that predict: k-NN and the few-shot ridge. Both choose their one setting on the
# validation split (never on test) and score test in the dataset's metric.


@dataclasses.dataclass
class ProbeResult:
    """A probe's choice on validation and its test score."""

    val_metric: float
    test_metric: float
    chosen: float  # k, or the ridge strength λ
    grid: np.ndarray  # the values tried
    val_curve: np.ndarray  # validation metric per value tried
    y_pred: np.ndarray  # test predictions: class index [N], or 0/1 [N, C] (multi-label)
    y_score: np.ndarray | None = None  # test scores [N, C] of multi-label data
    support: np.ndarray | None = None  # few-shot: indices of the training examples used


def cosine_neighbours(
    reference: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    chunk_rows: int = 1024,
    normalized: bool = False,
) -> np.ndarray:
    """[Nq, k] indices into `reference` of each query's k most cosine-similar rows, most similar
    first (equal similarities: lower index first, also at the k-th place). `normalized`: the
    caller's rows already have unit norm (`l2_normalize`), so they are used as given."""
    unit = (lambda x: x) if normalized else l2_normalize
    ref = unit(reference)
    k = min(int(k), len(ref))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk_rows):
        q = unit(queries[start : start + chunk_rows]).astype(ref.dtype, copy=False)
        out[start : start + len(q)] = _top_k(q @ ref.T, k)
    return out


def _top_k(similarity: np.ndarray, k: int) -> np.ndarray:
    """[Nq, k] column indices of each row's k largest values, largest first, ties by index.

    Each row's k-th largest value (a partition of the values, no index array) is a threshold;
    the few entries at or above it are sorted by (row, −value, column). On a 2,048 × 60,600 block
    (Food-101's size) 1.4 s against `argpartition`'s 2.4 s, and no [rows, N] int64 index array."""
    rows, n = similarity.shape
    kth = np.partition(similarity, n - k, axis=1)[:, n - k]
    row, col = np.nonzero(similarity >= kth[:, None])  # ≥ k per row (more on ties)
    order = np.lexsort((col, -similarity[row, col], row))
    row, col = row[order], col[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)  # place within its row
    return col[rank < k].reshape(rows, k)


def knn_scores(
    neighbours: np.ndarray, reference_labels: np.ndarray, k: int, num_classes: int
) -> np.ndarray:
    """[Nq, C] fraction of the first k neighbours in each class (multi-hot: positive for it).

    The arg-max breaks ties towards the lower class index, as scikit-learn's majority vote does.
    """
    idx = neighbours[:, :k]
    labels = np.asarray(reference_labels)
    if labels.ndim == 2:
        scores = np.zeros((len(idx), labels.shape[1]), np.float32)
        for start in range(0, len(idx), 1024):
            rows = idx[start : start + 1024]
            scores[start : start + len(rows)] = labels[rows].mean(axis=1)
        return scores
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])
    flat = rows * num_classes + labels[idx].ravel()
    counts = np.bincount(flat, minlength=len(idx) * num_classes)
    return (counts.reshape(len(idx), num_classes) / k).astype(np.float32)


def _predictions(scores: np.ndarray, multi_label: bool) -> np.ndarray:
    return (scores > 0.5).astype(np.int8) if multi_label else np.argmax(scores, axis=1)


def knn(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    metric: Metric,
    *,
    num_classes: int,
    k_grid=K_GRID,
    normalized: bool = False,
) -> ProbeResult:
    """k-NN accuracy: k chosen on val (train as reference; ties: the smaller k), then train+val
    as reference, scored on test with `metric(y_true, scores)`. `normalized`: every split's rows
    already have unit norm (the sweep normalises them once for k-NN and the few-shot probes)."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train, val, test
    ks = sorted({int(k) for k in k_grid if 1 <= int(k) <= len(x_tr)})
    if not ks:
        raise PredictorError(f"kNN: no k in {list(k_grid)} is between 1 and {len(x_tr)}")
    neighbours = cosine_neighbours(x_tr, x_va, max(ks), normalized=normalized)
    curve = np.array([metric(y_va, knn_scores(neighbours, y_tr, k, num_classes)) for k in ks])
    best = int(np.argmax(curve))
    chosen = ks[best]
    x_ref, y_ref = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    nearest = cosine_neighbours(x_ref, x_te, chosen, normalized=normalized)
    scores = knn_scores(nearest, y_ref, chosen, num_classes)
    multi_label = np.asarray(y_tr).ndim == 2
    return ProbeResult(
        val_metric=float(curve[best]),
        test_metric=float(metric(y_te, scores)),
        chosen=chosen,
        grid=np.array(ks),
        val_curve=curve,
        y_pred=_predictions(scores, multi_label),
        y_score=scores if multi_label else None,
    )


def ridge_regression(
    features: np.ndarray, targets: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """(W [D, C], b [C]) minimising ‖X W + 1 bᵀ − Y‖² + λ‖W‖² (unregularised bias)."""
    path = RidgePath(features, targets)
    return path.weights(l2)


class RidgePath:
    """Closed-form ridge for many λ on one training set: centring (absorbs the unregularised
    bias), then one eigendecomposition of the smaller of X_cX_cᵀ and X_cᵀX_c; every λ is then
    a diagonal scaling in that eigenbasis.

    Fewer examples than dimensions (the few-shot probes): X_cX_cᵀ = V diag(e) Vᵀ and
    W = X_cᵀ V diag(1/(e+λ)) Vᵀ Y_c, so evaluation features enter through their kernel with the
    training examples, (X − μ) X_cᵀ V (`project`), and X_cᵀ V [D, n] is never formed."""

    def __init__(self, features: np.ndarray, targets: np.ndarray):
        x = np.asarray(features, np.float64)
        y = np.asarray(targets, np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.x_mean, y - self.y_mean
        self.kernel = len(xc) <= xc.shape[1]
        # numpy.linalg.eigh reads the lower triangle only, which syrk fills at half the flops
        # of a product. The eigenvectors are formed (not kept factored as in `Eigenbasis`):
        # evaluation sets as large as the training set are projected on them in float32.
        gram = scipy.linalg.blas.dsyrk(1.0, xc, trans=0 if self.kernel else 1, lower=1)
        self.eig, self.basis = np.linalg.eigh(gram)
        if self.kernel:
            self.xc, self.right = xc, self.basis.T @ yc
        else:  # W = Q diag(1/(e+λ)) Qᵀ X_cᵀ Y_c, X_cᵀX_c = Q diag(e) Qᵀ
            self.xc, self.right = None, self.basis.T @ (xc.T @ yc)
        self.eig = np.maximum(self.eig, 0.0)

    def weights(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        if not l2 > 0:
            raise PredictorError(f"ridge strength must be > 0, got {l2}")
        w = self.basis @ (self.right / (self.eig + l2)[:, None])
        if self.kernel:
            w = self.xc.T @ w
        return w, self.y_mean - self.x_mean @ w

    def predict(self, features: np.ndarray, l2: float) -> np.ndarray:
        """[N, C] scores of the ridge at λ = `l2`."""
        w, b = self.weights(l2)
        return np.asarray(features, np.float64) @ w + b

    def project(self, features: np.ndarray) -> np.ndarray:
        """Features in the eigenbasis (computed once per evaluation set, float32)."""
        x = np.asarray(features, np.float32) - self.x_mean.astype(np.float32)
        if self.kernel:
            return (x @ self.xc.T.astype(np.float32)) @ self.basis.astype(np.float32)
        return x @ self.basis.astype(np.float32)

    def scores(self, projected: np.ndarray, l2: float) -> np.ndarray:
        right = (self.right / (self.eig + l2)[:, None]).astype(np.float32)
        return projected @ right + self.y_mean.astype(np.float32)


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of `shots` random examples of every class present (seeded)."""
    labels = _single_label(labels, "the few-shot probe")
    rng = np.random.default_rng(seed)
    chosen = []
    for c, n in class_counts(labels).items():
        if n < shots:
            raise PredictorError(
                f"{shots}-shot probe: class {c} has only {n} training examples; use fewer shots"
            )
        chosen.append(rng.choice(np.flatnonzero(labels == c), shots, replace=False))
    return np.sort(np.concatenate(chosen))


def fewshot_ridge(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    metric: Metric,
    *,
    shots: int,
    seed: int,
    num_classes: int,
    l2_grid=RIDGE_L2_GRID,
    normalized: bool = False,
) -> ProbeResult:
    """The few-shot linear probe: ridge from L2-normalised features to one-hot targets, fit on
    `shots` examples per class of train (seeded), λ chosen on val (ties: the stronger), scored on
    test with `metric`. `normalized`: every split's rows already have unit norm."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train, val, test
    unit = (lambda x: x) if normalized else l2_normalize
    support = sample_shots(y_tr, shots, seed)
    path = RidgePath(unit(x_tr[support]), one_hot(y_tr[support], num_classes))
    l2s = np.sort(np.asarray(l2_grid, np.float64))[::-1]  # strongest first: ties keep it
    projected = path.project(unit(x_va))
    curve = np.array([metric(y_va, path.scores(projected, l2)) for l2 in l2s])
    best = int(np.argmax(curve))
    scores = path.predict(unit(x_te), l2s[best])  # one λ: through the weights
    return ProbeResult(
        val_metric=float(curve[best]),
        test_metric=float(metric(y_te, scores)),
        chosen=float(l2s[best]),
        grid=l2s,
        val_curve=curve,
        y_pred=np.argmax(scores, axis=1),
        support=support,
    )


# ---------------------------------------------------------------------------------------------
# Scores from the target training data alone.


class Eigenbasis:
    """A = V diag(values) Vᵀ of a symmetric matrix with V = Q Z kept factored: Q the Householder
    reflectors of A's reduction to a tridiagonal T = QᵀAQ (LAPACK dsytrd), Z the eigenvectors of
    T (MRRR, dstemr). What the predictors need of V is Vᵀ applied to a few columns and a few of
    its columns, O(D²) each; forming all of V, as numpy.linalg.eigh does, doubles the time (D =
    2048: 0.8 s of CPU against 1.5 s). Falls back to numpy.linalg.eigh if a random probe finds Z
    not orthonormal or not T's eigenvectors (MRRR on pathological clusters)."""

    def __init__(self, a: np.ndarray):
        a = np.asarray(a, np.float64)
        d = len(a)
        self._reflectors = None
        if d >= 3:
            lwork = int(scipy.linalg.lapack.dsytrd_lwork(d, lower=1)[0])
            c, diag, off, tau, info = scipy.linalg.lapack.dsytrd(a, lower=1, lwork=lwork)
            if info == 0:
                values, z = scipy.linalg.eigh_tridiagonal(diag, off, check_finite=False)
                if _is_eigenbasis(diag, off, values, z):
                    self.values, self._z = values, z
                    self._reflectors = (np.asfortranarray(c[1:, :-1]), tau)
        if self._reflectors is None:
            self.values, self._z = np.linalg.eigh(a)

    def _reflect(self, m: np.ndarray, transpose: bool) -> np.ndarray:
        """Qᵀ m (`transpose`) or Q m. dsytrd's lower reflectors Hᵢ act on rows i + 1 …, stored
        below the subdiagonal as a QR factorisation's of A[1:, :−1]: blocked by dormqr."""
        m = np.array(m, np.float64, order="F")
        if self._reflectors is None:
            return m
        a, tau = self._reflectors
        lwork = max(1, 64 * m.shape[1])
        out, _, info = scipy.linalg.lapack.dormqr(
            "L", "T" if transpose else "N", a, tau, m[1:], lwork
        )
        if info != 0:
            raise np.linalg.LinAlgError(f"dormqr failed (info {info})")
        m[1:] = out
        return m

    def to_basis(self, m: np.ndarray) -> np.ndarray:
        """Vᵀ m for m [D, k]."""
        return self._z.T @ self._reflect(m, transpose=True)

    def vectors(self, columns) -> np.ndarray:
        """V[:, columns] (eigenvalues ascending)."""
        return self._reflect(self._z[:, columns], transpose=False)


def _is_eigenbasis(diag, off, values, z, tol=1e-9) -> bool:
    """Z orthonormal with T Z = Z diag(values), checked on two random combinations (O(D²))."""
    r = np.random.default_rng(0).standard_normal((len(diag), 2))
    zr = z @ r
    t_zr = diag[:, None] * zr
    t_zr[:-1] += off[:, None] * zr[1:]
    t_zr[1:] += off[:, None] * zr[:-1]
    scale = max(np.abs(values).max(), np.finfo(float).tiny) * np.linalg.norm(r)
    return bool(
        np.linalg.norm(z.T @ zr - r) <= tol * np.linalg.norm(r)
        and np.linalg.norm(t_zr - z @ (values[:, None] * r)) <= tol * scale
    )


@dataclasses.dataclass
class FeatureStats:
    """What LogME, H-score and GBC share on one set of features (N ≥ D): the mean, the centred
    scatter matrix X_cᵀX_c and, on first use, its eigendecomposition (the costliest step, done
    once for the three: LogME works in its eigenbasis, H-score's pseudo-inverse and GBC's PCA
    come from it)."""

    n: int
    mean: np.ndarray  # [D]
    scatter: np.ndarray  # [D, D]
    _eigenbasis: Eigenbasis | None = None

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        x = np.asarray(features, np.float64)
        mean = x.mean(axis=0)
        # One triangle (half the flops of xc.T @ xc), then mirrored.
        scatter = scipy.linalg.blas.dsyrk(1.0, x - mean, trans=1, lower=1)
        scatter += np.tril(scatter, -1).T
        return cls(len(x), mean, scatter)

    @property
    def has_eigenbasis(self) -> bool:
        return self._eigenbasis is not None

    def eigenbasis(self) -> Eigenbasis:
        """The scatter matrix's eigendecomposition, computed once."""
        if self._eigenbasis is None:
            self._eigenbasis = Eigenbasis(self.scatter)
        return self._eigenbasis

    def leading_directions(self, dim: int) -> np.ndarray:
        """[D, dim] eigenvectors of the `dim` largest eigenvalues, largest first: from the full
        eigendecomposition, shared (LAPACK's subset drivers are no faster on the clustered
        spectra of real features: 9.5 s against 3.6 s for D = 2048)."""
        d = len(self.scatter)
        return self.eigenbasis().vectors(np.arange(d - 1, d - 1 - min(dim, d), -1))


def _stats(features: np.ndarray, stats: FeatureStats | None) -> FeatureStats:
    if stats is None:
        return FeatureStats.of(features)
    if stats.n != len(features) or stats.scatter.shape[0] != np.shape(features)[1]:
        raise PredictorError("FeatureStats were computed on other features")
    return stats


@dataclasses.dataclass
class LogMEResult:
    score: float  # mean over targets of the log evidence per example
    evidence: np.ndarray  # [T] log evidence per example of each target column
    alpha: np.ndarray  # [T] prior precision of the weights
    beta: np.ndarray  # [T] noise precision
    iterations: int


def _targets(labels: np.ndarray) -> np.ndarray:
    """One-hot columns of the classes present, or the multi-hot columns with a positive."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        y = np.asarray(labels, np.float64)
        return y[:, y.sum(axis=0) > 0]
    classes = np.unique(labels)
    return (labels[:, None] == classes[None, :]).astype(np.float64)


class _LogMESpectrum:
    """What LogME's fixed point needs of F, per target column y and its λ = α/β, each in O(D)
    (or O(N)) per column: `moments(λ)` = (γ = Σᵢ sᵢ/(sᵢ+λ), ‖m‖², ‖y − F m‖²) with
    m = (FᵀF + λI)⁻¹Fᵀy, and `logdet(λ)` = log det(I + FᵀF/λ) = Σᵢ log(1 + sᵢ/λ), sᵢ the
    eigenvalues of FᵀF.

    N ≥ D (`stats`): in the eigenbasis of the centred scatter X_cᵀX_c = Q diag(e) Qᵀ (shared with
    H-score and GBC), FᵀF = X_cᵀX_c + N μμᵀ is diag(e) + N w wᵀ with w = Qᵀμ: (FᵀF + λI)⁻¹ is a
    diagonal inverse with a Sherman–Morrison correction, and by the determinant lemma
    log det(I + FᵀF/λ) = Σ log(1 + eᵢ/λ) + log(1 + N wᵀ(diag(e) + λI)⁻¹w).
    N < D: FFᵀ = U diag(s) Uᵀ (the N × N Gram matrix; its rank r: the s above 1e-10 of the
    largest), y's coordinates x = Uᵀy along F's left singular vectors, ‖m‖² = Σ s x²/(s+λ)².
    """

    def __init__(self, f: np.ndarray, y: np.ndarray, stats: FeatureStats | None):
        self.n = len(f)
        self.y2 = (y**2).sum(axis=0)
        if stats is not None:
            basis = stats.eigenbasis()
            self.e = np.maximum(basis.values, 0.0)
            # μ and Fᵀy in the eigenbasis: w [D], b [D, T]
            wb = basis.to_basis(np.column_stack([stats.mean, f.T @ y]))
            self.w, self.b = wb[:, 0], wb[:, 1:]
            self.gram = False
        else:
            s, u = np.linalg.eigh(f @ f.T)
            keep = s > _RANK_RTOL * max(s.max(), 1e-300)
            self.e, self.x2 = s[keep], (u[:, keep].T @ y) ** 2
            self.gram = True

    def moments(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = self.e[:, None]
        if self.gram:
            denom = e + lam
            m2 = (e * self.x2 / denom**2).sum(axis=0)
            outside = np.maximum(self.y2 - self.x2.sum(axis=0), 0.0)  # ‖y‖² off F's columns
            res2 = (self.x2 * (lam / denom) ** 2).sum(axis=0) + outside
            return (e / denom).sum(axis=0), m2, res2
        inv = 1.0 / (e + lam)  # (diag(e) + λI)⁻¹, a column per target
        inv_w = inv * self.w[:, None]
        shrink = self.n / (1.0 + self.n * (self.w @ inv_w))
        inv_b = inv * self.b
        m = inv_b - inv_w * (shrink * (self.w @ inv_b))
        m2 = (m**2).sum(axis=0)
        res2 = np.maximum(self.y2 - (self.b * m).sum(axis=0) - lam * m2, 0.0)  # ‖y‖² − bᵀm − λ‖m‖²
        gamma = (e * inv).sum(axis=0) + lam * shrink * (inv_w**2).sum(axis=0)
        return gamma, m2, res2

    def logdet(self, lam: np.ndarray) -> np.ndarray:
        out = np.log1p(self.e[:, None] / lam).sum(axis=0)
        if not self.gram:
            out += np.log1p(self.n * (self.w**2) @ (1.0 / (self.e[:, None] + lam)))
        return out


def logme(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    tol: float = 1e-8,
    max_iter: int = 100,
    stats: FeatureStats | None = None,
) -> LogMEResult:
    """LogME (You et al. 2021): for each label column y, the maximum over (α, β) of the evidence
    log p(y | F, α, β) of y = F w + ε, w ~ N(0, α⁻¹I), ε ~ N(0, β⁻¹I), per example, averaged over
    columns; features as given (no centring, no bias), as the published code.

    MacKay's fixed point, as the published algorithm: with FᵀF = V diag(s) Vᵀ and t = VᵀFᵀy,
    m = t / (s + α/β), γ = Σ s / (s + α/β), α ← γ / ‖m‖², β ← (N − γ) / ‖y − F m‖², until α/β
    changes by less than `tol` (relative; the published code stops at 1e-3 after ≤ 11 steps, and
    adds 1e-5 to ‖m‖² and the residual). The evidence is exact whatever the rank r of F:
    r/2 log α + N/2 log β − ½ Σᵢ log(α + β sᵢ) − β/2 ‖y − F m‖² − α/2 ‖m‖² − N/2 log 2π over the
    r nonzero sᵢ, computed as N/2 log β − ½ log det(I + FᵀF β/α) − … (`_LogMESpectrum`: O(D)
    per class and step). (The published fixed-point code writes D/2 log α with only the r
    nonzero sᵢ, which differs when r < D; its first, ICML version sums over all D and agrees.)
    """
    f = np.asarray(features, np.float64)
    y = _targets(labels)
    n, d = f.shape
    spectrum = _LogMESpectrum(f, y, _stats(f, stats) if n >= d else None)
    columns = y.shape[1]
    alpha, beta = np.ones(columns), np.ones(columns)
    evidence = np.full(columns, np.nan)
    active = np.ones(columns, bool)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        lam = alpha / beta
        gamma, m2, res2 = spectrum.moments(lam)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            new_alpha, new_beta = gamma / m2, (n - gamma) / res2
            new_lam = new_alpha / new_beta
            safe_lam = np.where(np.isfinite(new_lam) & (new_lam > 0), new_lam, 1.0)
            new_evidence = _log_evidence(
                new_alpha, new_beta, spectrum.logdet(safe_lam), m2, res2, n
            )
        # A column whose noise precision runs off to infinity (the features interpolate it, as
        # can happen when N ≤ D) stops where its evidence stops changing, or at its last finite
        # point: the evidence converges while β diverges.
        ok = active & np.isfinite(new_evidence) & (new_alpha > 0) & (new_beta > 0)
        done = ok & (
            (np.abs(new_alpha / np.where(ok, new_beta, 1.0) - lam) <= tol * lam)
            | (np.abs(new_evidence - evidence) <= _EPS * np.maximum(1.0, np.abs(evidence)))
        )
        alpha, beta = np.where(ok, new_alpha, alpha), np.where(ok, new_beta, beta)
        evidence = np.where(ok, new_evidence, evidence)
        active &= ok & ~done
        if not active.any():
            break
    if not np.all(np.isfinite(evidence)):
        raise PredictorError("LogME: the evidence is not finite; check the features' scale")
    return LogMEResult(float(evidence.mean()), evidence, alpha, beta, iterations)


def _log_evidence(alpha, beta, logdet, m2, res2, n) -> np.ndarray:
    """Log evidence per example at (α, β), log det(I + FᵀF β/α) = `logdet`, ‖m‖² and residual
    ‖y − F m‖²: r/2 log α − ½ Σ log(α + β sᵢ) over the r nonzero sᵢ is −½ `logdet`."""
    return (
        n / 2 * np.log(beta)
        - 0.5 * logdet
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    ) / n


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al. 2020): (1/N) Σᵢ log Σ_z P̂(yᵢ | z) θ(xᵢ)_z, with the empirical
    P̂(y, z) = (1/N) Σᵢ θ(xᵢ)_z [yᵢ = y] from the source model's class probabilities θ."""
    probs = np.asarray(source_probabilities, np.float64)
    labels = _single_label(labels, "LEEP")
    if probs.ndim != 2 or len(probs) != len(labels):
        raise PredictorError(
            f"LEEP: source probabilities {probs.shape} do not match {len(labels)} labels"
        )
    if probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise PredictorError(
            "LEEP: the source predictions are not probabilities (rows must be ≥ 0 and sum to "
            "1); pass the softmax of the logits"
        )
    _, y = np.unique(labels, return_inverse=True)
    joint = one_hot(y, y.max() + 1).T @ probs / len(y)  # [C, Z]
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.einsum("nz,nz->n", probs, conditional[y])
    return float(np.mean(np.log(np.maximum(expected, np.finfo(float).tiny))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE (Tran et al. 2019): −H(Y | Z) of the empirical joint of the target label Y and the
    source model's hard prediction Z (its arg-max class); 0 log 0 = 0."""
    z = _single_label(source_labels, "NCE")
    labels = _single_label(labels, "NCE")
    if len(z) != len(labels):
        raise PredictorError(f"NCE: {len(z)} source labels but {len(labels)} target labels")
    _, z = np.unique(z, return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    joint = np.bincount(y * (z.max() + 1) + z, minlength=(y.max() + 1) * (z.max() + 1))
    joint = joint.reshape(y.max() + 1, z.max() + 1) / len(y)
    marginal = joint.sum(axis=0, keepdims=True)
    log_conditional = np.log(np.where(joint > 0, joint, 1.0) / np.where(joint > 0, marginal, 1.0))
    return float(np.sum(joint * log_conditional))


def h_score(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    rcond: float = _RANK_RTOL,
    stats: FeatureStats | None = None,
) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)⁺ cov(g)), g(x) = E[f | y(x)] the class mean, both
    covariances over examples (N − 1 denominators), ⁺ the pseudo-inverse. In [0, C − 1]; it
    reaches C − 1 whenever D ≥ N − C (the classes are then linearly separable in the features).

    Deviation: eigenvalues of cov(f) below `rcond` = 1e-10 × the largest count as zero; their
    code's 1e-15 keeps the rounding noise of rank-deficient features (e.g. ReLU units that are
    never active), whose inverse then dominates the score. Computed as
    Σ_c (N_c / (N − 1)) (μ_c − μ)ᵀ cov⁺ (μ_c − μ): from the eigendecomposition of the scatter
    when `stats` holds it (LogME's, shared), else by a Cholesky solve when cov (without its
    constant features) is well enough conditioned that nothing would be dropped, else from the
    eigendecomposition."""
    x = np.asarray(features, np.float64)
    labels = _single_label(labels, "H-score")
    classes, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n = len(x)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, y, x)
    means = means / counts[:, None]
    if n <= x.shape[1]:  # in the row space of X_c: X_c = U Σ Vᵀ, cov = V Σ² Vᵀ / (N − 1)
        xc = x - x.mean(axis=0)
        s, u = np.linalg.eigh(xc @ xc.T)
        keep = s > rcond * max(s.max(), 1e-300)
        coords = (xc.T @ u[:, keep]) / np.sqrt(s[keep])  # V: [D, r]
        projected = (means - x.mean(axis=0)) @ coords
        return float(np.sum(counts[:, None] * projected**2 / (s[keep] / (n - 1))) / (n - 1))
    st = _stats(x, stats)
    if not st.has_eigenbasis:  # else the shared eigendecomposition below costs O(D²C)
        cholesky = _h_score_cholesky(st, means, counts, rcond)
        if cholesky is not None:
            return cholesky
    basis = st.eigenbasis()  # shared with LogME and GBC's PCA
    eig = basis.values
    keep = eig > rcond * max(eig.max(), 1e-300)
    projected = basis.to_basis((means - st.mean).T)[keep]  # [r, C]
    return float(np.sum(counts * projected**2 / eig[keep, None]))


def _h_score_cholesky(st: FeatureStats, means, counts, rcond: float) -> float | None:
    """H-score by a Cholesky solve, or None when cov (without its constant features) is not
    well enough conditioned that the pseudo-inverse would drop nothing."""
    n = st.n
    diff = means - st.mean
    live = np.diag(st.scatter) > 0  # constant features: no variance, no class difference
    cov, diff = st.scatter[np.ix_(live, live)] / (n - 1), diff[:, live]
    try:
        factor = scipy.linalg.cho_factor(cov, lower=True, check_finite=False)
        inverse_condition, _ = scipy.linalg.lapack.dpocon(
            factor[0], np.abs(cov).sum(axis=0).max(), uplo="L"
        )
        if inverse_condition > 10 * rcond:  # cond₂ ≤ cond₁ < 1 / rcond: the pseudo-inverse
            solved = scipy.linalg.cho_solve(factor, diff.T, check_finite=False)  # is the inverse
            return float(np.sum(counts * np.sum(diff * solved.T, axis=1)) / (n - 1))
    except np.linalg.LinAlgError:
        pass
    return None


def pca(features: np.ndarray, dim: int, *, stats: FeatureStats | None = None) -> np.ndarray:
    """Centred features projected on their `dim` leading principal directions."""
    x = np.asarray(features, np.float64)
    n, d = x.shape
    if dim >= min(n, d):
        return x - x.mean(axis=0)
    if n < d:  # directions from the Gram matrix
        xc = x - x.mean(axis=0)
        s, u = scipy.linalg.eigh(xc @ xc.T, subset_by_index=[n - dim, n - 1])
        return u[:, ::-1] * np.sqrt(np.maximum(s[::-1], 0.0))
    st = _stats(x, stats)
    return (x - st.mean) @ st.leading_directions(dim)


def bhattacharyya_distance(mean_a, var_a, mean_b, var_b) -> np.ndarray:
    """Bhattacharyya distance of Gaussians with diagonal covariances (the last axis is the
    dimension): Σ (μa − μb)² / (8 σ̄) + ½ Σ log(σ̄ / √(σa σb)), σ̄ = (σa + σb) / 2."""
    mean_a, var_a, mean_b, var_b = np.broadcast_arrays(mean_a, var_a, mean_b, var_b)
    avg = (var_a + var_b) / 2
    return np.sum((mean_a - mean_b) ** 2 / avg, axis=-1) / 8 + 0.5 * np.sum(
        np.log(avg) - 0.5 * np.log(var_a) - 0.5 * np.log(var_b), axis=-1
    )


def gbc(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    pca_dim: int | None = GBC_PCA_DIM,
    gaussian: str = "spherical",
    variance_floor: float = GBC_VARIANCE_FLOOR,
    stats: FeatureStats | None = None,
) -> float:
    """GBC (Pándy et al. 2022): −Σ_{i≠j} BC(cᵢ, cⱼ), BC = exp(−D_B) between Gaussians fitted to
    each class (mean; per-dimension variance, ddof 0, floored at `variance_floor`; "spherical":
    the mean variance in every dimension) of the features reduced by PCA to `pca_dim`.

    Deviation: the spherical log-determinant counts every dimension (½ D log(σ̄/√(σa σb))), as
    the paper's formula; Google's reference code applies it once."""
    if gaussian not in ("spherical", "diagonal"):
        raise PredictorError(f"GBC: gaussian must be spherical or diagonal, got {gaussian!r}")
    labels = _single_label(labels, "GBC")
    require_per_class(labels, 2, "GBC", "a class Gaussian's variance")
    x = pca(features, pca_dim, stats=stats) if pca_dim else np.asarray(features, np.float64)
    classes, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, y, x)
    means /= counts[:, None]
    var = np.zeros_like(means)
    np.add.at(var, y, (x - means[y]) ** 2)
    var = np.maximum(var / counts[:, None], variance_floor)
    if gaussian == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), x.shape[1], axis=1)
    total = 0.0
    for i in range(len(classes)):  # one row of the C × C matrix at a time bounds the memory
        distance = bhattacharyya_distance(means[i], var[i], means, var)
        distance[i] = np.inf
        total += float(np.exp(-distance).sum())
    return -total
