"""The speed flags of training (`--mixed_precision`, `--jit_compile`) on this CPU: they change how
fast a run goes, not what it learns.

Oracles: the float32 run of the same config (losses within a bound derived from bfloat16's /
float16's precision), an uninterrupted run (a resumed one must end bit for bit where it ends,
loss-scale state included), and float32's dtype contract of an exported SavedModel.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_training import memory_input_fn, tiny_builder, tiny_config

from transfer_tf.training import Trainer, config
from transfer_tf.training.weights import restore_model_dir

# A run that learns: plain Nesterov SGD at a constant rate takes the 4-class loss from ln 4 to
# ~1.1 in 40 steps (float32). No EMA or decay, so the loss is the network's alone.
LEARNING = dict(
    optimizer="sgd_nesterov",
    learning_rate=2.0,
    lr_schedule="constant",
    warmup_epochs=0.0,
    weight_decay=0.0,
    ema_decay=0.0,
    train_steps=40,
    log_every=4,
    checkpoint_every=100,
)


def _losses(tmp_path, name, **changes):
    trainer = Trainer(
        tiny_config(**{**LEARNING, **changes}),
        str(tmp_path / name),
        model_builder=tiny_builder,
        input_fn=memory_input_fn,
    )
    result = trainer.train()
    assert [h["step"] for h in result.train_losses] == list(range(4, 41, 4))
    return trainer, np.array([h["loss"] for h in result.train_losses])


@pytest.mark.parametrize(
    "policy, compute, unit",
    [("mixed_bfloat16", "bfloat16", 2.0**-8), ("mixed_float16", "float16", 2.0**-11)],
)
def test_mixed_precision_loss_curve_follows_float32(tmp_path, policy, compute, unit):
    _, want = _losses(tmp_path, "float32")
    trainer, got = _losses(tmp_path, policy, mixed_precision=policy)
    # The policy was applied: layers compute in the low precision, variables and loss stay float32.
    assert trainer.model.get_layer("conv").compute_dtype == compute
    assert all(v.dtype == "float32" for v in trainer.model.weights)
    assert not np.array_equal(got, want)
    # The first 4 steps start from the same float32 weights: the losses differ only by rounding
    # the activations to the compute type (relative error <= one unit `unit` of its significand:
    # 2^-8 for bfloat16, 2^-11 for float16), which the float32 softmax turns into at most ~that
    # relative error of the loss.
    np.testing.assert_allclose(got[0], want[0], rtol=unit)
    # Later, rounded gradients move the weights apart and the difference grows with the steps
    # (measured: 0.009 for bfloat16, 0.005 for float16 at step 40). The bound, 5 units of
    # bfloat16 (0.02 nats), is a tenth of what the run learns (float32: 1.43 -> 1.10), so a mixed
    # run that learned at another rate, or not at all, fails.
    assert want[0] - want[-1] > 0.2
    np.testing.assert_allclose(got, want, atol=5 * 2.0**-8)


def test_jit_compile_gives_the_same_losses_as_without(tmp_path):
    _, want = _losses(tmp_path, "graph")
    trainer, got = _losses(tmp_path, "xla", jit_compile=True)
    # XLA fuses and reorders float32 arithmetic: equal up to float32 rounding over 40 steps.
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert json.loads((tmp_path / "xla" / "config.json").read_text())["jit_compile"] is True


def _state(trainer):
    weights = [w.numpy() for w in trainer.model.weights]
    averages = [a.numpy() for a in trainer.ema.averages]
    slots = [np.asarray(v.numpy()) for v in trainer.optimizer.variables]
    return weights + averages + slots


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_resumed_mixed_precision_run_ends_where_an_uninterrupted_one_ends(tmp_path, policy):
    cfg = tiny_config(mixed_precision=policy)
    float16 = policy == "mixed_float16"

    def trainer(name):
        t = Trainer(cfg, str(tmp_path / name), model_builder=tiny_builder, input_fn=memory_input_fn)
        if float16 and t.step == 0:
            # A loss scale far too large: the first steps' float16 gradients overflow, are
            # skipped and halve the scale, so the scale and its counter at the interruption
            # differ from a fresh optimizer's (2^15, 0) and must come from the checkpoint.
            t.optimizer.dynamic_scale.assign(2.0**22)
        return t

    straight = trainer("a")
    assert straight.train().step == 12
    want = _state(straight)
    if float16:
        scale = float(straight.optimizer.dynamic_scale.numpy())
        finite = int(straight.optimizer.step_counter.numpy())
        skipped = 12 - finite  # each skipped step halved the scale and reset the counter
        assert skipped >= 1 and scale == 2.0 ** (22 - skipped)

    first = trainer("b")
    first._train_steps(first.iterator, tf.constant(7))
    first.save()
    first._train_steps(first.iterator, tf.constant(2))  # lost work: never checkpointed
    del first
    second = trainer("b")
    assert second.resumed_from == 7
    if float16:
        assert float(second.optimizer.dynamic_scale.numpy()) != 2.0**15
    assert second.train().step == 12
    for w, r in zip(want, _state(second), strict=True):
        np.testing.assert_array_equal(r, w)


def test_config_records_the_flags_and_older_runs_resume(tmp_path):
    cfg = tiny_config(mixed_precision="mixed_bfloat16", jit_compile=True)
    config.save_config(cfg, str(tmp_path))
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["mixed_precision"] == "mixed_bfloat16" and recorded["jit_compile"] is True
    with pytest.raises(ValueError, match=r"mixed_precision: 'mixed_bfloat16' -> 'none'"):
        config.check_resumable(cfg.replace(mixed_precision="none"), str(tmp_path))
    # A run written before the flags existed has neither key: it is a float32 run without XLA.
    old = tiny_config().to_dict()
    del old["mixed_precision"], old["jit_compile"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    config.check_resumable(tiny_config(), str(tmp_path))
    with pytest.raises(ValueError, match="mixed_precision='float16'"):
        tiny_config(mixed_precision="float16")
    with pytest.raises(ValueError, match="keeps the float32 dtype"):
        tiny_config(
            init="keras_model",
            init_keras_model="net.keras",
            feature_layer="pool",
            mixed_precision="mixed_bfloat16",
        )


def test_export_of_a_mixed_precision_run_takes_and_returns_float32(tmp_path):
    from transfer_tf.training.export import export_model_dir

    cfg = tiny_config(mixed_precision="mixed_bfloat16")
    run = tmp_path / "run"
    trainer = Trainer(cfg, str(run), model_builder=tiny_builder, input_fn=memory_input_fn)
    trainer.train()
    images = np.random.default_rng(3).integers(0, 256, size=(5, 6, 6, 3)).astype(np.uint8)
    scaled = images.astype(np.float32) / 127.5 - 1.0  # "inception" scaling
    with trainer.ema.swapped():
        trained = trainer._predict(tf.constant(scaled)).numpy()  # the bfloat16 network

    rebuilt, _ = restore_model_dir(str(run), tiny_builder)
    assert rebuilt.get_layer("conv").compute_dtype == "float32"
    export_model_dir(str(run), str(tmp_path / "sm"), model_builder=tiny_builder)
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert served.structured_input_signature[1]["images"].dtype == tf.uint8
    out = served(images=tf.constant(images))
    assert out["logits"].dtype == tf.float32 and out["probabilities"].dtype == tf.float32
    # The same (EMA) weights computed in float32 rather than bfloat16: equal within bfloat16's
    # rounding of the activations (a few units of 2^-8 of the logits' scale).
    scale = np.abs(trained).max()
    np.testing.assert_allclose(out["logits"].numpy(), trained, atol=4 * 2.0**-8 * scale)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "module, binary",
    [
        ("transfer_tf.bin.pretrain", "transfer-pretrain"),
        ("transfer_tf.bin.scratch", "transfer-scratch"),
    ],
)
def test_a_bad_mixed_precision_is_one_line_at_parse_time(module, binary):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--mixed_precision=float8"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "CUDA_VISIBLE_DEVICES": ""},
        cwd=root,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{binary}: error: flag --mixed_precision=float8"), lines[0]
    assert "mixed_bfloat16" in lines[0]


TWO_REPLICAS = """
import json, sys, tempfile
from transfer_tf.training import distribute
distribute.configure_cpu_devices(2)
import keras, numpy as np, tensorflow as tf
from transfer_tf.training import TrainConfig, Trainer

def builder(cfg):  # no BatchNormalization: per-replica batch statistics would differ
    keras.utils.set_random_seed(cfg.seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv", activation="relu")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(cfg.num_classes, name="logits")(features)
    return keras.Model(inputs, {"logits": logits, "features": features})

def input_fn(cfg, split, *, training, batch_size, repeat):
    x = np.random.default_rng(0).normal(size=(256, 8, 8, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=cfg.seed).repeat()
    return ds.batch(batch_size, drop_remainder=True)

cfg = TrainConfig(model="tiny", dataset="memory", records_dir="", num_classes=2, input_size=8,
                  preprocessing="inception", batch_size=32, train_steps=8, learning_rate=0.8,
                  optimizer="sgd_nesterov", lr_schedule="constant", log_every=1,
                  eval_split=None, num_train_examples=256)
one = tf.distribute.MirroredStrategy(["/cpu:0"])
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for name, strategy, changes in [("one", one, {}), ("two_xla", two, {"jit_compile": True}),
        ("two_xla_f16", two, {"jit_compile": True, "mixed_precision": "mixed_float16"})]:
    trainer = Trainer(cfg.replace(**changes), tempfile.mkdtemp(), strategy=strategy,
                      model_builder=builder, input_fn=input_fn)
    result = trainer.train()
    out[name] = [result.step, [h["loss"] for h in result.train_losses]]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.subprocess
@pytest.mark.slow  # XLA compiles on CPU: ~30 s idle, ~100 s at load 10
def test_jit_compile_and_float16_on_two_replicas_compute_one_devices_run():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["one"][0] == out["two_xla"][0] == out["two_xla_f16"][0] == 8
    # Two replicas with XLA (the update outside it, all-reduced) compute one device's float32
    # losses up to float32 rounding; in float16 up to a few units of its significand.
    np.testing.assert_allclose(out["two_xla"][1], out["one"][1], rtol=2e-5)
    np.testing.assert_allclose(out["two_xla_f16"][1], out["one"][1], rtol=8 * 2.0**-11)
