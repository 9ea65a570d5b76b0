"""Choosing a tf.distribute strategy, and who writes what under it.

- `--tpu=<name>`: TPUStrategy.
- `TF_CONFIG` set (a cluster with workers): MultiWorkerMirroredStrategy; every worker runs the
  same command; the chief (task "chief", or worker 0 when there is no chief) writes the model_dir,
  the others write their share of each collective checkpoint into a scratch folder they delete.
- otherwise: MirroredStrategy over the local GPUs, or over the logical CPU devices when there is
  no GPU (`configure_cpu_devices` splits the CPU for tests; it must run before TensorFlow starts).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf


def configure_cpu_devices(count: int) -> None:
    """Splits the physical CPU into `count` logical devices (before any TensorFlow op runs)."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"cannot split the CPU into {count} devices after TensorFlow has initialised ({e}); "
            "pass --cpu_devices on the command line of a fresh process"
        ) from e


def tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from e


def make_strategy(tpu: str | None = None) -> tf.distribute.Strategy:
    """TPUStrategy if `tpu`; MultiWorkerMirroredStrategy if TF_CONFIG names a cluster; else
    MirroredStrategy over local devices."""
    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    cluster = tf_config().get("cluster", {})
    if cluster:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """(task_type, task_id) of this process; (None, 0) outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return None, 0
    return task_type, int(getattr(resolver, "task_id", 0) or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    task_type, task_id = task(strategy)
    if task_type is None:
        return True
    cluster = tf_config().get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
    cluster = tf_config().get("cluster", {})
    if not cluster or isinstance(strategy, tf.distribute.TPUStrategy):
        return 1
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def write_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes collective files: `directory` on the chief, else a scratch dir."""
    if is_chief(strategy):
        return directory
    task_type, task_id = task(strategy)
    return os.path.join(directory, f".worker-{task_type}-{task_id}")


def autoshard_policy(name: str) -> tf.data.experimental.AutoShardPolicy:
    policies = {
        "auto": tf.data.experimental.AutoShardPolicy.AUTO,
        "file": tf.data.experimental.AutoShardPolicy.FILE,
        "data": tf.data.experimental.AutoShardPolicy.DATA,
        "off": tf.data.experimental.AutoShardPolicy.OFF,
    }
    return policies[name]
