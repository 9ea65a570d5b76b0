"""Feature extraction from TFRecords through the SavedModel vs the bare Keras forward pass.

For each model (registry, random weights: the speed does not depend on them), in one process:
  forward   `tf.function(lambda x: model(x, training=False)["features"])` on one in-memory float
            batch, already scaled (the strongest fair baseline: no input work at all)
  extract   `transfer_tf.protocols.features.extract_split` on TFRecords of --num_images smooth
            random JPEGs of --height x --width through the model's transfer-export SavedModel
            (checked read, decode, central crop, resize, uint8, the `features` signature, the
            features gathered into one array): the path of transfer-extract-features
  input     the same input pipeline alone (`features.read_split`: read, check, decode, crop,
            resize), no model
All sides see the same model at the same batch and the same number of images; they alternate
--repeats times (every other round in reverse order) (a machine shared with other jobs slows them alike) and the medians are
compared: the ratio extract / forward (issue 18's goal: >= 0.9). On a CPU the input work and
the forward pass share the same cores, so extraction cannot beat the CPU-sum bound
1 / (1/forward + 1/input) (both stages busy on all cores, perfectly overlapped); extract / bound
says how much of the gap is the extraction path's own overhead rather than decoding.

With --before=<git revision>, that revision's `transfer_tf/protocols/features.py` runs as one
more side ("before": the same SavedModel, records and batch) for a before / after in one run.

    python benchmarks/bench_extract.py
    python benchmarks/bench_extract.py --before=3ec6e1c
    python benchmarks/bench_extract.py --models=efficientnet_lite0 --num_images=128 --repeats=5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pipeline import synthetic_jpegs  # noqa: E402

from transfer_tf.data.tfrecords import write_manifest, write_split  # noqa: E402
from transfer_tf.models import build_model, get_spec, preprocess  # noqa: E402
from transfer_tf.protocols import features  # noqa: E402
from transfer_tf.training.export import export_saved_model  # noqa: E402


def write_records(root: Path, jpegs: list[bytes], num_shards: int = 4) -> None:
    labels = np.arange(len(jpegs)) % 10
    shards = write_split(
        root / "bench",
        "train",
        ((f"{i}", int(labels[i]), b, f"{i}") for i, b in enumerate(jpegs)),
        len(jpegs),
        num_shards=num_shards,
    )
    write_manifest(
        root / "bench" / "train.manifest.json",
        {
            "dataset": "bench",
            "split": "train",
            "num_examples": len(jpegs),
            "num_classes": 10,
            "multi_label": False,
            "class_names": [str(c) for c in range(10)],
            "shards": shards,
        },
    )


def features_module_at(revision: str, tmp: Path):
    """`transfer_tf/protocols/features.py` as it was at `revision`, imported from a copy."""
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "show", f"{revision}:transfer_tf/protocols/features.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp / f"features_{revision}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"features_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bench_model(name: str, records: Path, tmp: Path, args, before=None) -> dict:
    spec = get_spec(name)
    size = spec.input_size
    model = build_model(name, 1000, input_size=size)
    export_dir = str(tmp / name)
    export_saved_model(model, export_dir, input_size=size, preprocessing=spec.preprocessing)
    source = features.load_signature(export_dir)

    forward = tf.function(lambda x: model(x, training=False)["features"])
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 255, (args.batch_size, size, size, 3)).astype(np.float32)
    batch = tf.constant(preprocess(tf.constant(raw), spec.preprocessing))
    calls = -(-args.num_images // args.batch_size)  # the same number of full batches

    def run_forward():
        start = time.perf_counter()
        for _ in range(calls):
            out = forward(batch)
        out.numpy()
        return calls * args.batch_size / (time.perf_counter() - start)

    def run_input():
        start = time.perf_counter()
        batches, _ = features.read_split(
            str(records), "bench", "train", (size, size), args.batch_size
        )
        n = sum(int(images.shape[0]) for images, _, _ in batches)
        return n / (time.perf_counter() - start)

    def extract_with(module):
        source_then = module.load_signature(export_dir) if module is not features else source

        def run():
            start = time.perf_counter()
            arrays, _ = module.extract_split(
                source_then, str(records), "bench", "train", batch_size=args.batch_size
            )
            return len(arrays["features"]) / (time.perf_counter() - start)

        return run

    run_extract = extract_with(features)

    sides = {"forward": run_forward, "extract": run_extract, "input": run_input}
    if before is not None:
        sides["before"] = extract_with(before)
    for run in sides.values():  # warm-up: tracing, autotuning, page cache
        run()
    rates = {side: [] for side in sides}
    for round_ in range(args.repeats):
        # Every other round in reverse order: no side always follows the same one.
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            rates[side].append(sides[side]())
    median = {k: statistics.median(v) for k, v in rates.items()}
    return {"model": name, "size": size, "rates": rates, "median": median}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet_50")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=None, help="git revision to compare with")
    args = parser.parse_args()

    jpegs = synthetic_jpegs(args.num_images, args.height, args.width)
    print(
        f"{args.num_images} JPEGs {args.height}x{args.width} (mean {np.mean([len(b) for b in jpegs]) / 1e3:.0f} kB), "
        f"batch {args.batch_size}, {args.repeats} alternating repeats, {os.cpu_count()} CPUs, "
        f"TF {tf.__version__}, load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_records(tmp / "records", jpegs)
        before = features_module_at(args.before, tmp) if args.before else None
        for name in args.models.split(","):
            r = bench_model(name, tmp / "records", tmp, args, before)
            print(f"{r['model']} @ {r['size']}:")
            m = r["median"]
            for side in r["rates"]:
                runs = ", ".join(f"{x:.1f}" for x in r["rates"][side])
                print(f"  {side:8s} {m[side]:7.1f} images/s  (runs: {runs})")
            bound = 1.0 / (1.0 / m["forward"] + 1.0 / m["input"])
            print(f"  CPU-sum bound {bound:.1f} images/s")
            print(f"  ratio extract / forward = {m['extract'] / m['forward']:.3f}  (goal >= 0.9)")
            print(f"  ratio extract / bound   = {m['extract'] / bound:.3f}", flush=True)
            if "before" in m:
                print(f"  ratio before / forward  = {m['before'] / m['forward']:.3f}")
                print(f"  ratio extract / before  = {m['extract'] / m['before']:.3f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
