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


def correlate(imagenet_logit, transfer_logit) -> Correlation:
    """r and rho of logit ImageNet top-1 against mean logit transfer accuracy (one value per model)."""
    x, y = _paired_vectors(imagenet_logit, transfer_logit, "imagenet_logit", "transfer_logit", 3)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError(
            "correlate: ImageNet or transfer accuracies are all equal; r is undefined."
        )
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


def permutation_test(
    correct_a, correct_b, num_samples: int = 10000, seed: int = 0, *, chunk_size: int = 1000
) -> PairedTest:
    """Permutation test: swap the two networks' predictions on each example with probability 1/2.

    Statistic: (#correct of a) - (#correct of b); two-sided p = (1 + #{|T*| >= |T|}) / (1 + S).
    Swapping a concordant example changes nothing, so only discordant examples are permuted
    (the same null distribution, far less work). Agrees with `mcnemar_test` up to Monte-Carlo error.
    """
    a, b = _correct_vectors(correct_a, correct_b)
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    diff = a.astype(np.int64) - b.astype(np.int64)
    discordant = diff[diff != 0]
    observed = abs(int(diff.sum()))
    a_only = int(np.sum(discordant > 0))
    b_only = int(discordant.size - a_only)
    if discordant.size == 0:
        return PairedTest(1.0, 0, 0, int(a.size))
    rng = np.random.default_rng(seed)
    extreme = 0
    remaining = num_samples
    while remaining > 0:
        rows = min(chunk_size, remaining)
        swap = rng.random((rows, discordant.size)) < 0.5
        permuted = np.where(swap, -discordant, discordant).sum(axis=1)
        extreme += int(np.sum(np.abs(permuted) >= observed))
        remaining -= rows
    return PairedTest((1.0 + extreme) / (1.0 + num_samples), a_only, b_only, int(a.size))


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
