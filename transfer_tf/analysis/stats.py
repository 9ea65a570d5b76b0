"""The paper's statistics (Sec. 3, Supp. A.1): logit accuracies, Morey error bars, correlations,
bootstrap bands, paired tests between two networks and across models.

Every function takes plain numpy arrays and validates them; errors say which argument is wrong.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as scipy_stats

# Accuracies of exactly 0 or 1 have an infinite logit. Without the test-set size we clip to
# [LOGIT_EPS, 1 - LOGIT_EPS] (logit(1e-4) = -9.21, far beyond any accuracy seen in the paper);
# with the size n we use the half-count ("empirical logit") correction (k + 1/2) / (n + 1).
LOGIT_EPS = 1e-4


def logit(p, n=None, eps: float = LOGIT_EPS):
    """log(p / (1 - p)) of accuracies in [0, 1]; NaN (missing) stays NaN.

    0 and 1 are finite: with `n` (number of test examples, scalar or per-entry) every value gets
    the half-count correction p' = (p n + 1/2) / (n + 1); without it values are clipped to
    [eps, 1 - eps]. Values outside [0, 1] raise (an accuracy in percent is the usual mistake).
    """
    p = np.asarray(p, dtype=np.float64)
    finite = p[~np.isnan(p)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(
            f"logit: accuracies must be fractions in [0, 1], got range "
            f"[{finite.min():g}, {finite.max():g}]; divide percentages by 100."
        )
    if n is not None:
        n = np.asarray(n, dtype=np.float64)
        if np.any(n <= 0):
            raise ValueError(f"logit: n (number of test examples) must be positive, got {n}.")
        p = (p * n + 0.5) / (n + 1.0)
    else:
        if not 0.0 < eps < 0.5:
            raise ValueError(f"logit: eps must be in (0, 0.5), got {eps}.")
        p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def inverse_logit(x):
    """sigmoid(x): log odds back to accuracy."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _as_2d_finite(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (models x datasets), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{name} has missing or infinite entries; keep only models and datasets with "
            "results for every pair (e.g. analysis.report.complete_matrix)."
        )
    return x


def standard_error(values) -> float:
    """Standard error of the mean, sd (n − 1) / √n; NaN for fewer than 2 finite values
    (Fig. 9's error bars: "standard error over 3 subsets")."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) >= 2 else float("nan")


def morey_standard_error(x) -> np.ndarray:
    """Morey (2008) within-dataset standard error of each model's mean, Sec. 3.

    x: [M models, D datasets] logit accuracies. Each entry minus its dataset's mean over models
    gives the adjusted accuracy; the SE of a model's adjusted accuracies over datasets is scaled
    by sqrt(M / (M - 1)). Returns [M]. Works for any conditions x subjects array (e.g. protocols
    x models for Fig. 6).
    """
    x = _as_2d_finite(x, "morey_standard_error: x")
    num_models, num_datasets = x.shape
    if num_models < 2 or num_datasets < 2:
        raise ValueError(
            f"morey_standard_error needs at least 2 models and 2 datasets, got shape {x.shape}."
        )
    adjusted = x - x.mean(axis=0, keepdims=True)
    se = adjusted.std(axis=1, ddof=1) / np.sqrt(num_datasets)
    return se * np.sqrt(num_models / (num_models - 1.0))


def _paired_vectors(a, b, name_a: str, name_b: str, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {a.size} and {b.size}."
        )
    if a.size < min_size:
        raise ValueError(f"need at least {min_size} paired values, got {a.size}.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"{name_a} / {name_b} contain NaN or infinite values.")
    return a, b


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Pearson r and Spearman rho with two-sided p-values, and the least-squares line y = a + b x."""

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    slope: float
    intercept: float
    n: int


def pearson(x, y) -> tuple[float, float]:
    """Pearson r and its two-sided p-value."""
    x, y = _paired_vectors(x, y, "x", "y", 3)
    result = scipy_stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def spearman(x, y) -> tuple[float, float]:
    """Spearman rank correlation rho and its two-sided p-value."""
    x, y = _paired_vectors(x, y, "x", "y", 3)
    result = scipy_stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def fisher_r_ci(r: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Fisher's z interval of Pearson's r over n pairs: tanh(atanh r ± z_q / sqrt(n − 3));
    (−1, 1) when n ≤ 3, where it is undefined (nothing can be said of r from three points)."""
    if n <= 3:
        return (-1.0, 1.0)
    half = scipy_stats.norm.ppf(0.5 + confidence / 2.0) / np.sqrt(n - 3)
    z = np.arctanh(np.clip(r, -1.0 + 1e-15, 1.0 - 1e-15))
    return (float(np.tanh(z - half)), float(np.tanh(z + half)))


def correlate(source_logit, transfer_logit) -> Correlation:
    """r and rho of logit source (ImageNet) top-1 against mean logit transfer accuracy (one value
    per model)."""
    x, y = _paired_vectors(source_logit, transfer_logit, "source_logit", "transfer_logit", 3)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("correlate: source or transfer accuracies are all equal; r is undefined.")
    r, r_p = pearson(x, y)
    rho, rho_p = spearman(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    return Correlation(r, r_p, rho, rho_p, float(slope), float(intercept), int(x.size))


@dataclasses.dataclass(frozen=True)
class BootstrapRegression:
    """Percentile bootstrap (resampling models) of the regression line and of r."""

    grid: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    slope_ci: tuple[float, float]
    r_ci: tuple[float, float]
    num_samples: int


def bootstrap_regression(
    x, y, grid=None, *, num_samples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> BootstrapRegression:
    """95% bootstrap confidence band of the least-squares line (Fig. 2) and CI of r and the slope.

    Models are resampled with replacement; resamples where every x (or y) is equal have no line
    and are drawn again. `grid` defaults to 50 points over the range of x.
    """
    x, y = _paired_vectors(x, y, "x", "y", 3)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if num_samples < 10:
        raise ValueError(f"num_samples must be at least 10, got {num_samples}.")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("bootstrap_regression: x or y has no spread; no regression line.")
    grid = np.linspace(x.min(), x.max(), 50) if grid is None else np.asarray(grid, np.float64)
    rng = np.random.default_rng(seed)
    slopes, intercepts, rs = [], [], []
    while len(slopes) < num_samples:
        idx = rng.integers(0, x.size, size=(num_samples, x.size))
        xs, ys = x[idx], y[idx]
        xc = xs - xs.mean(axis=1, keepdims=True)
        yc = ys - ys.mean(axis=1, keepdims=True)
        sxx, syy = (xc**2).sum(axis=1), (yc**2).sum(axis=1)
        ok = (sxx > 1e-12 * max(1.0, np.ptp(x) ** 2)) & (syy > 0)
        sxy = (xc * yc).sum(axis=1)[ok]
        slope = sxy / sxx[ok]
        slopes.extend(slope)
        intercepts.extend(ys.mean(axis=1)[ok] - slope * xs.mean(axis=1)[ok])
        rs.extend(sxy / np.sqrt(sxx[ok] * syy[ok]))
    slopes = np.asarray(slopes[:num_samples])
    intercepts = np.asarray(intercepts[:num_samples])
    rs = np.asarray(rs[:num_samples])
    lines = intercepts[:, None] + slopes[:, None] * grid[None, :]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(lines, [tail, 100.0 - tail], axis=0)
    slope_ci = tuple(float(v) for v in np.percentile(slopes, [tail, 100.0 - tail]))
    r_ci = tuple(float(v) for v in np.percentile(rs, [tail, 100.0 - tail]))
    return BootstrapRegression(grid, low, high, slope_ci, r_ci, num_samples)


def _correct_vectors(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a)
    b = np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"correct_a and correct_b must be 1-D per-example correctness of equal length, got "
            f"shapes {a.shape} and {b.shape}."
        )
    for name, v in (("correct_a", a), ("correct_b", b)):
        if v.dtype != bool and not np.all(np.isin(v, (0, 1))):
            raise ValueError(f"{name} must be boolean (or 0/1) per-example correctness.")
    return a.astype(bool), b.astype(bool)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Result of a two-network test on one dataset."""

    p_value: float
    a_only: int  # examples only network a gets right
    b_only: int  # examples only network b gets right
    n: int


def mcnemar_test(correct_a, correct_b) -> PairedTest:
    """Exact McNemar test: two-sided binomial test (p = 1/2) on the discordant examples (Supp. A.1.1).

    Under the null that the two networks' predictions are equally likely to be correct, each
    example one network gets right and the other wrong favours either with probability 1/2.
    """
    a, b = _correct_vectors(correct_a, correct_b)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(b & ~a))
    if a_only + b_only == 0:
        return PairedTest(1.0, 0, 0, int(a.size))
    p = float(scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return PairedTest(p, a_only, b_only, int(a.size))


def _sign_flip_p(d: np.ndarray, num_samples: int, seed: int, chunk_size: int) -> float:
    """Two-sided p of T = sum(d) when each d_i's sign flips with probability 1/2.

    Swapping the two networks' predictions on example i turns its contribution d_i into -d_i.
    p = (1 + #{|T*| >= |T|}) / (1 + S). Entries with d_i = 0 cannot change T* and are dropped
    (the same null distribution, far less work). |T*| within 1e-12 (relative to sum |d|) of |T|
    counts as a tie, so weighted sums that differ only by rounding are ties.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(float(d.sum())) - 1e-12 * float(np.abs(d).sum())
    rng = np.random.default_rng(seed)
    extreme, remaining = 0, num_samples
    while remaining > 0:
        rows = min(chunk_size, remaining)
        swap = rng.random((rows, d.size)) < 0.5
        permuted = np.where(swap, -d, d).sum(axis=1)
        extreme += int(np.sum(np.abs(permuted) >= observed))
        remaining -= rows
    return (1.0 + extreme) / (1.0 + num_samples)


def permutation_test(
    correct_a, correct_b, num_samples: int = 10000, seed: int = 0, *, chunk_size: int = 1000
) -> PairedTest:
    """Permutation test: swap the two networks' predictions on each example with probability 1/2.

    Statistic: (#correct of a) - (#correct of b). Agrees with `mcnemar_test` up to Monte-Carlo
    error.
    """
    a, b = _correct_vectors(correct_a, correct_b)
    diff = a.astype(np.int64) - b.astype(np.int64)
    p = _sign_flip_p(diff, num_samples, seed, chunk_size)
    return PairedTest(p, int(np.sum(diff > 0)), int(np.sum(diff < 0)), int(a.size))


@dataclasses.dataclass(frozen=True)
class MetricTest:
    """A permutation test of two networks on one dataset, on the dataset's own metric."""

    difference: float  # metric of a minus metric of b
    p_value: float
    n: int
    num_samples: int


def _class_ids(y_pred, n: int, name: str) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    y_pred = y_pred.argmax(axis=1) if y_pred.ndim == 2 else y_pred
    if y_pred.shape != (n,):
        raise ValueError(
            f"{name} must be class ids [N] or scores [N, C] for the {n} examples of y_true, got "
            f"shape {np.shape(y_pred)}."
        )
    return y_pred.astype(np.int64)


def mean_per_class_permutation_test(
    y_true, pred_a, pred_b, num_samples: int = 10000, seed: int = 0, *, chunk_size: int = 1000
) -> MetricTest:
    """Paired permutation test on mean per-class accuracy (FGVC Aircraft, Pets, Caltech-101,
    Flowers): statistic = mean per-class accuracy of a minus that of b.

    Mean per-class accuracy is a weighted accuracy: example i of class c weighs 1 / (C n_c) (C
    classes present, n_c examples of class c). Swapping the predictions on example i flips the
    sign of its term w_i (correct_a - correct_b), so this is the sign-flip test of
    `permutation_test` with those weights; a top-1 McNemar test would weigh every example alike.
    `pred_a` / `pred_b`: class ids [N] or scores [N, C] (arg-max).
    """
    y_true = np.asarray(y_true)
    if y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true must be non-empty class ids [N], got shape {y_true.shape}.")
    y_true = y_true.astype(np.int64)
    a = _class_ids(pred_a, y_true.size, "pred_a") == y_true
    b = _class_ids(pred_b, y_true.size, "pred_b") == y_true
    classes, index, counts = np.unique(y_true, return_inverse=True, return_counts=True)
    weights = 1.0 / (len(classes) * counts[index])
    d = weights * (a.astype(np.float64) - b.astype(np.float64))
    p = _sign_flip_p(d, num_samples, seed, chunk_size)
    return MetricTest(float(d.sum()), p, int(y_true.size), num_samples)


def eleven_point_ap_rows(positive, scores) -> np.ndarray:
    """VOC 2007 11-point AP of one class for each row of `scores` [S, N] (S rankings at once).

    The definition of `transfer_tf.metrics.eleven_point_average_precision`: examples ranked by
    descending score (stable), precision interpolated as the best at any recall >= t, averaged
    over t in {0, 0.1, ..., 1}.
    """
    positive = np.asarray(positive).astype(bool)
    scores = np.atleast_2d(np.asarray(scores))  # integer ranks sort fastest (radix sort)
    if not positive.any():
        raise ValueError("11-point AP is undefined for a class without positive examples.")
    hits = positive[np.argsort(-scores, axis=1, kind="stable")]
    true_pos = np.cumsum(hits, axis=1)
    precision = true_pos / np.arange(1, hits.shape[1] + 1)
    recall = true_pos / positive.sum()
    # Best precision at any recall >= t: a running max from the end, read where recall reaches t.
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(len(scores))
    levels = np.linspace(0.0, 1.0, 11)
    return np.mean([envelope[rows, np.argmax(recall >= t, axis=1)] for t in levels], axis=0)


def _mean_ap(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """11-point mAP over the classes (columns) of `positive` [N, C] for scores [S, N, C]."""
    return np.mean(
        [eleven_point_ap_rows(positive[:, c], scores[:, :, c]) for c in range(positive.shape[1])],
        axis=0,
    )


def map_permutation_test(
    y_true, scores_a, scores_b, num_samples: int = 10000, seed: int = 0, *, chunk_size: int = 50
) -> MetricTest:
    """Paired permutation test on 11-point mAP (PASCAL VOC 2007): statistic = mAP of a minus mAP
    of b; each permutation swaps the two networks' score rows on each example with probability 1/2.

    The two networks' scores may be on different scales (logits, probabilities); each network's
    scores are first replaced by their rank within each class (ties share the average rank),
    which leaves every AP unchanged (AP depends only on the order within a class) and makes a
    swapped row rank among its neighbours by the same yardstick. Classes without a positive
    example are left out (as in `transfer_tf.metrics.eleven_point_map`). Cost: 2 S sorts of N per
    class; VOC 2007's 4,952 x 20 test scores take about 2 minutes for S = 10,000 (2 shared CPU
    cores under load, 2026-12-01).
    """
    y_true = np.asarray(y_true)
    a = np.asarray(scores_a, np.float64)
    b = np.asarray(scores_b, np.float64)
    if y_true.ndim != 2 or a.shape != y_true.shape or b.shape != y_true.shape:
        raise ValueError(
            "map_permutation_test needs multi-hot y_true and two score arrays of the same [N, C] "
            f"shape, got {y_true.shape}, {a.shape} and {b.shape}."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores_a / scores_b contain NaN or infinite values.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    present = np.flatnonzero(y_true.sum(axis=0) > 0)
    positive = y_true[:, present].astype(bool)
    n = len(y_true)
    # Twice the average rank is an integer; below 2^15 numpy sorts it by radix sort, ~5x faster.
    dtype = np.int16 if 2 * n < 2**15 else np.int64
    ra = (2 * scipy_stats.rankdata(a[:, present], axis=0)).astype(dtype)
    rb = (2 * scipy_stats.rankdata(b[:, present], axis=0)).astype(dtype)
    observed = float(_mean_ap(positive, ra[None])[0] - _mean_ap(positive, rb[None])[0])
    rng = np.random.default_rng(seed)
    extreme, remaining = 0, num_samples
    while remaining > 0:
        rows = min(chunk_size, remaining)
        swap = (rng.random((rows, n)) < 0.5)[:, :, None]
        permuted = _mean_ap(positive, np.where(swap, rb, ra)) - _mean_ap(
            positive, np.where(swap, ra, rb)
        )
        extreme += int(np.sum(np.abs(permuted) >= abs(observed) - 1e-12))
        remaining -= rows
    return MetricTest(observed, (1.0 + extreme) / (1.0 + num_samples), n, num_samples)


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval."""

    estimate: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def binomial_proportion(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """successes / trials with its exact (Clopper-Pearson) CI, by scipy.stats.binomtest."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}."
        )
    ci = scipy_stats.binomtest(successes, trials).proportion_ci(confidence, method="exact")
    return Interval(successes / trials, float(ci.low), float(ci.high), trials)


def geometric_mean_ratio(numerators, denominators, confidence: float = 0.95) -> Interval:
    """Geometric mean of numerator / denominator over pairs, with the t-interval of the mean log
    ratio mapped back (e.g. the convergence speedup of Sec. 4.6 over model x dataset pairs)."""
    num, den = _paired_vectors(numerators, denominators, "numerators", "denominators", 2)
    if np.any(num <= 0) or np.any(den <= 0):
        raise ValueError("geometric_mean_ratio needs positive numerators and denominators.")
    logs = np.log(num) - np.log(den)
    if np.ptp(logs) == 0:  # Every pair has the same ratio: no spread, a point interval.
        return Interval(float(np.exp(logs[0])), *(float(np.exp(logs[0])),) * 2, num.size)
    ci = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(confidence)
    return Interval(
        float(np.exp(logs.mean())), float(np.exp(ci.low)), float(np.exp(ci.high)), num.size
    )


@dataclasses.dataclass(frozen=True)
class AcrossModelsTest:
    """A paired test across models (e.g. fine-tune vs logistic regression on one dataset)."""

    statistic: float
    p_value: float
    mean_difference: float
    n: int


def paired_t_test(a, b) -> AcrossModelsTest:
    """Paired t-test of a - b across models (scipy.stats.ttest_rel, two-sided)."""
    a, b = _paired_vectors(a, b, "a", "b", 2)
    d = a - b
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        # Constant differences (up to rounding): t is infinite (or undefined when all are 0).
        return AcrossModelsTest(float("nan"), 1.0 if d[0] == 0 else 0.0, float(d.mean()), a.size)
    result = scipy_stats.ttest_rel(a, b)
    return AcrossModelsTest(float(result.statistic), float(result.pvalue), float(d.mean()), a.size)


def wilcoxon_min_attainable_p(n: int) -> float:
    """Smallest two-sided p an exact signed-rank test can give with n pairs: 2 / 2^n."""
    if n < 1:
        raise ValueError(f"wilcoxon_min_attainable_p needs at least 1 pair, got {n}.")
    return min(1.0, 2.0 / 2**n)


def wilcoxon_signed_rank(a, b) -> AcrossModelsTest:
    """Wilcoxon signed-rank test of a - b across models (scipy.stats.wilcoxon, two-sided).

    scipy's default: exact null distribution for small n without ties, zero differences dropped.
    All-zero differences give p = 1.
    """
    a, b = _paired_vectors(a, b, "a", "b", 2)
    d = a - b
    if np.all(d == 0):
        return AcrossModelsTest(0.0, 1.0, 0.0, a.size)
    result = scipy_stats.wilcoxon(a, b)
    return AcrossModelsTest(float(result.statistic), float(result.pvalue), float(d.mean()), a.size)


def steps_to_fraction_of_max_odds(steps, metric, fraction: float = 0.9) -> float:
    """First step whose odds p / (1 - p) reach `fraction` of the run's maximum odds (Sec. 4.6).

    The paper's convergence measure (Fig. 8: 90% of the maximum odds of correct classification
    achieved at any number of steps). Metrics are clipped like `logit`.
    """
    steps, metric = _paired_vectors(steps, metric, "steps", "metric", 1)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    order = np.argsort(steps, kind="stable")
    steps, metric = steps[order], metric[order]
    odds = np.exp(logit(metric))
    reached = np.nonzero(odds >= fraction * odds.max())[0]
    return float(steps[reached[0]])


def geometric_mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.any(values <= 0):
        raise ValueError("geometric_mean needs a non-empty array of positive values.")
    return float(np.exp(np.log(values).mean()))
