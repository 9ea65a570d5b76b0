"""A real, short pretraining through `transfer-pretrain`: a registry network (MobileNet v1 at
32x32) on Fashion-MNIST TFRecords from the data layer, SIGKILLed after its first checkpoint and
rerun with the same command. The rerun must resume from that checkpoint, end at the requested
step, and the model must classify the held-out split far above chance (10 classes: 0.10).
TensorBoard (on 127.0.0.1 only) must serve the run's scalars.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import tensorflow as tf

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

STEPS = 200
KILL_AFTER = 100
ARGS = [
    "--model=mobilenet_v1",
    "--input_size=32",
    "--dataset=fashion_mnist",
    "--batch_size=64",
    f"--train_steps={STEPS}",
    "--learning_rate=0.128",
    "--ema_decay=0.99",
    "--bn_momentum=0.9",
    f"--checkpoint_every={KILL_AFTER}",
    "--log_every=20",
    "--eval_split=val",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from transfer_tf.data import write_tfrecords

    root = tmp_path_factory.mktemp("records")
    write_tfrecords("fashion_mnist", root, max_per_class=100, splits=("train", "val"))
    return root


@pytest.fixture(scope="module")
def killed_and_resumed(records, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("pretrain") / "mobilenet_v1_fmnist"
    command = [
        sys.executable,
        "-m",
        "transfer_tf.bin.pretrain",
        *ARGS,
        f"--records_dir={records}",
        f"--model_dir={model_dir}",
    ]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    state = model_dir / "ckpt" / "checkpoint"
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        if state.exists() and f"ckpt-{KILL_AFTER}" in state.read_text():
            break
        time.sleep(0.2)
    alive_at_kill = first.poll() is None
    first.send_signal(signal.SIGKILL)
    first_log = first.communicate(timeout=60)[0]
    assert alive_at_kill, f"the run ended before it could be killed:\n{first_log[-3000:]}"
    assert first.returncode == -signal.SIGKILL

    port = _free_port()
    start = time.time()
    second = subprocess.run(
        command + [f"--tensorboard_port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert second.returncode == 0, second.stdout[-4000:]
    return model_dir, first_log, second.stdout, port, time.time() - start


def test_sigkill_then_rerun_resumes_from_last_checkpoint_and_ends_at_requested_step(
    killed_and_resumed,
):
    model_dir, first_log, second_log, _, _ = killed_and_resumed
    assert f"step {KILL_AFTER}/{STEPS}" in first_log
    assert re.search(rf"restored \S+ckpt-{KILL_AFTER} at step {KILL_AFTER}", second_log), (
        second_log[-3000:]
    )
    assert "from the start" not in second_log
    # The rerun trained exactly the remaining steps.
    steps_logged = [int(s) for s in re.findall(rf"step (\d+)/{STEPS}  loss", second_log)]
    assert steps_logged[0] == KILL_AFTER + 20 and steps_logged[-1] == STEPS
    assert tf.train.latest_checkpoint(str(model_dir / "ckpt")).endswith(f"ckpt-{STEPS}")
    # Nothing half-written is visible: every checkpoint listed restores, config.json parses.
    ckpt_state = tf.train.get_checkpoint_state(str(model_dir / "ckpt"))
    for path in ckpt_state.all_model_checkpoint_paths:
        assert tf.train.load_checkpoint(path).get_tensor(
            "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
        ) in (KILL_AFTER, STEPS)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"] == "mobilenet_v1" and config["train_steps"] == STEPS
    assert config["num_classes"] == 10 and config["num_train_examples"] == 1000
    assert not [n for n in os.listdir(model_dir) if n.startswith(".")]


def test_short_pretraining_is_far_above_chance(killed_and_resumed):
    model_dir, _, second_log, _, _ = killed_and_resumed
    match = re.search(rf"done: \S+ step {STEPS} val top1 ([0-9.]+)", second_log)
    assert match, second_log[-2000:]
    accuracy = float(match.group(1))
    print(f"Fashion-MNIST val top-1 after {STEPS} steps of 64: {accuracy:.4f}")
    assert accuracy > 0.4  # chance is 0.10
    history = (model_dir / "history.csv").read_text().splitlines()
    assert history[0] == "step,epoch,eval_split,eval_metric"
    step, epoch, split, metric = history[-1].split(",")
    assert (int(step), split) == (STEPS, "val") and float(epoch) > 0
    assert float(metric) == pytest.approx(accuracy, abs=1e-4)
    # Progress lines carry examples/s and an ETA.
    assert re.search(
        r"step 200/200  loss [0-9.]+  top1 [0-9.]+  lr \S+  [0-9.]+ examples/s  ETA 0:00:00",
        second_log,
    )


def test_tensorboard_serves_scalars_and_hparams_on_localhost(killed_and_resumed):
    from transfer_tf.training.tensorboard import start_tensorboard, stop_tensorboard

    model_dir, _, second_log, port, _ = killed_and_resumed
    # --tensorboard_port announced the server only after it answered on 127.0.0.1.
    assert f"TensorBoard: http://127.0.0.1:{port}/" in second_log
    port = _free_port()
    board = start_tensorboard(str(model_dir / "tb"), port)
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=10
        ) as r:
            tags = json.loads(r.read())
    finally:
        stop_tensorboard(board)
    assert board.poll() is not None
    run_tags = set().union(*[set(v) for v in tags.values()])
    assert {
        "train/loss",
        "train/top1",
        "train/learning_rate",
        "train/examples_per_sec",
        "eval/top1",
    } <= run_tags
    plugins = set()
    for event_file in tf.io.gfile.glob(str(model_dir / "tb" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            plugins.update(v.metadata.plugin_data.plugin_name for v in event.summary.value)
    assert "hparams" in plugins
