"""The pinned stack imports together and is the one the design expects (Keras 3 on TF 2.20)."""

import configparser
import glob
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_stack_imports_and_keras_is_3():
    import keras
    import official  # noqa: F401  (tf-models-official)
    import sklearn  # noqa: F401
    import tensorflow as tf
    import tensorflow_datasets  # noqa: F401

    import transfer_tf

    assert keras.__version__.startswith("3."), keras.__version__
    assert tf.__version__ == "2.20.0"
    assert transfer_tf.__version__


def test_installed_versions_match_pins():
    """Every runtime pin in setup.cfg is what is installed (the venv is not stale)."""
    from importlib import metadata

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pins = [
        line.strip() for line in cfg["options"]["install_requires"].splitlines() if "==" in line
    ]
    assert len(pins) >= 10
    for pin in pins:
        name, version = pin.split("==")
        assert metadata.version(name) == version, pin


def test_gpu_extra_pins_tensorflows_own_cuda_requirements_at_their_lower_bounds():
    """The `gpu` extra (TRANSFER_TF_GPU=1 scripts/setup.sh) pins every library of TensorFlow's
    and-cuda extra, read from the installed TensorFlow's metadata, at the version TensorFlow
    was built against (its lower bound), inside its range, and nothing else."""
    from importlib import metadata

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options.extras_require"]["gpu"].splitlines()]
    extra = [Requirement(line) for line in lines if line]
    assert str(extra[0]) == f"tensorflow[and-cuda]=={metadata.version('tensorflow')}"
    pins = {r.name: str(next(iter(r.specifier)).version) for r in extra[1:]}
    tf_cuda = [
        Requirement(line)
        for line in metadata.requires("tensorflow")
        if 'extra == "and-cuda"' in line
    ]
    assert len(tf_cuda) >= 10
    assert sorted(pins) == sorted(r.name for r in tf_cuda)
    for r in tf_cuda:
        assert r.specifier.contains(pins[r.name]), (r, pins[r.name])
        lower = next(s.version for s in r.specifier if s.operator == ">=")
        assert pins[r.name] == lower, (r, pins[r.name])


def test_tf_models_official_tf_only_ops_work_under_keras3():
    """The parts of tf-models-official we rely on (see BUILD_NOTES.md) run with our stack."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    image = tf.random.uniform([40, 60, 3], maxval=255.0)
    crop = preprocess_ops.center_crop_image(image)
    assert crop.shape[-1] == 3 and crop.shape[0] <= 40


def test_env_quiets_tensorflow_in_subprocesses():
    """INFO and WARNING lines off; on a machine without an NVIDIA device node also the ERROR
    level (TensorFlow's "failed call to cuInit" line has no switch of its own); a setting wins."""

    command = [
        sys.executable,
        "-c",
        "import transfer_tf, os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])",
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}
    )
    gpu = bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))
    assert out.stdout.strip() == ("2" if gpu else "3")
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "1"},
    )
    assert out.stdout.strip() == "1"
