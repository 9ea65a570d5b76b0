"""Benchmark: the cost of each cheap transfer predictor (issue 19) as a fraction of the
logistic-regression sweep on the same features, measured in one run.

Both run as the study runs them, through their protocols and the sweep writer, in one process
under the same BLAS threads: `logreg.run_logreg` (45 λ on train, choose on val, refit on
train+val, score test) and `predictor_sweep.run_predictors` (kNN, the few-shot probes at
1 / 5 / 10 / 25 shots × --fewshot_seeds seeds, LogME, LEEP, NCE, H-score, GBC). Each side's time
is the sum of its cells' `wall_time_s` (a cell's precomputation is inside its cell). The sweep
runs first, then the predictors, then the sweep again; the sweep's time is the mean of its two
runs, so that a change in the machine's load shows as a difference between them (printed).
Beside the wall times, the CPU time of each side (`time.process_time`, per predictor through
`predictor_sweep._runner`): with one BLAS thread it equals the wall time on an idle machine and
moves less with other processes' load.

LEEP and NCE read the source model's logits; here they are a stand-in, the features times a
fixed random 1000-way head (its time is printed apart): in a study the LEEP cell also pays one
forward pass of the source model over train+val, about the cost of extracting the features.

Features (--features):
  synthetic   (default) a stand-in for ResNet-50 features of a DTD-sized dataset: --classes 47
              × (--train 64 + --val 16 + --test 40) examples × --dim 2048, float32: class means
              (scale --signal) in a random 96-d subspace, nuisance variation in a random 256-d subspace with a
              decaying spectrum, isotropic noise, ReLU (about half the values 0), a log-normal
              per-feature gain, 10% of the train and val labels replaced at random.
  digits_lite0 1280-d EfficientNet-Lite0 features of scikit-learn's digits (988 / 359 / 450),
              from benchmarks/bench_logreg.py's cache (computed there with the local torch wheel
              on first use, ~3 min).
  dir         {train,val,test}.npz from --features_dir, e.g. the Food-101-sized synthetic
              features of benchmarks/bench_logreg_scale.py --make_features (60,600 / 15,150 /
              25,250 × 2,048, 101 classes; one sweep there takes ~20 min on one core).

    python benchmarks/bench_predictors.py --blas_threads 1
    python benchmarks/bench_predictors.py --features digits_lite0 --blas_threads 1
    python benchmarks/bench_predictors.py --features dir --features_dir /tmp/food101_synth \
        --sweep_runs 1 --blas_threads 1  # bench_logreg_scale.py --make_features' Food-101 size
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from transfer_tf import results
from transfer_tf.protocols import logreg, predictor_sweep


def synthetic_features(args) -> dict:
    rng = np.random.default_rng(args.seed)
    d, k = args.dim, args.classes
    signal = np.linalg.qr(rng.normal(size=(d, 96)))[0]
    nuisance = np.linalg.qr(rng.normal(size=(d, 256)))[0] * (0.2 / np.sqrt(np.arange(1, 257)))
    centres = args.signal * rng.normal(size=(k, 96)) @ signal.T
    gain = np.exp(rng.normal(size=d)).astype(np.float32)
    splits = {}
    for split, per_class in (("train", args.train), ("val", args.val), ("test", args.test)):
        y = np.repeat(np.arange(k), per_class)
        x = centres[y] + rng.normal(size=(len(y), 256)) @ nuisance.T
        x += rng.normal(scale=8 / np.sqrt(d), size=x.shape)
        x = (np.maximum(x, 0) * gain).astype(np.float32)
        if split != "test":
            noisy = rng.random(len(y)) < 0.1
            y = np.where(noisy, rng.integers(0, k, len(y)), y)
        splits[split] = (x, y)
    return splits


def digits_lite0_features(args) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_logreg  # the cached features and the split of the logistic-regression benchmark

    features, labels = bench_logreg.efficientnet_lite0_digit_features(
        os.path.join(tempfile.gettempdir(), "transfer_tf_bench", "digits_lite0.npz")
    )
    order = np.random.default_rng(0).permutation(len(labels))
    parts = np.split(order, [988, 988 + 359])
    return {
        s: (features[i], labels[i]) for s, i in zip(("train", "val", "test"), parts, strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--features", choices=("synthetic", "digits_lite0", "dir"), default="synthetic"
    )
    parser.add_argument(
        "--features_dir",
        default=None,
        help="with --features dir: {train,val,test}.npz as transfer-extract-features or "
        "benchmarks/bench_logreg_scale.py --make_features write them",
    )
    parser.add_argument(
        "--sweep_runs",
        type=int,
        choices=(1, 2),
        default=2,
        help="logistic-regression sweeps: before and after the predictors (2), or before (1: "
        "for sizes where one sweep takes long)",
    )
    parser.add_argument("--classes", type=int, default=47)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--signal", type=float, default=0.18, help="scale of the class means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fewshot_seeds", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-6, help="logistic regression's tolerance")
    parser.add_argument("--blas_threads", type=int, default=None)
    args = parser.parse_args()
    if args.blas_threads:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.blas_threads)
    if args.features == "dir":
        if not args.features_dir:
            parser.error("--features dir needs --features_dir")
        splits = {s: logreg.load_features(args.features_dir, s) for s in ("train", "val", "test")}
    elif args.features == "synthetic":
        splits = synthetic_features(args)
    else:
        splits = digits_lite0_features(args)
    shapes = {s: x.shape for s, (x, _) in splits.items()}
    print(
        f"features: {args.features} {shapes}, {len(np.unique(splits['train'][1]))} classes, "
        f"BLAS threads: {args.blas_threads or 'default'}"
    )
    start = time.time()
    head = np.random.default_rng(1).normal(size=(shapes["train"][1], 1000)).astype(np.float32)
    logits = np.concatenate([splits["train"][0], splits["val"][0]]) @ head
    logits_time = time.time() - start
    cpu = _time_runners_on_cpu()
    root = tempfile.mkdtemp(prefix="bench_predictors_")
    try:
        sweeps = []
        for run in ("first", "predictors", "second")[: 1 + args.sweep_runs]:
            start, start_cpu = time.time(), time.process_time()
            if run == "predictors":
                records = predictor_sweep.run_predictors(
                    splits,
                    os.path.join(root, run),
                    model="m",
                    dataset="d",
                    metric="top1",
                    source_logits=lambda: logits,
                    fewshot_seeds=args.fewshot_seeds,
                    progress=False,
                )
                predictor_elapsed = time.time() - start
                continue
            final = logreg.run_logreg(
                splits,
                os.path.join(root, run),
                model="m",
                dataset="d",
                metric="top1",
                tol=args.tol,
                progress=False,
            )
            frame = results.load(os.path.join(root, run))
            sweeps.append((frame["wall_time_s"].sum(), time.process_time() - start_cpu, len(frame)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(sweeps, records, cpu, final)
    print(
        f"\nwall clock of run_predictors: {predictor_elapsed:.1f} s; stand-in source logits "
        f"(features x 1000-way head): {logits_time:.2f} s"
    )


def _time_runners_on_cpu() -> dict[str, float]:
    """{predictor: CPU seconds of its cells}, filled as they run: on a shared machine the CPU
    time of a one-thread process moves less with the load than its wall time."""
    cpu: dict[str, float] = {}
    runner = predictor_sweep._runner

    def timed(name):
        run = runner(name)

        def run_on_cpu(cell, data, test_ids):
            start = time.process_time()
            try:
                return run(cell, data, test_ids)
            finally:
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - start

        return run_on_cpu

    predictor_sweep._runner = timed
    return cpu


def _report(sweeps, records, cpu, final) -> None:
    sweep_time = float(np.mean([s[0] for s in sweeps]))
    sweep_cpu = float(np.mean([s[1] for s in sweeps]))
    print(
        f"logistic-regression sweep ({sweeps[0][2]} cells): "
        + ", then ".join(f"{s[0]:.1f} s" for s in sweeps)
        + f"; mean {sweep_time:.1f} s; CPU "
        + ", then ".join(f"{s[1]:.1f} s" for s in sweeps)
        + f"; test top-1 {final['test_metric']:.4f}"
    )
    by_name: dict[str, list] = {}
    for record in records:
        by_name.setdefault(record["hparams"]["predictor"], []).append(record)
    print(
        "\n| predictor | cells | wall time | fraction of the sweep | CPU time | fraction (CPU) "
        "| score (test metric) |"
    )
    print("|---|---|---|---|---|---|---|")
    total = total_cpu = 0.0
    for name, rows in by_name.items():
        wall = sum(r["wall_time_s"] for r in rows)
        total += wall
        total_cpu += cpu.get(name, np.nan)
        score = np.mean([r["test_metric"] for r in rows])
        print(
            f"| {name} | {len(rows)} | {wall:.2f} s | {wall / sweep_time:.2%} | "
            f"{cpu.get(name, np.nan):.2f} s | {cpu.get(name, np.nan) / sweep_cpu:.2%} | {score:.4g} |"
        )
    print(
        f"| **all predictors** | {len(records)} | {total:.2f} s | **{total / sweep_time:.2%}** | "
        f"{total_cpu:.2f} s | **{total_cpu / sweep_cpu:.2%}** | |"
    )


if __name__ == "__main__":
    main()
