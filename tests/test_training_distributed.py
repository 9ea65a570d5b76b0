"""Distribution: MirroredStrategy on two logical CPU devices and a real two-worker
MultiWorkerMirroredStrategy on localhost compute the same training run as one device with the
same global batch (loss reduced over the GLOBAL batch, gradients summed across replicas).

Every run is a fresh Python process: logical devices and TF_CONFIG must be set before TensorFlow
initialises. The network is a small conv net without BatchNormalization (per-replica batch
statistics legitimately differ from one device's); a second run with BN checks that the loop
keeps the replicas' BN moving statistics identical.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.subprocess

STEPS = 6

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    model_dir, cpu_devices, with_bn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "bn"
    from transfer_tf.training import distribute
    distribute.configure_cpu_devices(cpu_devices)
    import keras, numpy as np, tensorflow as tf
    from transfer_tf.training import TrainConfig, Trainer

    def builder(cfg):
        keras.utils.set_random_seed(cfg.seed)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
        if with_bn:
            x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU()(x)
        features = keras.layers.GlobalAveragePooling2D()(x)
        logits = keras.layers.Dense(cfg.num_classes, name="logits")(features)
        return keras.Model(inputs, {"logits": logits, "features": features})

    def input_fn(cfg, split, *, training, batch_size, repeat):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 8, 8, 3)).astype("float32")
        y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=cfg.seed)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=training)

    strategy = distribute.make_strategy()
    cfg = TrainConfig(
        model="tiny", dataset="memory", records_dir="", num_classes=2, input_size=8,
        preprocessing="inception", batch_size=32, train_steps=%(steps)d, learning_rate=0.8,
        optimizer="rmsprop", lr_schedule="exponential", decay_epochs=0.25, weight_decay=1e-3,
        ema_decay=0.9, checkpoint_every=4, log_every=1, eval_split="val", autoshard="data",
    )
    out = {}
    if strategy.num_replicas_in_sync > 1:
        try:
            Trainer(cfg.replace(batch_size=31), model_dir + "_bad", strategy=strategy,
                    model_builder=builder, input_fn=input_fn)
        except ValueError as e:
            out["bad_batch_error"] = str(e)
    trainer = Trainer(cfg, model_dir, strategy=strategy, model_builder=builder, input_fn=input_fn)
    result = trainer.train()
    out.update(
        replicas=trainer.num_replicas,
        chief=trainer.chief,
        step=result.step,
        val_top1=result.final_metric,
        losses=[h["loss"] for h in result.train_losses],
        weights=np.concatenate([w.numpy().ravel() for w in trainer.model.weights]).tolist(),
        ema=np.concatenate([a.numpy().ravel() for a in trainer.ema.averages]).tolist(),
    )
    # Every replica's copy of every weight (BN moving statistics included) must agree.
    spread = 0.0
    for w in trainer.model.weights + trainer.ema.averages:
        v = w.value if isinstance(w, keras.Variable) else w
        copies = [c.numpy() for c in strategy.experimental_local_results(v)]
        spread = max(spread, max(float(np.abs(c - copies[0]).max()) for c in copies))
    out["replica_spread"] = spread
    print("RESULT " + json.dumps(out), flush=True)
    """
) % {"steps": STEPS}


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str, stderr: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line; stderr tail:\n{stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _run(script, model_dir, cpu_devices, variant="plain"):
    proc = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(cpu_devices), variant],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _result(proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "train_tiny.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def one_device(script, tmp_path_factory):
    return _run(script, tmp_path_factory.mktemp("one") / "run", 1)


def _assert_same_run(got, want):
    assert got["step"] == want["step"] == STEPS
    assert len(got["losses"]) == STEPS
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got["weights"], want["weights"], rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(got["ema"], want["ema"], rtol=1e-4, atol=2e-6)
    # Evaluation (EMA weights, every worker on the whole split) sees the same network.
    assert got["val_top1"] == pytest.approx(want["val_top1"], abs=1 / 256)


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(script, one_device, tmp_path):
    assert one_device["replicas"] == 1
    assert one_device["losses"][0] > one_device["losses"][-1]  # it trains
    two = _run(script, tmp_path / "run", 2)
    assert two["replicas"] == 2
    _assert_same_run(two, one_device)
    assert "not divisible by the 2 replicas" in two["bad_batch_error"]


def test_mirrored_replicas_keep_identical_batchnorm_statistics(script, tmp_path):
    two = _run(script, tmp_path / "run", 2, "bn")
    assert two["replicas"] == 2 and two["step"] == STEPS
    assert two["replica_spread"] < 1e-6


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_multiworker_mirrored_matches_one_device(script, one_device, tmp_path):
    model_dir = tmp_path / "run"
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(model_dir), "1", "plain"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(TF_CONFIG=json.dumps(tf_config)),
            )
        )
    results = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, stderr[-3000:]
        results.append(_result(stdout, stderr))
    assert [r["chief"] for r in results] == [True, False]
    for result in results:
        assert result["replicas"] == 2
        _assert_same_run(result, one_device)
    # The chief wrote the run; the other worker's share of each collective save was removed.
    assert sorted(os.listdir(model_dir / "ckpt")) == sorted(
        ["checkpoint"]
        + [f"ckpt-{s}.{ext}" for s in (4, 6) for ext in ("index", "data-00000-of-00001")]
    )
    assert json.loads((model_dir / "config.json").read_text())["batch_size"] == 32
