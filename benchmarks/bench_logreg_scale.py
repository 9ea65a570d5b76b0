"""Benchmark: the logistic-regression protocol at Food-101's size against warm-started scikit-learn.

Both sides run the whole protocol of Sec. 4.1 on the same float32 features from disk: fit every
λ of the grid on train (strongest first, each fit warm-started from the previous λ), choose λ on
val by top-1 (ties: the stronger), refit on train+val at the chosen λ starting from the chosen
grid model, score test. scikit-learn is `LogisticRegression(solver="lbfgs", warm_start=True,
C=1/(λN), tol, max_iter)` refitted along the path with `set_params(C=...)`, i.e. its own
warm start, with the same tolerance number (its test, max |∂f/∂w| ≤ tol, is implied by ours,
‖∇f‖₂ ≤ tol). The two sides alternate λ by λ (ours, sklearn, ours, sklearn, ...) so that both
see the same machine load; the ratio is of their summed times, each including its own
precomputation, validation predictions, final fit and test predictions.

Features (`--make_features DIR`, written once): a synthetic stand-in for ResNet-50 features of
Food-101 with its sizes, 101 classes × (600 train + 150 val + 250 test) = 60,600 / 15,150 /
25,250 examples × 2,048 dimensions, float32 (the registry's food101 split: Holdout(0.2) of the
75,750 training images per class gives 600 + 150; test is the official 25,250). Generator (seed
`--seed`): x = gain ⊙ max(0, μ_y + B u + ε), where the class means μ_c = 0.08 · A c_c lie in a
random 96-dimensional subspace (A orthonormal [2048, 96], c_c ~ N(0, I)), B u is nuisance
variation in a random 256-dimensional subspace with per-direction standard deviations
0.2 · j^−½ (j = 1..256), ε ~ N(0, (8/√2048)² I) is isotropic noise, gain_j = exp(N(0, 1)) is a
per-feature scale (a spectrum spread like a CNN's), and the ReLU makes the features non-negative
and about half zero. 10% of the train and val labels are replaced by uniformly random classes
(Food-101's training images are not cleaned; its test set is), which gives the validation curve
an interior optimum. One chunk of rows at a time, so memory is the output arrays.

    python benchmarks/bench_logreg_scale.py --make_features /tmp/food101_synth
    python benchmarks/bench_logreg_scale.py --features_dir /tmp/food101_synth --tol 1e-4

Printed per λ: each side's seconds, iterations and validation top-1; then the totals, the ratio,
the chosen λ of each, their test top-1, the objective gap at every λ and the process's peak
resident memory (both sides together; run transfer-logreg under `/usr/bin/time -v` for ours
alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import time
import warnings

import numpy as np

from transfer_tf.protocols import logreg

NUM_CLASSES, DIM = 101, 2048
SPLITS = {"train": 600, "val": 150, "test": 250}  # examples per class
SIGNAL_RANK, BETWEEN_STD, WITHIN_STD = 96, 0.1, 0.2
NUISANCE_RANK, NUISANCE_STD = 256, 0.2
NOISE_STD = 8.0 / np.sqrt(DIM)
LABEL_NOISE = {"train": 0.1, "val": 0.1, "test": 0.0}
CHUNK_ROWS = 8192


def synthesize(split: str, seed: int = 0, per_class: int | None = None):
    """(features float32 [N, 2048], labels int64 [N]) of one split, as the module docstring says."""
    rng = np.random.default_rng(seed)  # the class structure: the same for every split
    signal, _ = np.linalg.qr(rng.normal(size=(DIM, SIGNAL_RANK)))
    nuisance, _ = np.linalg.qr(rng.normal(size=(DIM, NUISANCE_RANK)))
    means = BETWEEN_STD * rng.normal(size=(NUM_CLASSES, SIGNAL_RANK)) @ signal.T
    nuisance *= NUISANCE_STD * np.arange(1, NUISANCE_RANK + 1) ** -0.5
    gain = np.exp(rng.normal(size=DIM))
    split_rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    labels = np.repeat(np.arange(NUM_CLASSES), per_class or SPLITS[split])
    split_rng.shuffle(labels)
    features = np.empty((len(labels), DIM), np.float32)
    for start in range(0, len(labels), CHUNK_ROWS):
        y = labels[start : start + CHUNK_ROWS]
        h = means[y] + WITHIN_STD * split_rng.normal(size=(len(y), SIGNAL_RANK)) @ signal.T
        h += split_rng.normal(size=(len(y), NUISANCE_RANK)) @ nuisance.T
        h += NOISE_STD * split_rng.normal(size=h.shape)
        features[start : start + len(y)] = np.maximum(h, 0.0) * gain
    flip = split_rng.random(len(labels)) < LABEL_NOISE[split]
    labels = np.where(flip, split_rng.integers(0, NUM_CLASSES, len(labels)), labels)
    return features, labels


def make_features(features_dir: str, seed: int, fraction: float = 1.0) -> None:
    os.makedirs(features_dir, exist_ok=True)
    counts = {}
    for split in SPLITS:
        x, y = synthesize(split, seed, max(1, round(fraction * SPLITS[split])))
        np.savez(os.path.join(features_dir, f"{split}.npz"), features=x, labels=y)
        counts[split] = len(y)
        print(f"{split}: {x.shape} float32, {np.mean(x == 0):.0%} zeros", flush=True)
    manifest = {"model": "synthetic_resnet50", "dataset": "food101_synthetic", "metric": "top1",
                "num_classes": NUM_CLASSES, "feature_dim": DIM, "splits": counts,
                "generator": f"benchmarks/bench_logreg_scale.py seed {seed} fraction {fraction}"}  # fmt: skip
    with open(os.path.join(features_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def top1(y_true, model_or_predictions, x=None) -> float:
    predictions = model_or_predictions if x is None else model_or_predictions.predict(x)
    return float(np.mean(np.asarray(y_true) == predictions))


class Timer:
    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self.start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make_features", default=None, help="write the features here, exit")
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="with --make_features: of each split's size"
    )
    parser.add_argument("--features_dir", default="/tmp/transfer_tf_bench/food101_synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_l2", type=int, default=logreg.NUM_L2)
    parser.add_argument("--l2_min", type=float, default=logreg.L2_MIN)
    parser.add_argument("--l2_max", type=float, default=logreg.L2_MAX)
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance of both")
    parser.add_argument("--max_iter", type=int, default=1000, help="iterations per fit, both")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "tensorflow"])
    parser.add_argument(
        "--sklearn_dtype",
        default="float64",
        choices=["float64", "float32"],
        help="scikit-learn's copy of the features (float32: its float32 lbfgs)",
    )
    parser.add_argument(
        "--skip_sklearn", action="store_true", help="ours only (e.g. on a GPU machine)"
    )
    parser.add_argument("--blas_threads", type=int, default=1, help="both sides (threadpoolctl)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.make_features:
        make_features(args.make_features, args.seed, args.fraction)
        return
    import threadpoolctl
    from sklearn.linear_model import LogisticRegression

    threadpoolctl.threadpool_limits(args.blas_threads)
    load = os.getloadavg()
    splits = {s: logreg.load_features(args.features_dir, s) for s in SPLITS}
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits.values()
    x_trva, y_trva = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    sk_dtype = np.dtype(args.sklearn_dtype)
    sk_tr, sk_trva = x_tr.astype(sk_dtype), x_trva.astype(sk_dtype)
    grid = logreg.l2_grid(args.num_l2, args.l2_min, args.l2_max)
    print(f"features {args.features_dir}: train {len(x_tr)}, val {len(x_va)}, test {len(x_te)}, "
          f"dim {x_tr.shape[1]}, classes {len(np.unique(y_tr))}, {len(grid)} λ, tol {args.tol}, "
          f"max_iter {args.max_iter}, backend {args.backend}, scikit-learn on "
          f"{args.sklearn_dtype}, BLAS threads {args.blas_threads}, load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)", flush=True)  # fmt: skip

    ours_t, ref_t = Timer(), Timer()
    with ours_t:
        problem = logreg.LogisticRegressionProblem(x_tr, y_tr, backend=args.backend)
    print(f"ours: precomputation {ours_t.seconds:.1f} s (rank {problem.rank})", flush=True)
    clf = LogisticRegression(solver="lbfgs", tol=args.tol, max_iter=args.max_iter,
                             warm_start=True)  # fmt: skip
    rows, model, best = [], None, {}
    for i, l2 in enumerate(grid):
        passes = dict(problem.half_passes)
        with Timer() as t_ours, ours_t:
            model = problem.fit(float(l2), model, tol=args.tol, max_iter=args.max_iter)
            val_ours = top1(y_va, model, x_va)
        if val_ours > best.get("ours", (-1,))[0]:
            best["ours"] = (val_ours, i, model)
        if args.skip_sklearn:
            val_ref, t_ref, it_ref, gap = np.nan, Timer(), 0, np.nan
        else:
            with Timer() as t_ref, ref_t, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter, as for ours
                clf.set_params(C=logreg.l2_to_c(l2, len(x_tr)))
                clf.fit(sk_tr, y_tr)
                val_ref = top1(y_va, clf.predict(x_va.astype(sk_dtype)))
            it_ref = int(clf.n_iter_[0])
            if val_ref > best.get("ref", (-1,))[0]:
                best["ref"] = (val_ref, i, copy.deepcopy(clf))
            theirs = logreg.LinearModel(clf.coef_.T, clf.intercept_, False, l2, 0.0, 0)
            reference = problem.objective_of(theirs)
            gap = (model.objective - reference) / reference
        passes = {p: (problem.half_passes[p] - passes[p]) / 2 for p in passes}
        rows.append(dict(l2=float(l2), ours_s=t_ours.seconds, ours_iter=model.iterations,
                         ours_passes32=passes[32], ours_passes64=passes[64],
                         ours_val=val_ours, ours_objective=model.objective, ref_s=t_ref.seconds,
                         ref_iter=it_ref, ref_val=val_ref, gap=gap))  # fmt: skip
        print(f"[{i + 1:2d}/{len(grid)}] λ={l2:.3g}  ours {t_ours.seconds:6.1f} s "
              f"{model.iterations:4d} it ({passes[32]}+{passes[64]} passes) val {val_ours:.4f}  |  sklearn {t_ref.seconds:6.1f} s "
              f"{it_ref:4d} it val {val_ref:.4f}  |  objective (ours − sk)/sk {gap:+.1e}",
              flush=True)  # fmt: skip
    del problem  # as run_logreg: free the grid's precomputation before the final one

    _, best_ours, grid_model = best["ours"]
    with ours_t:
        final_problem = logreg.LogisticRegressionProblem(x_trva, y_trva, backend=args.backend)
        final = final_problem.fit(grid[best_ours], grid_model, tol=args.tol, max_iter=args.max_iter)
        test_ours = top1(y_te, final, x_te)
    del final_problem
    result = dict(
        date=time.strftime("%Y-%m-%d"), load_at_start=load, load_at_end=os.getloadavg(),
        n_train=len(x_tr), n_val=len(x_va), n_test=len(x_te), dim=x_tr.shape[1],
        classes=NUM_CLASSES, tol=args.tol, max_iter=args.max_iter, backend=args.backend,
        sklearn_dtype=args.sklearn_dtype, blas_threads=args.blas_threads,
        ours_seconds=ours_t.seconds, ours_l2=float(grid[best_ours]), ours_test=test_ours,
        ours_final_iterations=final.iterations, per_l2=rows,
    )  # fmt: skip
    print(f"transfer_tf  {ours_t.seconds:8.1f} s  chosen λ={grid[best_ours]:.3g} (val "
          f"{best['ours'][0]:.4f})  test top-1 {test_ours:.4f}  iterations "
          f"{sum(r['ours_iter'] for r in rows)} + {final.iterations}", flush=True)  # fmt: skip
    if not args.skip_sklearn:
        _, best_ref, ref_clf = best["ref"]
        with ref_t, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_clf.set_params(C=logreg.l2_to_c(grid[best_ref], len(x_trva)))
            ref_clf.fit(sk_trva, y_trva)
            test_ref = top1(y_te, ref_clf.predict(x_te.astype(sk_dtype)))
        gaps = np.array([r["gap"] for r in rows])
        ratio = ref_t.seconds / ours_t.seconds
        result.update(ref_seconds=ref_t.seconds, ref_l2=float(grid[best_ref]), ref_test=test_ref,
                      ref_final_iterations=int(ref_clf.n_iter_[0]), ratio=ratio)  # fmt: skip
        print(f"scikit-learn {ref_t.seconds:8.1f} s  chosen λ={grid[best_ref]:.3g} (val "
              f"{best['ref'][0]:.4f})  test top-1 {test_ref:.4f}  iterations "
              f"{sum(r['ref_iter'] for r in rows)} + {int(ref_clf.n_iter_[0])}")  # fmt: skip
        print(f"speed ratio {ratio:.2f}x; choices {abs(best_ours - best_ref)} grid steps apart; "
              f"test top-1 ours − sklearn {100 * (test_ours - test_ref):+.2f} pt; objective "
              f"(ours − sk)/sk: max {gaps.max():+.1e}, median {np.median(gaps):+.1e}")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["peak_rss_gib_both_sides"] = peak
    print(f"peak resident memory of this process (both sides) {peak:.2f} GiB; load average at "
          f"end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
