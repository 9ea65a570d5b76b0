"""Cheap transfer predictors (issue 19) against oracles: scikit-learn's k-NN, numpy.linalg.solve
for the ridge probe, hand-computed LEEP / NCE / H-score, LogME's published fixed point and a case
derived by hand, GBC's two-Gaussian closed form; then the protocol's cells and its errors."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.special
from scipy import integrate
from scipy import stats as scipy_stats
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from transfer_tf import results
from transfer_tf.metrics import METRICS
from transfer_tf.protocols import predictor_sweep, sweep
from transfer_tf.protocols import predictors as P

TOP1 = METRICS["top1"]


def _blobs(rng, n, num_classes=4, dim=8, spread=1.5, means=None):
    means = rng.normal(size=(num_classes, dim)) * spread if means is None else means
    y = np.arange(n) % num_classes
    return (means[y] + rng.normal(size=(n, dim))).astype(np.float64), y, means


def _splits(seed=0, num_classes=4, dim=8, sizes=(120, 60, 80)):
    rng = np.random.default_rng(seed)
    x, y, means = _blobs(rng, sizes[0], num_classes, dim)
    out = {"train": (x, y)}
    for split, n in zip(("val", "test"), sizes[1:], strict=True):
        x, y, _ = _blobs(rng, n, num_classes, dim, means=means)
        out[split] = (x, y)
    return out


# ---------------------------------------------------------------------------------------------
# k-NN against scikit-learn.


def test_knn_equals_scikit_learn_cosine_majority_vote_with_k_chosen_on_val():
    s = _splits(seed=1, sizes=(90, 70, 80))
    ks = (1, 2, 3, 4, 6, 10, 25)
    result = P.knn(s["train"], s["val"], s["test"], TOP1, num_classes=4, k_grid=ks)
    sk_val = []
    for k in ks:
        sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        sk.fit(*s["train"])
        ours = np.argmax(
            P.knn_scores(P.cosine_neighbours(s["train"][0], s["val"][0], k), s["train"][1], k, 4),
            axis=1,
        )
        np.testing.assert_array_equal(ours, sk.predict(s["val"][0]))  # even k: ties included
        sk_val.append(np.mean(sk.predict(s["val"][0]) == s["val"][1]))
    np.testing.assert_allclose(result.val_curve, sk_val)
    chosen = ks[int(np.argmax(sk_val))]  # first maximum: the smaller k
    assert result.chosen == chosen and result.val_metric == max(sk_val)
    sk = KNeighborsClassifier(n_neighbors=chosen, metric="cosine", algorithm="brute")
    sk.fit(np.concatenate([s["train"][0], s["val"][0]]), np.r_[s["train"][1], s["val"][1]])
    np.testing.assert_array_equal(result.y_pred, sk.predict(s["test"][0]))
    assert result.test_metric == pytest.approx(np.mean(sk.predict(s["test"][0]) == s["test"][1]))


def test_knn_multi_label_scores_are_neighbour_label_fractions():
    rng = np.random.default_rng(2)
    x_ref, x_q = rng.normal(size=(40, 6)), rng.normal(size=(15, 6))
    labels = (rng.random((40, 5)) < 0.4).astype(np.int8)
    nn = NearestNeighbors(n_neighbors=7, metric="cosine", algorithm="brute").fit(x_ref)
    sk_idx = nn.kneighbors(x_q, return_distance=False)
    ours = P.cosine_neighbours(x_ref, x_q, 7, chunk_rows=4)  # chunks of 4 queries
    np.testing.assert_array_equal(ours, sk_idx)
    np.testing.assert_allclose(
        P.knn_scores(ours, labels, 7, 5), labels[sk_idx].mean(axis=1), rtol=1e-6
    )


def test_cosine_neighbours_order_ties_by_index_even_at_the_kth_place():
    # Rows of unit norm with entries 0, ½ and 1 (e_i, and ½ on four of six axes): every cosine is
    # one of 0, ½, ¾, 1, exact in float32 whatever the summation order, so ties are exact and
    # many. The oracle is the definition: sort by (−similarity, index), keep the first k.
    unit = list(np.eye(6))
    halves = [0.5 * np.isin(np.arange(6), c) for c in itertools.combinations(range(6), 4)]
    rows = np.array(unit + halves, np.float32)  # 21 distinct rows, all of norm 1
    rng = np.random.default_rng(4)
    x_ref, x_q = rows[rng.integers(0, 21, 50)], rows[rng.integers(0, 21, 23)]
    sim = x_q.astype(np.float64) @ x_ref.T.astype(np.float64)
    for k in (1, 3, 10, 50):
        ours = P.cosine_neighbours(x_ref, x_q, k, chunk_rows=5)
        expected = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in sim])
        np.testing.assert_array_equal(ours, expected)
    assert P.cosine_neighbours(x_ref, x_q, 99).shape == (23, 50)  # k above N: all, ordered


# ---------------------------------------------------------------------------------------------
# The few-shot ridge probe against a direct solve of the normal equations.


def _direct_ridge(x, targets, l2):
    """[X 1]ᵀ[X 1] + diag(λ, …, λ, 0) θ = [X 1]ᵀ Y, solved directly."""
    a = np.c_[x, np.ones(len(x))]
    penalty = np.diag([l2] * x.shape[1] + [0.0])
    theta = np.linalg.solve(a.T @ a + penalty, a.T @ targets)
    return theta[:-1], theta[-1]


@pytest.mark.parametrize("n", [25, 6])  # more examples than dimensions, and fewer
def test_ridge_regression_equals_numpy_solve(n):
    rng = np.random.default_rng(n)
    x, targets = rng.normal(size=(n, 10)), P.one_hot(rng.integers(0, 3, n), 3)
    for l2 in (1e-3, 0.7, 50.0):
        w, b = P.ridge_regression(x, targets, l2)
        w_ref, b_ref = _direct_ridge(x, targets, l2)
        np.testing.assert_allclose(w, w_ref, atol=1e-9)
        np.testing.assert_allclose(b, b_ref, atol=1e-9)


@pytest.mark.parametrize("shots", [1, 5, 10, 25])
def test_fewshot_probe_fits_shots_per_class_chooses_l2_on_val_like_a_direct_solve(shots):
    s = _splits(seed=3, num_classes=5, dim=12, sizes=(200, 80, 100))
    l2s = np.logspace(-3, 3, 7)
    results_by_seed = []
    for seed in range(5):
        r = P.fewshot_ridge(
            s["train"],
            s["val"],
            s["test"],
            TOP1,
            shots=shots,
            seed=seed,
            num_classes=5,
            l2_grid=l2s,
        )
        results_by_seed.append(r)
        support_labels = s["train"][1][r.support]
        assert np.array_equal(np.bincount(support_labels, minlength=5), [shots] * 5)
        x = P.l2_normalize(s["train"][0][r.support])
        curve = []
        for l2 in l2s[::-1]:  # strongest first
            w, b = _direct_ridge(x, P.one_hot(support_labels, 5), l2)
            curve.append(np.mean(np.argmax(P.l2_normalize(s["val"][0]) @ w + b, 1) == s["val"][1]))
        np.testing.assert_allclose(r.val_curve, curve)
        best = int(np.argmax(curve))  # ties: the stronger λ
        assert r.chosen == pytest.approx(l2s[::-1][best])
        w, b = _direct_ridge(x, P.one_hot(support_labels, 5), r.chosen)
        np.testing.assert_array_equal(r.y_pred, np.argmax(P.l2_normalize(s["test"][0]) @ w + b, 1))
    supports = [tuple(r.support) for r in results_by_seed]
    assert len(set(supports)) == 5  # five different draws
    again = P.fewshot_ridge(
        s["train"], s["val"], s["test"], TOP1, shots=shots, seed=2, num_classes=5, l2_grid=l2s
    )
    np.testing.assert_array_equal(again.support, results_by_seed[2].support)


# ---------------------------------------------------------------------------------------------
# LEEP, NCE, H-score by hand.


def test_leep_by_hand():
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    # P(y, z) = Σᵢ θᵢz [yᵢ = y] / 4: [[0.35, 0.15], [0.10, 0.40]]; P(z) = [0.45, 0.55];
    # P(y | z): y = 0: [7/9, 3/11], y = 1: [2/9, 8/11].
    expected = np.mean(
        np.log(
            [
                0.8 * 7 / 9 + 0.2 * 3 / 11,
                0.6 * 7 / 9 + 0.4 * 3 / 11,
                0.3 * 2 / 9 + 0.7 * 8 / 11,
                0.1 * 2 / 9 + 0.9 * 8 / 11,
            ]
        )
    )
    assert P.leep(theta, y) == pytest.approx(expected, abs=1e-12)
    assert P.leep(theta, y + 5) == pytest.approx(expected, abs=1e-12)  # label values don't matter
    with pytest.raises(P.PredictorError, match="softmax of the logits"):
        P.leep(np.log(theta), y)


def test_nce_by_hand():
    z = np.array([0, 0, 1, 1, 1])
    y = np.array([0, 0, 0, 1, 1])
    # H(Y | Z=0) = 0; P(Z=1) = 3/5 with P(Y | Z=1) = (1/3, 2/3).
    expected = 3 / 5 * (1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
    assert P.nce(z, y) == pytest.approx(expected, abs=1e-12)
    assert P.nce(z + 100, y) == pytest.approx(expected, abs=1e-12)
    assert P.nce(y, y) == 0.0  # a perfect predictor


def test_h_score_by_hand_and_against_bao_et_al_formula():
    # 1-D: cov(f) = 20/3, cov(g) with g = [1, 1, 5, 5] is 16/3.
    assert P.h_score(np.array([[0.0], [2], [4], [6]]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)
    # 2-D, uncorrelated columns: cov(f) = diag(20/3, 5/3), cov(g)'s diagonal (16/3, 1/3).
    f = np.array([[-3.0, 1], [-1, -1], [1, 2], [3, 0]])
    assert P.h_score(f, np.array([0, 0, 1, 1])) == pytest.approx(0.8 + 0.2)
    rng = np.random.default_rng(4)
    x, y, _ = _blobs(rng, 60, num_classes=3, dim=5)
    g = np.stack([x[y == c].mean(axis=0) for c in y])
    oracle = np.trace(np.linalg.pinv(np.cov(x.T)) @ np.cov(g.T))
    assert P.h_score(x, y) == pytest.approx(oracle, rel=1e-10)
    # Rank-deficient features (a never-active unit, a duplicated one) and an ill-conditioned
    # pair: the pseudo-inverse drops what is below 1e-10 of the largest eigenvalue.
    for extra in (np.zeros((60, 1)), x[:, :1], x[:, :1] + 1e-7 * rng.normal(size=(60, 1))):
        z = np.c_[x, extra]
        g = np.stack([z[y == c].mean(axis=0) for c in y])
        oracle = np.trace(np.linalg.pinv(np.cov(z.T), rtol=1e-10, hermitian=True) @ np.cov(g.T))
        assert P.h_score(z, y) == pytest.approx(oracle, rel=1e-6)
        assert P.h_score(z, y, stats=P.FeatureStats.of(z)) == P.h_score(z, y)
    # D ≥ N − C: the classes are separable in the features and H reaches C − 1.
    x, y, _ = _blobs(rng, 12, num_classes=3, dim=20)
    assert P.h_score(x, y) == pytest.approx(2.0, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# LogME.


def published_fixed_point_logme(f, targets, epsilon=1e-5, tol=1e-3, max_iter=11):
    """The fixed-point LogME of You et al. ("Ranking and tuning pre-trained models", arXiv
    2110.10545), as the authors publish it: SVD of F, per target column y: x = Uᵀy, t = α/β,
    γ = Σ σ/(σ+t), ‖m‖² = Σ σx²/(t+σ)², residual Σ x²/(1+σ/t)² + (‖y‖² − ‖x‖²),
    α = γ/(‖m‖²+ε), β = (N−γ)/(res+ε), stop when t changes by ≤ tol (relative)."""
    n, d = f.shape
    u, sv, _ = np.linalg.svd(f, full_matrices=False)
    sigma = sv**2
    evidences = []
    for y in np.asarray(targets, float).T:
        x2 = (u.T @ y) ** 2
        outside = y @ y - x2.sum()
        alpha = beta = 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = np.sum(sigma / (sigma + t))
            m2 = np.sum(sigma * x2 / (t + sigma) ** 2)
            res2 = np.sum(x2 / (1 + sigma / t) ** 2) + outside
            alpha, beta = gamma / (m2 + epsilon), (n - gamma) / (res2 + epsilon)
            if abs(alpha / beta - t) / t <= tol:
                break
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def test_logme_on_a_case_derived_by_hand():
    # D = 1: with s = ‖f‖², t = fᵀy, ρ² = t² / (s‖y‖²), the fixed point is λ = α/β =
    # s(1 − ρ²) / (Nρ² − 1). f = (1, 1, 0), y = (1, 0, 0): s = 2, t = 1, ρ² = 1/2, λ = 2,
    # m = t / (s + λ) = 1/4, γ = s / (s + λ) = 1/2, α = γ / m² = 8, β = α / λ = 4,
    # ‖y − f m‖² = 5/8, and the evidence ½ log 8 + 3/2 log 4 − ½ log 16 − 4·5/16 − 8/32
    # − 3/2 log 2π = 5/2 log 2 − 3/2 − 3/2 log 2π.
    f = np.array([[1.0], [1.0], [0.0]])
    result = P.logme(f, np.array([[1], [0], [0]]))  # one target column
    assert result.alpha[0] == pytest.approx(8.0, rel=1e-6)
    assert result.beta[0] == pytest.approx(4.0, rel=1e-6)
    by_hand = (2.5 * np.log(2) - 1.5 - 1.5 * np.log(2 * np.pi)) / 3
    assert result.score == pytest.approx(by_hand, abs=1e-9)
    # The published algorithm (no ε, tight stopping) reaches the same point.
    tight = published_fixed_point_logme(f, [[1], [0], [0]], epsilon=0, tol=1e-12, max_iter=1000)
    assert tight == pytest.approx(by_hand, abs=1e-9)


def _log_evidence(features, alpha, beta, target):
    """log N(y; 0, β⁻¹I + α⁻¹FFᵀ): the marginal likelihood of the Bayesian linear model."""
    cov = np.eye(len(features)) / beta + features @ features.T / alpha
    return scipy_stats.multivariate_normal(np.zeros(len(features)), cov).logpdf(target)


def test_logme_against_the_published_fixed_point_and_the_marginal_likelihood():
    rng = np.random.default_rng(5)
    x, y, _ = _blobs(rng, 80, num_classes=3, dim=6, spread=1.0)
    ours = P.logme(x, y)
    # The published algorithm as shipped (ε = 1e-5, stop at 1e-3 relative, ≤ 11 steps) ...
    assert P.logme(x, y, stats=P.FeatureStats.of(x)).score == pytest.approx(ours.score, abs=1e-12)
    targets = P.one_hot(y, 3)
    assert ours.score == pytest.approx(published_fixed_point_logme(x, targets), abs=1e-4)
    # ... and run to convergence without ε: the same number.
    tight = published_fixed_point_logme(x, targets, epsilon=0.0, tol=1e-13, max_iter=1000)
    assert ours.score == pytest.approx(tight, abs=1e-10)
    # The evidence is log N(y; 0, β⁻¹I + α⁻¹FFᵀ) at its maximum, also with fewer examples than
    # dimensions (where the published fixed-point code's D/2 log α is not the evidence).
    few, _, _ = _blobs(np.random.default_rng(0), 9, num_classes=3, dim=12, spread=3.0)
    for features in (x, few):  # an interior maximum in both
        labels = np.arange(len(features)) % 3
        result = P.logme(features, labels)
        for c in range(3):
            target = (labels == c).astype(float)
            a, b = result.alpha[c], result.beta[c]
            best = _log_evidence(features, a, b, target)
            assert result.evidence[c] * len(features) == pytest.approx(best, abs=1e-7)
            for da, db in ((1.1, 1), (0.9, 1), (1, 1.1), (1, 0.9)):
                assert _log_evidence(features, a * da, b * db, target) < best


def test_logme_through_the_shared_centred_eigenbasis_equals_the_published_svd_of_f():
    # N ≥ D: LogME works in the eigenbasis of the centred scatter (shared with H-score and GBC)
    # with N μμᵀ as a rank-one term; the published algorithm takes the SVD of F itself. Features
    # like a network's (ReLU, a large common mean, a dead unit) make the rank-one term dominant.
    rng = np.random.default_rng(13)
    x = np.maximum(rng.normal(size=(150, 12)) @ rng.normal(size=(12, 12)) + 3.0, 0.0)
    x[:, 5] = 0.0  # a unit that is never active: rank 11 < D
    y = (x[:, :3].sum(axis=1) + rng.normal(size=150) > np.median(x[:, :3].sum(axis=1))) + (
        2 * (x[:, 7] > np.median(x[:, 7]))
    )
    stats = P.FeatureStats.of(x)
    ours = P.logme(x, y, stats=stats)
    assert stats.has_eigenbasis  # what H-score and GBC then reuse
    tight = published_fixed_point_logme(x, P.one_hot(y, 4), epsilon=0.0, tol=1e-13, max_iter=1000)
    # (Its full SVD keeps the dead unit's σ = 0, whose log α cancels in D/2 log α.)
    assert ours.score == pytest.approx(tight, abs=1e-10)
    for c in range(4):
        target = (y == c).astype(float)
        best = _log_evidence(x, ours.alpha[c], ours.beta[c], target)
        assert ours.evidence[c] * len(x) == pytest.approx(best, abs=1e-8)
    # H-score from the same eigendecomposition: the pseudo-inverse of Bao et al.
    g = np.stack([x[y == c].mean(axis=0) for c in y])
    oracle = np.trace(np.linalg.pinv(np.cov(x.T), rtol=1e-10, hermitian=True) @ np.cov(g.T))
    assert P.h_score(x, y, stats=stats) == pytest.approx(oracle, rel=1e-9)


def test_logme_is_larger_for_linearly_separable_labels():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 10))
    separable = (x @ rng.normal(size=10) > 0).astype(int)
    shuffled = rng.permutation(separable)  # same class sizes, no relation to the features
    assert P.logme(x, separable).score > P.logme(x, shuffled).score + 0.1


# ---------------------------------------------------------------------------------------------
# GBC.


def _bc_integral(m1, s1, m2, s2):
    """∫ √(N(x; m1, s1²) N(x; m2, s2²)) dx numerically."""
    density = scipy_stats.norm.pdf
    return integrate.quad(
        lambda t: np.sqrt(density(t, m1, s1) * density(t, m2, s2)), -60, 60, epsabs=1e-13
    )[0]


def _two_point_class(mean, std):
    """Examples whose mean is `mean` and whose per-dimension variance (ddof 0) is std²."""
    mean, std = np.atleast_1d(mean), np.atleast_1d(std)
    signs = np.array(np.meshgrid(*[[-1, 1]] * len(mean))).reshape(len(mean), -1).T
    return mean + signs * std


def test_gbc_two_gaussians_closed_form():
    m1, s1, m2, s2 = 0.0, 1.0, 1.5, 2.0
    x = np.r_[_two_point_class(m1, s1), _two_point_class(m2, s2)]
    y = np.r_[[0, 0], [1, 1]]
    closed = np.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * np.exp(
        -((m1 - m2) ** 2) / (4 * (s1**2 + s2**2))
    )
    assert closed == pytest.approx(_bc_integral(m1, s1, m2, s2), rel=1e-10)
    # GBC = −Σ_{i≠j} BC: both ordered pairs.
    assert P.gbc(x, y, pca_dim=None) == pytest.approx(-2 * closed, rel=1e-10)
    # Diagonal Gaussians in 2-D: the coefficient is the product over dimensions.
    means, stds = ([0.0, 1.0], [1.0, -0.5]), ([1.0, 0.5], [2.0, 1.5])
    x = np.r_[_two_point_class(means[0], stds[0]), _two_point_class(means[1], stds[1])]
    y = np.r_[[0] * 4, [1] * 4]
    product = np.prod(
        [_bc_integral(means[0][d], stds[0][d], means[1][d], stds[1][d]) for d in range(2)]
    )
    assert P.gbc(x, y, pca_dim=None, gaussian="diagonal") == pytest.approx(-2 * product, rel=1e-9)
    # Spherical: each class's mean variance in every dimension (the log-determinant counts both).
    sph = [np.sqrt(np.mean(np.square(s))) for s in stds]
    product = np.prod([_bc_integral(means[0][d], sph[0], means[1][d], sph[1]) for d in range(2)])
    assert P.gbc(x, y, pca_dim=None) == pytest.approx(-2 * product, rel=1e-9)


def test_gbc_pca_keeps_the_leading_principal_components():
    rng = np.random.default_rng(7)
    for n, d in ((50, 8), (6, 20)):  # the covariance route and the Gram route
        x = rng.normal(size=(n, d)) * np.linspace(3, 0.1, d)
        ours = P.pca(x, 3)
        _, sv, vh = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        reference = (x - x.mean(axis=0)) @ vh[:3].T
        np.testing.assert_allclose(np.abs(ours), np.abs(reference), atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=0), sv[:3], rtol=1e-9)
        if n >= d:  # from the full eigendecomposition H-score shares, the same directions
            shared = P.FeatureStats.of(x)
            shared.eigenbasis()
            np.testing.assert_allclose(np.abs(P.pca(x, 3, stats=shared)), np.abs(ours), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# The protocol: cells, resume, skips and errors.


def test_protocol_writes_one_cell_per_predictor_and_resumes(tmp_path):
    s = _splits(seed=8, num_classes=4, dim=8, sizes=(160, 60, 80))
    rng = np.random.default_rng(8)
    head = rng.normal(size=(8, 30))
    calls = []

    def source_logits():
        calls.append(1)
        return np.concatenate([s["train"][0], s["val"][0]]) @ head

    records = predictor_sweep.run_predictors(
        s,
        str(tmp_path),
        model="m",
        dataset="ds",
        metric="top1",
        source_logits=source_logits,
        progress=False,
        log=lambda _: None,
    )
    assert calls == [1]  # LEEP and NCE share one forward pass
    frame = results.load(str(tmp_path))
    assert set(frame["protocol"]) == {"predictors"} and len(frame) == 1 + 4 * 5 + 5
    counts = frame.groupby("hp.predictor").size().to_dict()
    assert counts == {
        "knn": 1,
        "fewshot_1": 5,
        "fewshot_5": 5,
        "fewshot_10": 5,
        "fewshot_25": 5,
        "logme": 1,
        "leep": 1,
        "nce": 1,
        "hscore": 1,
        "gbc": 1,
    }
    by_name = {r["hparams"]["predictor"]: r for r in records}
    trva_x = np.concatenate([s["train"][0], s["val"][0]])
    trva_y = np.r_[s["train"][1], s["val"][1]]
    assert by_name["logme"]["test_metric"] == pytest.approx(P.logme(trva_x, trva_y).score)
    assert by_name["logme"]["metric"] == "logme" and by_name["logme"]["val_metric"] is None
    probs = scipy.special.softmax(trva_x @ head, axis=1)
    assert by_name["leep"]["test_metric"] == pytest.approx(P.leep(probs, trva_y))
    assert by_name["nce"]["test_metric"] == pytest.approx(P.nce(np.argmax(probs, 1), trva_y))
    assert by_name["gbc"]["test_metric"] == pytest.approx(P.gbc(trva_x, trva_y))
    knn = by_name["knn"]
    assert knn["metric"] == "top1" and 0 <= knn["val_metric"] <= 1 and knn["wall_time_s"] >= 0
    saved = results.load_predictions(os.path.join(tmp_path, "predictors", knn["predictions"]))
    assert set(saved) == {"y_true", "y_pred", "k", "val_curve", "chosen_k"}
    assert knn["val_metric"] == pytest.approx(saved["val_curve"].max())
    # The sweep normalises the features once for k-NN and the few-shot cells: each equals its
    # oracle on the raw features.
    sk = KNeighborsClassifier(
        n_neighbors=int(saved["chosen_k"]), metric="cosine", algorithm="brute"
    )
    sk_pred = sk.fit(trva_x, trva_y).predict(s["test"][0])
    np.testing.assert_array_equal(saved["y_pred"], sk_pred)
    assert knn["test_metric"] == pytest.approx(np.mean(sk_pred == s["test"][1]))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    (fewshot,) = [r for r in records if r["hparams"]["predictor"] == "fewshot_5" and r["seed"] == 3]
    saved = results.load_predictions(os.path.join(tmp_path, "predictors", fewshot["predictions"]))
    support = saved["support"]
    w, b = _direct_ridge(
        unit(s["train"][0][support]), P.one_hot(s["train"][1][support], 4), saved["chosen_l2"]
    )
    np.testing.assert_array_equal(saved["y_pred"], np.argmax(unit(s["test"][0]) @ w + b, axis=1))
    seeds = sorted(frame[frame["hp.predictor"] == "fewshot_5"]["seed"])
    assert seeds == [0, 1, 2, 3, 4]
    # A rerun reads every cell back: nothing runs, the logits are not computed again.
    again = predictor_sweep.run_predictors(
        s,
        str(tmp_path),
        model="m",
        dataset="ds",
        metric="top1",
        source_logits=source_logits,
        progress=False,
    )
    assert calls == [1] and again == records


def test_protocol_skips_what_a_dataset_cannot_support(tmp_path):
    s = _splits(seed=9, num_classes=3, dim=6, sizes=(30, 30, 30))
    keep = np.r_[np.flatnonzero(s["train"][1] != 2), np.flatnonzero(s["train"][1] == 2)[:3]]
    s["train"] = (s["train"][0][keep], s["train"][1][keep])  # class 2: 3 training examples
    logged = []
    records = predictor_sweep.run_predictors(
        s,
        str(tmp_path),
        model="m",
        dataset="ds",
        metric="top1",
        predictors=["knn", "fewshot", "logme", "hscore", "gbc"],
        fewshot_seeds=2,
        progress=False,
        log=logged.append,
    )
    names = sorted({r["hparams"]["predictor"] for r in records})
    assert names == ["fewshot_1", "gbc", "hscore", "knn", "logme"]
    assert len(logged) == 3 and all("smallest training class has 3 examples" in m for m in logged)
    # Multi-label: kNN (on the dataset's mAP) and LogME only.
    rng = np.random.default_rng(9)
    multi = {k: (x, (rng.random((len(x), 4)) < 0.5).astype(np.int8)) for k, (x, _) in s.items()}
    logged.clear()
    records = predictor_sweep.run_predictors(
        multi,
        str(tmp_path / "voc"),
        model="m",
        dataset="voc",
        metric="map11",
        predictors=["knn", "fewshot_1", "logme", "hscore"],
        progress=False,
        log=logged.append,
    )
    assert sorted(r["hparams"]["predictor"] for r in records) == ["knn", "logme"]
    assert len(logged) == 2 and all("multi-label" in m for m in logged)


def test_bad_input_is_a_one_line_error(tmp_path):
    s = _splits(seed=10)
    x = s["val"][0].copy()
    x[[3, 7], 1] = np.nan
    bad = dict(s, val=(x, s["val"][1]))
    with pytest.raises(P.PredictorError, match=r"ds val: 2 examples have NaN .* rows \[3, 7\]"):
        predictor_sweep.run_predictors(
            bad, str(tmp_path), model="m", dataset="ds", metric="top1", progress=False
        )
    one = dict(s)
    labels = s["train"][1].copy()
    labels[labels == 3] = 0
    labels[5] = 3  # class 3: one example in train, none in val
    one["train"] = (s["train"][0], labels)
    one["val"] = (s["val"][0], np.where(s["val"][1] == 3, 1, s["val"][1]))
    with pytest.raises(P.PredictorError) as error:
        predictor_sweep.run_predictors(
            one,
            str(tmp_path),
            model="m",
            dataset="ds",
            metric="top1",
            predictors=["gbc"],
            progress=False,
        )
    message = str(error.value)
    assert "\n" not in message and "class 3 has 1 example" in message and "GBC" in message
    # The default list skips what cannot run here and says why.
    logged = []
    records = predictor_sweep.run_predictors(
        one,
        str(tmp_path / "lenient"),
        model="m",
        dataset="ds",
        metric="top1",
        fewshot_seeds=1,
        progress=False,
        log=logged.append,
    )
    ran = {r["hparams"]["predictor"] for r in records}
    assert ran == {"knn", "fewshot_1", "logme", "hscore"}
    assert any("skipping gbc: ds train+val: class 3 has 1 example" in m for m in logged)
    assert any("skipping leep: needs the source model's logits" in m for m in logged)
    with pytest.raises(P.PredictorError, match="leep, nce need the source model's logits"):
        predictor_sweep.run_predictors(
            s,
            str(tmp_path),
            model="m",
            dataset="ds",
            metric="top1",
            predictors=["leep", "nce"],
            progress=False,
        )
    with pytest.raises(P.PredictorError, match="unknown predictor 'logme2'"):
        predictor_sweep.check_predictors(["logme2"])
    assert not os.path.exists(tmp_path / "predictors")  # the errors wrote nothing


def _write_features(folder, splits, **manifest):
    os.makedirs(folder, exist_ok=True)
    for split, (x, y) in splits.items():
        np.savez(
            os.path.join(folder, f"{split}.npz"),
            features=x.astype(np.float32),
            labels=y,
            ids=np.array([f"{split}/{i}" for i in range(len(y))]),
        )
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)


@pytest.mark.subprocess
def test_cli(tmp_path):
    s = _splits(seed=11)
    _write_features(tmp_path / "feats", s, model="toy", dataset="toyset", metric="top1")
    cmd = [
        sys.executable,
        "-m",
        "transfer_tf.bin.predictors",
        f"--features_dir={tmp_path / 'feats'}",
        f"--results_dir={tmp_path / 'results'}",
        "--fewshot_seeds=2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skipping leep: needs the source model's logits" in done.stdout
    frame = results.load(str(tmp_path / "results"))
    assert len(frame) == 1 + 4 * 2 + 3 and set(frame["model"]) == {"toy"}
    assert sweep.PROTOCOLS[-1] == "predictors"
    # Other features in the same folder: every cell is computed again, not read back (stale).
    moved = {k: (v[0] + 0.5, v[1]) for k, v in s.items()}
    _write_features(tmp_path / "feats", moved, model="toy", dataset="toyset", metric="top1")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("changed since it ran; running it again") == len(frame)
    rerun = results.load(str(tmp_path / "results"))
    assert len(rerun) == len(frame) and set(rerun["cell_id"]) == set(frame["cell_id"])
    x = s["test"][0].copy()
    x[0, 0] = np.inf
    _write_features(
        tmp_path / "bad",
        dict(s, test=(x, s["test"][1])),
        model="toy",
        dataset="toyset",
        metric="top1",
    )
    bad = subprocess.run(
        cmd[:3] + [f"--features_dir={tmp_path / 'bad'}"] + cmd[4:],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("transfer-predictors: error: toyset test")


# ---------------------------------------------------------------------------------------------
# LEEP and NCE from a SavedModel's serving_default logits on the records (TensorFlow).


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    from transfer_tf.data import write_tfrecords
    from transfer_tf.protocols import features

    root = tmp_path_factory.mktemp("predictors_tf")
    rng = np.random.default_rng(12)
    kernel = tf.constant(rng.normal(size=(3, 7)), tf.float32)

    class Export(tf.Module):
        """serving_default (logits of 7 source classes) and features, as transfer-export."""

        def _features(self, images):
            x = tf.cast(images, tf.float32) / 255.0
            return tf.concat([tf.reduce_mean(x, [1, 2]), tf.reduce_max(x, [1, 2])], axis=1)

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.uint8)])
        def serving_default(self, images):
            logits = 8.0 * tf.reduce_mean(tf.cast(images, tf.float32) / 255.0, [1, 2]) @ kernel
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.uint8)])
        def features(self, images):
            return {"features": self._features(images)}

    module = Export()
    full, features_only = root / "full", root / "features_only"
    tf.saved_model.save(
        module,
        str(full),
        signatures={"serving_default": module.serving_default, "features": module.features},
    )
    tf.saved_model.save(module, str(features_only), signatures={"features": module.features})
    records = root / "records"
    write_tfrecords("sklearn_digits", records, max_per_class=2)  # 20 / 20 / 20 images
    features.extract_features(
        str(full), str(records), "sklearn_digits", str(root / "feats"), log=lambda _: None
    )
    # The oracle: the same signature read by the features extractor, as a features file.
    features.extract_features(
        str(full),
        str(records),
        "sklearn_digits",
        str(root / "logits"),
        signature="serving_default",
        output_key="logits",
        splits=["train", "val"],
        log=lambda _: None,
    )
    return dict(root=root, full=str(full), features_only=str(features_only))


def test_leep_and_nce_read_the_source_logits_through_serving_default(
    exported, tmp_path, monkeypatch
):
    from transfer_tf.protocols import logreg

    feats = str(exported["root"] / "feats")
    splits = {s: logreg.load_features(feats, s) for s in ("train", "val", "test")}
    logits = np.concatenate(
        [logreg.load_features(str(exported["root"] / "logits"), s)[0] for s in ("train", "val")]
    )
    got = predictor_sweep.load_source_logits(exported["full"], feats, log=lambda _: None)
    np.testing.assert_allclose(got, logits, rtol=1e-6)
    assert os.path.exists(os.path.join(feats, "source_logits.train.npz"))

    def not_opened(path):
        raise AssertionError(f"{path} opened again: its cached logits were not used")

    monkeypatch.setattr(predictor_sweep, "logits_signature", not_opened)  # cached: same model
    records = predictor_sweep.run_predictors(
        splits,
        str(tmp_path),
        model="toy",
        dataset="sklearn_digits",
        metric="top1",
        predictors=["leep", "nce"],
        progress=False,
        source_logits=lambda: predictor_sweep.load_source_logits(exported["full"], feats),
    )
    monkeypatch.undo()
    labels = np.r_[splits["train"][1], splits["val"][1]]
    probs = scipy.special.softmax(logits.astype(np.float64), axis=1)
    by_name = {r["hparams"]["predictor"]: r["test_metric"] for r in records}
    assert by_name["leep"] == pytest.approx(P.leep(probs, labels), rel=1e-6)
    assert by_name["nce"] == pytest.approx(P.nce(np.argmax(probs, 1), labels))
    # Another SavedModel: the cached logits are not its own, so it is opened (and this one has
    # no logits to give).
    with pytest.raises(P.PredictorError, match="logits"):
        predictor_sweep.load_source_logits(exported["features_only"], feats, log=lambda _: None)


def test_a_features_only_savedmodel_is_a_one_line_error_before_any_cell(exported, tmp_path):
    from transfer_tf.protocols import logreg

    feats = tmp_path / "feats"  # no cached logits here
    os.makedirs(feats)
    for name in ("train.npz", "val.npz", "test.npz", "manifest.json"):
        with open(exported["root"] / "feats" / name, "rb") as src, open(feats / name, "wb") as dst:
            dst.write(src.read())
    splits = {s: logreg.load_features(str(feats), s) for s in ("train", "val", "test")}
    with pytest.raises(P.PredictorError) as error:
        predictor_sweep.run_predictors(
            splits,
            str(tmp_path / "results"),
            model="toy",
            dataset="sklearn_digits",
            metric="top1",
            predictors=["knn", "leep"],
            progress=False,
            source_logits=lambda: predictor_sweep.load_source_logits(
                exported["features_only"], str(feats)
            ),
        )
    message = str(error.value)
    assert "\n" not in message and "features-only" in message and "['features']" in message
    assert not os.path.exists(tmp_path / "results" / "predictors")  # kNN did not run either
