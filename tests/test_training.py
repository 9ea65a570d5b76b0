"""The training loop's arithmetic against hand-computed oracles (fast, in-process, one device).

Schedules, grids, losses, EMA and one optimizer step are compared with numpy formulas; a run
interrupted after a checkpoint and resumed in a new Trainer must end bit-for-bit where an
uninterrupted run ends (model, optimizer, EMA and tf.data iterator all restored).
"""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.protocols import finetune_grid as grids
from transfer_tf.training import TrainConfig, Trainer, config, loop, schedules
from transfer_tf.training.ema import ExponentialMovingAverage, averaged_weights

# ---------------------------------------------------------------------------------------------
# A small network with the registry's output contract, and in-memory data, for exact checks.


def tiny_builder(cfg):
    keras.utils.set_random_seed(cfg.seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(cfg.num_classes, name="logits")(features)
    return keras.Model(inputs, {"logits": logits, "features": features})


def _data(split):
    rng = np.random.default_rng({"train": 0, "val": 1}[split])
    x = rng.normal(size=(96, 6, 6, 3)).astype(np.float32)
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype(np.int32) + 2 * (x[..., 1].mean(axis=(1, 2)) > 0)
    return x, y.astype(np.int32)


def memory_input_fn(cfg, split, *, training, batch_size, repeat):
    ds = tf.data.Dataset.from_tensor_slices(_data(split))
    if training:
        ds = ds.shuffle(96, seed=cfg.seed)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=training)


def tiny_config(**changes):
    base = dict(
        model="tiny",
        dataset="memory",
        records_dir="",
        num_classes=4,
        input_size=6,
        preprocessing="inception",
        batch_size=8,
        train_steps=12,
        learning_rate=0.4,
        optimizer="rmsprop",
        lr_schedule="exponential",
        warmup_epochs=0.5,
        decay_epochs=0.5,
        weight_decay=1e-3,
        ema_decay=0.99,
        checkpoint_every=6,
        log_every=3,
        eval_split=None,
        bn_momentum=0.9,
    )
    base.update(changes)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------------
# Schedules and grids.


def test_exponential_schedule_warmup_then_094_every_two_epochs():
    peak, warmup, every = 0.2, 10, 20
    schedule = schedules.learning_rate_schedule(
        "exponential",
        peak,
        total_steps=500,
        warmup_steps=warmup,
        decay_steps=every,
        decay_rate=0.94,
    )
    for step in [0, 1, 5, 9, 10, 29, 30, 31, 70, 499]:
        want = peak * step / warmup if step < warmup else peak * 0.94 ** ((step - warmup) // every)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-6), step


def test_cosine_schedules_with_and_without_warmup():
    peak, total = 0.1, 200
    plain = schedules.learning_rate_schedule("cosine", peak, total_steps=total)
    for step in [0, 1, 50, 100, 150, 199, 200]:
        want = 0.5 * peak * (1 + math.cos(math.pi * step / total))
        assert float(plain(step)) == pytest.approx(want, abs=1e-7), step
    warm = schedules.learning_rate_schedule("cosine", peak, total_steps=total, warmup_steps=40)
    for step in [0, 20, 40, 120, 200]:
        if step < 40:
            want = peak * step / 40
        else:
            want = 0.5 * peak * (1 + math.cos(math.pi * (step - 40) / (total - 40)))
        assert float(warm(step)) == pytest.approx(want, abs=1e-7), step
    constant = schedules.learning_rate_schedule("constant", peak, total_steps=total, warmup_steps=4)
    assert [float(constant(s)) for s in (0, 2, 4, 100)] == pytest.approx([0, 0.05, 0.1, 0.1])
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        schedules.learning_rate_schedule("step", peak, total_steps=total)


def test_batch_scaling_epochs_and_bn_momentum():
    assert config.scaled_learning_rate(0.016, 4096) == pytest.approx(0.256)
    assert tiny_config(batch_size=64, learning_rate=0.1).peak_learning_rate == pytest.approx(0.025)
    assert schedules.steps_per_epoch(1000, 256) == 4
    assert schedules.epochs_to_steps(2.0, 1281167, 4096) == 626
    # max(1 - 10/s, 0.9): small datasets hit the floor, large ones approach 1.
    assert schedules.finetune_bn_momentum(50) == pytest.approx(0.9)
    assert schedules.finetune_bn_momentum(200) == pytest.approx(0.95)
    assert schedules.finetune_bn_momentum(1000) == pytest.approx(0.99)


def test_grids_of_spec():
    ft = grids.finetune_grid()
    assert len(ft) == 56
    lrs = sorted({c["learning_rate"] for c in ft})
    wds = sorted({c["weight_decay"] for c in ft})
    np.testing.assert_allclose(lrs, np.logspace(-4, -1, 7))
    np.testing.assert_allclose(wds, [0.0] + list(np.logspace(-6, -3, 7)))
    sc = grids.scratch_grid()
    assert len(sc) == 56
    np.testing.assert_allclose(sorted({c["learning_rate"] for c in sc}), np.logspace(-3, 0, 7))
    np.testing.assert_allclose(sorted({c["weight_decay"] for c in sc}), np.logspace(-5, -1.5, 8))
    small = grids.finetune_grid(2, 1)
    np.testing.assert_allclose(
        [(c["learning_rate"], c["weight_decay"]) for c in small],
        [(1e-4, 10**-4.5), (1e-4, 0.0), (0.1, 10**-4.5), (0.1, 0.0)],
    )
    assert grids.l2_coefficient(0.01, 1e-4) == pytest.approx(1e-2)
    assert grids.l2_coefficient(0.01, 0.0) == 0.0
    with pytest.raises(ValueError, match="learning rates > 0"):
        grids.explicit_grid([0.0], [1e-4])


# ---------------------------------------------------------------------------------------------
# Loss, weight decay, EMA.


def _softmax_ce(logits, targets):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(targets * log_p).sum(axis=1)


def test_per_example_loss_label_smoothing_aux_and_multilabel():
    rng = np.random.default_rng(3)
    logits, aux = rng.normal(size=(2, 5, 4))
    labels = np.array([0, 3, 1, 2, 3])
    got = loop.per_example_loss(
        tf.constant(labels),
        {"logits": tf.constant(logits), "aux_logits": tf.constant(aux)},
        num_classes=4,
        multi_label=False,
        label_smoothing=0.1,
        aux_loss_weight=0.4,
    )
    targets = np.eye(4)[labels] * 0.9 + 0.1 / 4
    want = _softmax_ce(logits, targets) + 0.4 * _softmax_ce(aux, targets)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)

    hot = (rng.random((5, 4)) > 0.5).astype(np.float32)
    got = loop.per_example_loss(
        tf.constant(hot),
        {"logits": tf.constant(logits)},
        num_classes=4,
        multi_label=True,
        label_smoothing=0.0,
        aux_loss_weight=0.4,
    )
    sig = 1 / (1 + np.exp(-logits))
    want = -(hot * np.log(sig) + (1 - hot) * np.log(1 - sig)).sum(axis=1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_weight_decay_applies_to_kernels_only():
    model = tiny_builder(tiny_config())
    decayed = sorted(v.path for v in model.trainable_variables if loop.is_decayed(v))
    assert decayed == ["conv/kernel", "dw/kernel", "logits/kernel"]


def test_ema_follows_tf_slim_decay_and_swaps_back():
    model = tiny_builder(tiny_config())
    ema = ExponentialMovingAverage(model, decay=0.9)
    weights = averaged_weights(model)
    assert len(weights) == len(model.weights) == 10  # conv k/b, bn 4, dw k/b, logits k/b
    shadow = [w.numpy().copy() for w in weights]
    rng = np.random.default_rng(0)
    for step in range(1, 8):
        for w in weights:
            w.assign(rng.normal(size=w.shape).astype(np.float32))
        ema.update(step)
        decay = min(0.9, (1 + step) / (10 + step))
        shadow = [s - (1 - decay) * (s - w.numpy()) for s, w in zip(shadow, weights, strict=True)]
    for s, a in zip(shadow, ema.averages, strict=True):
        np.testing.assert_allclose(a.numpy(), s, rtol=1e-5, atol=1e-6)
    current = [w.numpy().copy() for w in weights]
    with ema.swapped():
        for s, w in zip(shadow, weights, strict=True):
            np.testing.assert_allclose(w.numpy(), s, rtol=1e-5, atol=1e-6)
    for c, w in zip(current, weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), c)


def test_one_sgd_step_is_the_gradient_of_the_global_batch_objective(tmp_path):
    """Loss = mean cross-entropy over the global batch + λ/2 Σ‖kernel‖²; w ← w − lr·∇."""
    cfg = tiny_config(
        optimizer="sgd",
        momentum=0.0,
        lr_schedule="constant",
        warmup_epochs=0.0,
        learning_rate=0.5,
        weight_decay=0.01,
        ema_decay=0.0,
        checkpoint_input=False,
    )
    trainer = Trainer(
        cfg, str(tmp_path / "run"), model_builder=tiny_builder, input_fn=memory_input_fn
    )
    # The batch the step will see: the same pipeline, same seed.
    images, labels = next(
        iter(memory_input_fn(cfg, "train", training=True, batch_size=8, repeat=True))
    )
    before = [w.numpy().copy() for w in trainer.model.trainable_variables]
    oracle = tiny_builder(cfg)
    for w, v in zip(oracle.weights, trainer.model.weights, strict=True):
        w.assign(v.numpy())
    with tf.GradientTape() as tape:
        logits = oracle(images, training=True)["logits"]
        data = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        kernels = [v for v in oracle.trainable_variables if v.path.endswith("kernel")]
        want_loss = data + 0.01 * sum(0.5 * tf.reduce_sum(tf.square(k)) for k in kernels)
    grads = tape.gradient(want_loss, oracle.trainable_variables)

    loss, _ = trainer._train_steps(trainer.iterator, tf.constant(1))
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    lr = 0.5 * 8 / 256  # per 256 images, scaled to the batch of 8
    for w0, g, w in zip(before, grads, trainer.model.trainable_variables, strict=True):
        np.testing.assert_allclose(w.numpy(), w0 - lr * g.numpy(), rtol=1e-5, atol=1e-6)
    # BN statistics moved with momentum 0.9 (bn_momentum flag) from their initial 0 / 1.
    bn = trainer.model.get_layer("bn")
    assert bn.momentum == pytest.approx(0.9)
    assert float(tf.reduce_max(tf.abs(bn.moving_mean))) > 0


# ---------------------------------------------------------------------------------------------
# Config, resume.


def test_evaluation_steps_add_doubling_points_for_fig8():
    """A 20,000-step grid cell (eval_every 2,000) also evaluates at 50, 100, 200, ...: every gap
    up to the first regular evaluation is a factor of 2, down to 0.25% of the run."""
    cfg = TrainConfig(
        model="m",
        dataset="d",
        records_dir="/r",
        num_classes=2,
        train_steps=20_000,
        eval_split="val",
        eval_every=2000,
        eval_log_spaced=True,
    )
    assert loop.evaluation_steps(cfg, 20_000) == [
        50,
        100,
        200,
        400,
        800,
        1600,
        2000,
        3200,
        4000,
        6000,
        6400,
        8000,
        10000,
        12000,
        12800,
        14000,
        16000,
        18000,
        20000,
    ]
    plain = cfg.replace(eval_log_spaced=False)
    assert loop.evaluation_steps(plain, 20_000) == list(range(2000, 20_001, 2000))
    assert loop.evaluation_steps(cfg.replace(train_steps=100, eval_every=0), 100) == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        100,
    ]
    assert loop.evaluation_steps(cfg.replace(eval_split=None), 20_000) == []


def test_config_validation_and_resume_guard(tmp_path):
    with pytest.raises(ValueError, match="optimizer='adam'"):
        tiny_config(optimizer="adam")
    with pytest.raises(ValueError, match="init='model_dir' needs init_model_dir"):
        tiny_config(init="model_dir")
    with pytest.raises(ValueError, match="bn_momentum"):
        tiny_config(bn_momentum="fast")
    cfg = tiny_config()
    config.save_config(cfg, str(tmp_path))
    assert config.load_config(str(tmp_path)) == cfg
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "tiny"
    config.check_resumable(cfg.replace(log_every=1, eval_every=5), str(tmp_path))  # reporting only
    with pytest.raises(ValueError, match=r"learning_rate: 0.4 -> 0.1.*new --model_dir"):
        config.check_resumable(cfg.replace(learning_rate=0.1), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="written by transfer-pretrain"):
        config.load_config(str(tmp_path / "nothing"))


def _run_state(trainer):
    return [w.numpy() for w in trainer.model.weights] + [a.numpy() for a in trainer.ema.averages]


def test_resumed_run_ends_exactly_where_an_uninterrupted_run_ends(tmp_path):
    cfg = tiny_config()
    straight = Trainer(
        cfg, str(tmp_path / "a"), model_builder=tiny_builder, input_fn=memory_input_fn
    )
    result = straight.train()
    assert result.step == 12 and result.resumed_from is None
    want = _run_state(straight)

    first = Trainer(cfg, str(tmp_path / "b"), model_builder=tiny_builder, input_fn=memory_input_fn)
    first._train_steps(first.iterator, tf.constant(7))  # 7 steps, checkpoint at 7, then "die"
    first.save()
    first._train_steps(first.iterator, tf.constant(2))  # lost work: never checkpointed
    del first
    second = Trainer(cfg, str(tmp_path / "b"), model_builder=tiny_builder, input_fn=memory_input_fn)
    assert second.resumed_from == 7
    resumed = second.train()
    assert resumed.step == 12
    assert [h["step"] for h in resumed.train_losses] == [9, 12]
    for w, r in zip(want, _run_state(second), strict=True):
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-7)
    assert tf.train.latest_checkpoint(str(tmp_path / "b" / "ckpt")).endswith("ckpt-12")


# ---------------------------------------------------------------------------------------------
# Flagfiles: every recipe in flags/ parses into a valid run (in fresh processes: absl flags are
# process-global).

FLAGFILE_CHECK = """
import glob, json, sys
from absl import flags
kind = sys.argv[1]
if kind == "pretrain":
    from transfer_tf.bin import pretrain  # noqa: F401  (defines the flags)
    from transfer_tf.training import TrainConfig
    from transfer_tf.bin import training_flags
    from transfer_tf.training.config import dataset_fields
else:
    from transfer_tf.bin import finetune  # noqa: F401
    from transfer_tf.protocols.finetune_grid import explicit_grid, finetune_grid
out = {}
for path in sorted(glob.glob(f"flags/{kind}/*.cfg")):
    flags.FLAGS.unparse_flags()
    extra = ["--model_dir=/m"] if kind == "pretrain" else []
    flags.FLAGS(["x", "--flagfile=" + path, "--records_dir=/r", *extra])
    f = flags.FLAGS
    if kind == "pretrain":
        config = TrainConfig(model=f.model, dataset=f.dataset, records_dir="/r",
                             **dataset_fields(f.dataset),
                             **training_flags.config_kwargs_from_flags(f))
        out[path] = [config.settings, config.peak_learning_rate, config.ema_decay]
    elif f.learning_rates:
        out[path] = len(explicit_grid(f.learning_rates, f.weight_decays))
    elif "scratch" in path:
        from transfer_tf.protocols.finetune_grid import scratch_grid
        out[path] = len(scratch_grid(f.num_learning_rates, f.num_weight_decays))
    else:
        out[path] = len(finetune_grid(f.num_learning_rates, f.num_weight_decays,
                                      include_no_decay=f.no_decay_cell))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.subprocess
def test_flagfiles_parse_into_the_papers_recipes():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    found = {}
    for kind in ("pretrain", "finetune"):
        proc = subprocess.run(
            [sys.executable, "-c", FLAGFILE_CHECK, kind],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        found.update(json.loads(proc.stdout.split("RESULT ", 1)[1]))
    fair = found["flags/pretrain/inception_v3_fair.cfg"]
    default = found["flags/pretrain/inception_v3_inception_default.cfg"]
    assert fair[0] == {
        "bn_scale": True,
        "dropout_rate": 0.0,
        "aux_head": False,
        "label_smoothing": 0.0,
    }
    assert default[0] == {
        "bn_scale": False,
        "dropout_rate": 0.2,
        "aux_head": True,
        "label_smoothing": 0.1,
    }
    assert fair[1] == default[1] == pytest.approx(0.041 * 4096 / 256) and fair[2] == 0.9999
    assert "flags/pretrain/fashion_mnist_cpu.cfg" in found
    assert found["flags/finetune/finetune.cfg"] == 56 and found["flags/finetune/scratch.cfg"] == 56
    assert (
        found["flags/finetune/finetune_cpu.cfg"] == 4
        and found["flags/finetune/scratch_cpu.cfg"] == 2
    )


def test_the_default_input_with_options_bound_is_counted_from_the_manifests(tmp_path):
    # transfer-pretrain / -finetune bind --cache_decoded to the default input; counting its
    # training split must still read the manifest (1,234 here), not the records (there are
    # none: reading them would fail), or a pretraining run would read ImageNet once to count it.
    import functools

    from transfer_tf.training.builders import default_input_fn

    (tmp_path / "toy").mkdir()
    manifest = {"dataset": "toy", "split": "train", "num_examples": 1234, "shards": []}
    (tmp_path / "toy" / "train.manifest.json").write_text(json.dumps(manifest))
    cfg = tiny_config(dataset="toy", records_dir=str(tmp_path))
    bound = functools.partial(default_input_fn, cache_decoded="on")
    assert loop.count_examples(cfg, bound) == 1234
    assert loop.count_examples(cfg.replace(per_class=5), bound) == 5 * 4
