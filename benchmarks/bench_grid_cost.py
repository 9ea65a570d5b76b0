"""What the paper's full grid costs: training throughput of registry models at their native input
size, measured here, turned into GPU-hours of flags/scale/paper_grid.cfg.

Each model trains (best of --rounds rounds) with the fine-tuning recipe (SGD Nesterov, cosine, the compiled loop of
`Trainer`) on one synthetic batch repeated from memory, so only the network is timed. The measured
images/s are relative costs; GPU-hours assume that the models' relative costs on a GPU equal their
relative costs on this CPU, anchored to one published GPU throughput of ResNet-50 (--gpu_anchor,
docs/SCALE_OUT.md cites the numbers); on a GPU, --gpu_anchor=measured uses the measured rates. Work counted (per model): pretraining in 2 settings x 31,280
steps x 4,096 images; 12 datasets x 57 fine-tuning cells x 20,000 steps x 256 images; the same
with 40,000 steps from scratch. Evaluation passes (< 1% of the images) and logistic regression
(CPU, minutes per sweep) are left out.

    python benchmarks/bench_grid_cost.py                       # all 16 models of the paper
    python benchmarks/bench_grid_cost.py --models=resnet_50,mobilenet_v1 --batch_size=8
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags

PAPER_MODELS = (
    "inception_v1,bn_inception,inception_v3,inception_v4,inception_resnet_v2,resnet_50,"
    "resnet_101,resnet_152,densenet_121,densenet_169,densenet_201,mobilenet_v1,mobilenet_v2,"
    "mobilenet_v2_140,nasnet_mobile,nasnet_large"
)
# Published single-GPU training throughput of ResNet-50 v1.5 in TensorFlow, images/s
# (NVIDIA DeepLearningExamples, TensorFlow/Classification/ConvNets/resnet50v1.5/README.md,
# 20.06 container, with XLA): A100 40GB TF32 909, mixed precision 2375; V100 16GB FP32 412,
# mixed precision 1270. Our loop trains in float32 (TF32 on an A100).
GPU_ANCHORS = {"a100_tf32": 909.0, "a100_amp": 2375.0, "v100_fp32": 412.0, "v100_amp": 1270.0}

flags.DEFINE_list("models", PAPER_MODELS.split(","), "Registry models to time (native size).")
flags.DEFINE_integer("batch_size", 8, "Batch per timed step on this machine.")
flags.DEFINE_integer("warmup_steps", 2, "Steps before timing (tracing).")
flags.DEFINE_integer("steps", 4, "Timed steps per model and round.")
flags.DEFINE_integer(
    "rounds",
    2,
    "Rounds over all models; a model's best round counts (other jobs on a shared "
    "machine only slow a round down).",
)
flags.DEFINE_enum(
    "gpu_anchor",
    "a100_tf32",
    [*GPU_ANCHORS, "measured"],
    "Published ResNet-50 throughput to scale by, or 'measured' when this machine is the GPU.",
)
flags.DEFINE_string("output", None, "Also write the report (JSON) here.")
FLAGS = flags.FLAGS

GRID_CELLS = 7 * 8 + 1  # a 7 x 8 grid plus the final cell
DATASETS = 12
IMAGES = {
    "pretrain": 2 * 31_280 * 4096,
    "finetune": DATASETS * GRID_CELLS * 20_000 * 256,
    "scratch": DATASETS * GRID_CELLS * 40_000 * 256,
}


def time_model(name: str, scratch: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from transfer_tf.models import get_spec
    from transfer_tf.training import TrainConfig, Trainer

    size = get_spec(name).input_size
    config = TrainConfig(
        model=name,
        dataset="synthetic",
        records_dir=scratch,
        num_classes=100,
        input_size=size,
        batch_size=FLAGS.batch_size,
        train_steps=10**9,
        learning_rate=0.01,
        optimizer="sgd_nesterov",
        lr_schedule="cosine",
        weight_decay=1e-5,
        ema_decay=0.0,
        eval_split=None,
        checkpoint_input=False,
        num_train_examples=100_000,
    )

    def synthetic_input_fn(cfg, split, *, training, batch_size, repeat):
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
        labels = rng.integers(0, cfg.num_classes, batch_size).astype(np.int32)
        return tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(labels))).repeat()

    start = time.perf_counter()
    trainer = Trainer(config, os.path.join(scratch, name), input_fn=synthetic_input_fn)
    float(trainer._train_steps(trainer.iterator, tf.constant(FLAGS.warmup_steps))[0])
    setup = time.perf_counter() - start
    start = time.perf_counter()
    float(trainer._train_steps(trainer.iterator, tf.constant(FLAGS.steps))[0])
    seconds = time.perf_counter() - start
    del trainer
    keras.backend.clear_session()
    return {
        "model": name,
        "input_size": size,
        "batch_size": FLAGS.batch_size,
        "timed_steps": FLAGS.steps,
        "steps_per_sec": FLAGS.steps / seconds,
        "images_per_sec": FLAGS.steps * FLAGS.batch_size / seconds,
        "setup_s": setup,
    }


def main(argv):
    del argv
    scratch = tempfile.mkdtemp(prefix="bench_grid_cost_")
    by_name: dict[str, dict] = {}
    for _ in range(FLAGS.rounds):
        for name in FLAGS.models:
            row = time_model(name, scratch)
            print(json.dumps(row), flush=True)
            best = by_name.get(name)
            rounds = (best["rounds_images_per_sec"] if best else []) + [row["images_per_sec"]]
            if best is None or row["images_per_sec"] > best["images_per_sec"]:
                best = row
            by_name[name] = {**best, "rounds_images_per_sec": rounds}
    rows = list(by_name.values())
    if "resnet_50" not in by_name:
        raise app.UsageError("--models must include resnet_50, the GPU anchor")
    reference = by_name["resnet_50"]["images_per_sec"]
    anchor = reference if FLAGS.gpu_anchor == "measured" else GPU_ANCHORS[FLAGS.gpu_anchor]
    total = {k: 0.0 for k in IMAGES}
    for row in rows:
        row["gpu_images_per_sec_est"] = anchor * row["images_per_sec"] / reference
        for kind, images in IMAGES.items():
            row[f"gpu_hours_{kind}"] = images / row["gpu_images_per_sec_est"] / 3600
            total[kind] += row[f"gpu_hours_{kind}"]
        row["cpu_hours_all_here"] = sum(IMAGES.values()) / row["images_per_sec"] / 3600
    report = {
        "gpu_anchor": FLAGS.gpu_anchor,
        "anchor_resnet50_images_per_sec": anchor,
        "images_per_model": IMAGES,
        "gpu_hours_total": {**total, "all": sum(total.values())},
        "cpu_count": os.cpu_count(),
        "models": rows,
    }
    print(
        f"{'model':20s} {'size':>4s} {'cpu img/s':>9s} {'gpu img/s*':>10s} "
        f"{'pretrain':>9s} {'finetune':>9s} {'scratch':>9s}  (GPU-hours*)"
    )
    for r in rows:
        print(
            f"{r['model']:20s} {r['input_size']:4d} {r['images_per_sec']:9.2f} "
            f"{r['gpu_images_per_sec_est']:10.0f} {r['gpu_hours_pretrain']:9.0f} "
            f"{r['gpu_hours_finetune']:9.0f} {r['gpu_hours_scratch']:9.0f}"
        )
    print(
        f"total GPU-hours* ({FLAGS.gpu_anchor}): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in report["gpu_hours_total"].items())
    )
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    app.run(main)
