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
    python benchmarks/bench_logreg_scale.py --features_dir /tmp/food101_synth  # tol 1e-6
    # scikit-learn's whole path takes many hours on 2 cores: stop it after a budget, ours
    # finishes alone, and the printed ratio is a lower bound (its remaining λ only add time)
    python benchmarks/bench_logreg_scale.py --features_dir /tmp/food101_synth \
        --baseline_budget_s 4000
    # is a choice that differs on a flat validation curve the baseline's looser fit? (ours as
    # shipped against scikit-learn at a 100x tighter tolerance; not a fair speed figure)
    python benchmarks/bench_logreg_scale.py --make_features /tmp/food101_synth_tenth --fraction 0.1
    python benchmarks/bench_logreg_scale.py --features_dir /tmp/food101_synth_tenth \
        --baseline_tol 1e-8
    # on a GPU machine: the TensorFlow backend against the numpy one, interleaved the same way
    python benchmarks/bench_logreg_scale.py --features_dir /tmp/food101_synth \
        --backend tensorflow --baseline numpy --blas_threads 16

Printed per λ: each side's seconds, iterations and validation top-1 (ours also its passes over
the features, float32 + float64); then the totals, the ratio, the chosen λ of each, their test
top-1, the objective gap at every λ (measured by our float64 objective on train; negative: ours
is lower) and the process's peak resident memory (all sides together; run transfer-logreg under
`/usr/bin/time -v` for ours alone).
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


class Ours:
    """transfer_tf's solver on one backend, as `run_logreg` uses it."""

    def __init__(self, backend, tol, max_iter):
        self.backend, self.tol, self.max_iter = backend, tol, max_iter
        self.name = "transfer_tf" if backend == "numpy" else f"transfer_tf[{backend}]"
        self.model = None

    def prepare(self, x, y):
        self.problem = logreg.LogisticRegressionProblem(x, y, backend=self.backend)

    def fit(self, l2, n):
        self.model = self.problem.fit(float(l2), self.model, tol=self.tol, max_iter=self.max_iter)
        return self.model, self.model.iterations

    def predict(self, x):
        return self.model.predict(x)

    def linear_model(self, l2):
        return self.model

    def refit(self, x, y, l2, chosen):
        del self.problem  # as run_logreg: free the grid's precomputation first
        self.problem = logreg.LogisticRegressionProblem(x, y, backend=self.backend)
        self.model = self.problem.fit(float(l2), chosen, tol=self.tol, max_iter=self.max_iter)
        del self.problem
        return self.model.iterations


class ScikitLearn:
    """`LogisticRegression(solver="lbfgs", warm_start=True)` along the path."""

    name = "scikit-learn"

    def __init__(self, tol, max_iter, dtype):
        from sklearn.linear_model import LogisticRegression

        self.dtype = np.dtype(dtype)
        self.clf = LogisticRegression(solver="lbfgs", tol=tol, max_iter=max_iter,
                                      warm_start=True)  # fmt: skip

    def prepare(self, x, y):
        self.x, self.y = x.astype(self.dtype), y

    def fit(self, l2, n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter, as for ours
            self.clf.set_params(C=logreg.l2_to_c(l2, n))
            self.clf.fit(self.x, self.y)
        return copy.deepcopy(self.clf), int(self.clf.n_iter_[0])

    def predict(self, x):
        return self.clf.predict(x.astype(self.dtype))

    def linear_model(self, l2):
        return logreg.LinearModel(self.clf.coef_.T, self.clf.intercept_, False, l2, 0.0, 0)

    def refit(self, x, y, l2, chosen):
        self.clf = chosen  # warm start from the chosen grid model
        self.prepare(x, y)
        self.fit(l2, len(x))
        return int(self.clf.n_iter_[0])


def compare_prefix(result, rows, sides, timers, grid) -> None:
    """What a budget-stopped baseline still shows: a lower bound on the whole protocol's ratio
    (its remaining λ and final fit only add time) and the two sides on the λ both fitted."""
    ours, other = result["s0"], sides[1].name
    ratio = timers[1].seconds / ours["seconds"]
    prefix = sum(r["s1_s"] for r in rows) / sum(r["s0_s"] for r in rows)
    vals = np.array([[r["s0_val"], r["s1_val"]] for r in rows])
    gaps = np.array([r["gap"] for r in rows])
    iterations = [sum(r[f"s{j}_iter"] for r in rows) for j in (0, 1)]
    result["baseline_stopped"] = dict(
        name=other, after_l2=len(rows), of=len(grid), seconds=timers[1].seconds,
        ratio_lower_bound=ratio, ratio_on_common_l2=prefix, iterations_on_common_l2=iterations,
        max_val_difference=float(np.abs(vals[:, 0] - vals[:, 1]).max()),
        best_val_on_common_l2=[float(v) for v in vals.max(0)],
        chosen_on_common_l2=[int(v) for v in vals.argmax(0)],
        objective_gap_max=float(gaps.max()), objective_gap_median=float(np.median(gaps)),
    )  # fmt: skip
    print(f"{other} stopped by its budget after {len(rows)} of {len(grid)} λ ({timers[1].seconds:.0f}"
          f" s with its precomputation): speed ratio {other} / {ours['name']} ≥ {ratio:.2f}x "
          f"(its remaining λ and final fit only add); on the {len(rows)} λ both fitted: "
          f"{prefix:.2f}x, iterations {iterations[1]} vs {iterations[0]}, validation top-1 "
          f"differs by ≤ {np.abs(vals[:, 0] - vals[:, 1]).max():.4f}, objective (s0 − s1)/s1 "
          f"max {gaps.max():+.1e}, median {np.median(gaps):+.1e}")  # fmt: skip


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
    parser.add_argument("--tol", type=float, default=1e-6, help="gradient tolerance of both")
    parser.add_argument(
        "--baseline_tol",
        type=float,
        default=None,
        help="the other side's tolerance if not --tol (e.g. 1e-8: is a choice that differs on a "
        "flat validation curve the baseline's looser fit?)",
    )
    parser.add_argument("--max_iter", type=int, default=1000, help="iterations per fit, both")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "tensorflow"])
    parser.add_argument(
        "--baseline",
        default="sklearn",
        choices=["sklearn", "numpy", "none"],
        help="the other side: warm-started scikit-learn, our numpy backend (against "
        "--backend tensorflow on a GPU), or nothing",
    )
    parser.add_argument(
        "--sklearn_dtype",
        default="float64",
        choices=["float64", "float32"],
        help="scikit-learn's copy of the features (float32: its float32 lbfgs)",
    )
    parser.add_argument(
        "--baseline_budget_s",
        type=float,
        default=None,
        help="stop the other side once its summed time passes this many seconds (it is not "
        "charged more; ours runs the whole protocol): the ratio printed is then a lower bound",
    )
    parser.add_argument("--blas_threads", type=int, default=1, help="both sides (threadpoolctl)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.make_features:
        make_features(args.make_features, args.seed, args.fraction)
        return
    import threadpoolctl

    threadpoolctl.threadpool_limits(args.blas_threads)
    load = os.getloadavg()
    splits = {s: logreg.load_features(args.features_dir, s) for s in SPLITS}
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits.values()
    x_trva, y_trva = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    grid = logreg.l2_grid(args.num_l2, args.l2_min, args.l2_max)
    sides = [Ours(args.backend, args.tol, args.max_iter)]
    baseline_tol = args.tol if args.baseline_tol is None else args.baseline_tol
    if args.baseline == "sklearn":
        sides.append(ScikitLearn(baseline_tol, args.max_iter, args.sklearn_dtype))
    elif args.baseline == "numpy":
        sides.append(Ours("numpy", baseline_tol, args.max_iter))
    print(f"features {args.features_dir}: train {len(x_tr)}, val {len(x_va)}, test {len(x_te)}, "
          f"dim {x_tr.shape[1]}, classes {len(np.unique(y_tr))}, {len(grid)} λ, tol {args.tol} "
          f"(the other side {baseline_tol}), "
          f"max_iter {args.max_iter}, sides {[side.name for side in sides]}, scikit-learn on "
          f"{args.sklearn_dtype}, BLAS threads {args.blas_threads}, load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)",
          flush=True)  # fmt: skip

    timers = [Timer() for _ in sides]
    for side, timer in zip(sides, timers, strict=True):
        with timer:
            side.prepare(x_tr, y_tr)
        print(f"{side.name}: precomputation {timer.seconds:.1f} s", flush=True)
    ours = sides[0]
    rows, best, stopped_at = [], [(-1.0, -1, None)] * len(sides), None
    for i, l2 in enumerate(grid):  # the sides alternate λ by λ: both see the same load
        row, line = dict(l2=float(l2)), f"[{i + 1:2d}/{len(grid)}] λ={l2:.3g}"
        for j, (side, timer) in enumerate(zip(sides, timers, strict=True)):
            if j > 0 and stopped_at is not None:
                continue
            passes = dict(ours.problem.half_passes)
            with Timer() as t, timer:
                state, iterations = side.fit(l2, len(x_tr))
                val = top1(y_va, side.predict(x_va))
            if val > best[j][0]:
                best[j] = (val, i, state)
            row.update({f"s{j}_s": t.seconds, f"s{j}_iter": iterations, f"s{j}_val": val})
            line += f"  | {side.name} {t.seconds:6.1f} s {iterations:4d} it val {val:.4f}"
            if j == 0:
                made = {p: (ours.problem.half_passes[p] - passes[p]) / 2 for p in passes}
                row.update(passes32=made[32], passes64=made[64], objective=state.objective)
                line += f" ({made[32]:g}+{made[64]:g} passes)"
        if len(sides) > 1 and stopped_at is None:
            other = ours.problem.objective_of(sides[1].linear_model(float(l2)))
            row["gap"] = (row["objective"] - other) / other
            line += f"  | objective (s0 − s1)/s1 {row['gap']:+.1e}"
        rows.append(row)
        print(line, flush=True)
        budget = args.baseline_budget_s
        if len(sides) > 1 and stopped_at is None and budget and timers[1].seconds > budget:
            stopped_at = i
            print(f"{sides[1].name} stopped after λ {i + 1} of {len(grid)}: its {timers[1].seconds:.0f} s "
                  f"passed --baseline_budget_s={budget:g}; {ours.name} goes on alone", flush=True)  # fmt: skip

    result = dict(
        date=time.strftime("%Y-%m-%d"), load_at_start=load, n_train=len(x_tr), n_val=len(x_va),
        n_test=len(x_te), dim=x_tr.shape[1], classes=NUM_CLASSES, tol=args.tol,
        baseline_tol=baseline_tol, max_iter=args.max_iter, sides=[side.name for side in sides],
        sklearn_dtype=args.sklearn_dtype, blas_threads=args.blas_threads, per_l2=rows,
    )  # fmt: skip
    for j, (side, timer) in enumerate(zip(sides, timers, strict=True)):
        if j > 0 and stopped_at is not None:
            break
        val, chosen, state = best[j]
        with timer:
            iterations = side.refit(x_trva, y_trva, grid[chosen], state)
            test = top1(y_te, side.predict(x_te))
        result[f"s{j}"] = dict(name=side.name, seconds=timer.seconds, l2=float(grid[chosen]),
                               chosen=chosen, val=val, test=test, final_iterations=iterations)  # fmt: skip
        print(f"{side.name:22s} {timer.seconds:8.1f} s  chosen λ={grid[chosen]:.3g} (val "
              f"{val:.4f})  test top-1 {test:.4f}  iterations "
              f"{sum(r[f's{j}_iter'] for r in rows)} + {iterations}", flush=True)  # fmt: skip
    if len(sides) > 1 and stopped_at is not None:
        compare_prefix(result, rows[: stopped_at + 1], sides, timers, grid)
    elif len(sides) > 1:
        a, b = result["s0"], result["s1"]
        gaps = np.array([r["gap"] for r in rows])
        result["ratio"] = b["seconds"] / a["seconds"]
        print(f"speed ratio {b['name']} / {a['name']} = {result['ratio']:.2f}x; choices "
              f"{abs(a['chosen'] - b['chosen'])} grid steps apart; test top-1 difference "
              f"{100 * (a['test'] - b['test']):+.2f} pt; objective (s0 − s1)/s1 at each λ: max "
              f"{gaps.max():+.1e}, median {np.median(gaps):+.1e}")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["peak_rss_gib_all_sides"] = peak
    result["load_at_end"] = os.getloadavg()
    print(f"peak resident memory of this process (all sides) {peak:.2f} GiB; load average at "
          f"end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
