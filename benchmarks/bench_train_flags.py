"""Training steps/s with the speed flags: float32, mixed_bfloat16 and mixed_float16, each with and
without XLA (`--jit_compile`), in one process, against float32 without XLA.

Every variant is the same `Trainer` (the loop of transfer-pretrain / -finetune / -scratch) on the
same registry network, batch and recipe, fed one synthetic batch repeated from memory, so only
the arithmetic differs and the input pipeline is out of the measurement. Rounds alternate
between the variants, so a machine shared with other jobs slows all alike. The first steps
(tracing, XLA compilation, cuDNN autotuning) are timed apart and left out of the rate. The mean
loss of each variant's last round is printed as a sanity check, not a comparison: float16 skips
its first steps while the loss scale falls to a size whose gradients fit (`loss_scale`).

On a GPU (the paper's scale: ResNet-50 at 224, batch 256; TensorFlow's CUDA libraries come with
`TRANSFER_TF_GPU=1 scripts/setup.sh`):

    python benchmarks/bench_train_flags.py

Small on a CPU:

    python benchmarks/bench_train_flags.py --model=mobilenet_v1 --input_size=32 \\
        --batch_size=16 --steps=10 --rounds=2
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags

VARIANTS = [
    (policy, jit) for policy in ("none", "mixed_bfloat16", "mixed_float16") for jit in (False, True)
]

flags.DEFINE_string("model", "resnet_50", "Registry model.")
flags.DEFINE_integer("input_size", 224, "Input size.")
flags.DEFINE_integer("batch_size", 256, "Global batch.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the synthetic labels (ImageNet: 1000).")
flags.DEFINE_enum("optimizer", "sgd_nesterov", ["sgd_nesterov", "rmsprop"], "Recipe's optimizer.")
flags.DEFINE_float("ema_decay", 0.0, "EMA of the weights (pretraining: 0.9999); 0 = none.")
flags.DEFINE_integer("warmup_steps", 5, "Steps before timing (tracing, compilation).")
flags.DEFINE_integer("steps", 50, "Timed steps per round and variant.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_list(
    "variants",
    [f"{p}{'+jit' if j else ''}" for p, j in VARIANTS],
    "Variants to time, e.g. none,none+jit,mixed_bfloat16 (the first is the reference).",
)
FLAGS = flags.FLAGS


def parse_variant(text: str) -> tuple[str, bool]:
    policy, _, jit = text.partition("+")
    if policy not in ("none", "mixed_bfloat16", "mixed_float16") or jit not in ("", "jit"):
        raise app.UsageError(
            f"--variants: {text!r} is not <none|mixed_bfloat16|mixed_float16>[+jit]"
        )
    return policy, bool(jit)


def main(argv):
    del argv
    variants = [parse_variant(v) for v in FLAGS.variants]
    import numpy as np
    import tensorflow as tf

    from transfer_tf.training import TrainConfig, Trainer

    if not tf.config.list_physical_devices("GPU"):
        print("note: TensorFlow sees no GPU, so this times the CPU (on an NVIDIA machine, "
              "TRANSFER_TF_GPU=1 scripts/setup.sh installs TensorFlow's CUDA libraries)",
              flush=True)  # fmt: skip

    config = TrainConfig(
        model=FLAGS.model,
        dataset="synthetic",
        records_dir="",
        num_classes=FLAGS.num_classes,
        input_size=FLAGS.input_size,
        preprocessing="inception",
        batch_size=FLAGS.batch_size,
        train_steps=10**9,
        learning_rate=0.01,
        optimizer=FLAGS.optimizer,
        lr_schedule="constant",
        weight_decay=4e-5,
        ema_decay=FLAGS.ema_decay,
        eval_split=None,
        checkpoint_input=False,
        num_train_examples=1_281_167,
    )

    def synthetic_input_fn(cfg, split, *, training, batch_size, repeat):
        rng = np.random.default_rng(0)
        size = cfg.input_size
        images = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32))
        labels = tf.constant(rng.integers(0, cfg.num_classes, batch_size).astype(np.int32))
        return tf.data.Dataset.from_tensors((images, labels)).repeat()

    scratch = tempfile.mkdtemp(prefix="bench_train_flags_")
    names = [f"{p}{'+jit' if j else ''}" for p, j in variants]
    trainers, first_seconds = {}, {}
    for name, (policy, jit) in zip(names, variants, strict=True):
        trainers[name] = Trainer(
            config.replace(mixed_precision=policy, jit_compile=jit),
            os.path.join(scratch, name.replace("+", "_")),
            input_fn=synthetic_input_fn,
        )
        start = time.perf_counter()
        loss, _ = trainers[name]._train_steps(
            trainers[name].iterator, tf.constant(FLAGS.warmup_steps)
        )
        float(loss)
        first_seconds[name] = time.perf_counter() - start
    seconds = dict.fromkeys(names, 0.0)
    losses = {}
    for _ in range(FLAGS.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            loss, _ = trainer._train_steps(trainer.iterator, tf.constant(FLAGS.steps))
            losses[name] = float(loss) / FLAGS.steps  # waits for the steps to finish
            seconds[name] += time.perf_counter() - start
    steps = FLAGS.steps * FLAGS.rounds
    rate = {name: steps / s for name, s in seconds.items()}
    reference = names[0]
    rows = [
        {
            "variant": name,
            "steps_per_sec": round(rate[name], 3),
            "images_per_sec": round(rate[name] * FLAGS.batch_size, 1),
            f"ratio_vs_{reference}": round(rate[name] / rate[reference], 3),
            "warmup_seconds": round(first_seconds[name], 1),
            "last_round_mean_loss": round(losses[name], 4),
            # float16: the dynamic loss scale at the end (2^15 at the start, halved per skipped
            # step with inf / NaN gradients).
            "loss_scale": (
                float(trainers[name].optimizer.dynamic_scale.numpy())
                if trainers[name].loss_scaling
                else None
            ),
        }
        for name in names
    ]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": FLAGS.model,
        "input_size": FLAGS.input_size,
        "batch_size": FLAGS.batch_size,
        "optimizer": FLAGS.optimizer,
        "ema_decay": FLAGS.ema_decay,
        "timed_steps_each": steps,
        "warmup_steps": FLAGS.warmup_steps,
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": [
            tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")
        ],
        "variants": rows,
    }
    print(json.dumps(report, indent=1))
    print(f"\n{'variant':<22}{'steps/s':>10}{'images/s':>11}{'ratio':>8}{'warmup s':>10}")
    for row in rows:
        print(
            f"{row['variant']:<22}{row['steps_per_sec']:>10.3f}{row['images_per_sec']:>11.1f}"
            f"{row[f'ratio_vs_{reference}']:>8.3f}{row['warmup_seconds']:>10.1f}"
        )


if __name__ == "__main__":
    app.run(main)
