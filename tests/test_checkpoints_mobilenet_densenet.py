"""Published checkpoints of DenseNet-121/169/201, MobileNet v1 and MobileNet v2 (1.0, 1.4).

Keras Applications `.h5` files: each zoo model's logits equal `keras.applications`' own network
with the same random weights (tests/reference/keras_reference.py) on uint8 images at 224, scaled
as the checkpoint's layout says. DenseNet-121 goes through the exported SavedModel (the one whose
checkpoint scaling, torch's, differs from the zoo's); the others through `build_model(weights=...)`
and `checkpoint_input`, the same scaling path without the export, which would cost 20-50 s each.

TF-slim checkpoints: no TF-slim MobileNet exists on PyPI, so the reference here is the slim
networks written out in plain `tf.nn` ops from `nets/mobilenet_v1.py` and
`nets/mobilenet/mobilenet_v2.py` (their layer tables, 'SAME' padding, BN epsilon 0.001, ReLU6,
1001-way 1x1-conv logits) reading tensors by slim's variable names; the tensors' shapes come
from those tables too, not from our models. Plus a save -> load round trip of a zoo model through
slim's names, and published names / counts from the slim sources.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from reference.equivalence import (
    HERE,
    SCALINGS,
    assert_logits_close,
    exported_logits,
    uint8_images,
    write_tf_checkpoint,
)

from transfer_tf.models import build_model, checkpoint_input, get_spec, preprocess
from transfer_tf.models.checkpoints import CheckpointError, read_checkpoint
from transfer_tf.models.registry import REGISTRY

SIZE = 224

# zoo model -> (keras.applications function, its kwargs, the scaling its weights expect: Keras'
# `densenet.preprocess_input` is mode "torch", `mobilenet(_v2).preprocess_input` mode "tf").
KERAS_NETS = {
    "densenet_121": ("DenseNet121", {}, "torch"),
    "densenet_169": ("DenseNet169", {}, "torch"),
    "densenet_201": ("DenseNet201", {}, "torch"),
    "mobilenet_v1": ("MobileNet", {"alpha": 1.0}, "inception"),
    "mobilenet_v2": ("MobileNetV2", {"alpha": 1.0}, "inception"),
    "mobilenet_v2_140": ("MobileNetV2", {"alpha": 1.4}, "inception"),
}
EXPORTED = ("densenet_121",)

# Runs keras_reference.py's main once per net in one process: one TensorFlow start-up, not six.
_KERAS_BATCH = """
import json, sys
sys.path.insert(0, sys.argv[1])
import keras_reference
for argv in json.loads(sys.argv[2]):
    sys.argv = ["keras_reference.py", *argv]
    keras_reference.main()
"""


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def images():
    return uint8_images(SIZE)


@pytest.fixture(scope="module")
def keras_references(tmp_path_factory, images):
    """{zoo model: folder with weights.h5 and reference.npz}, all from one reference process."""
    root = tmp_path_factory.mktemp("keras_references")
    jobs, folders = [], {}
    for scaling in {scaling for _, _, scaling in KERAS_NETS.values()}:
        np.save(root / f"{scaling}.npy", SCALINGS[scaling](images.astype(np.float32)))
    for name, (net, kwargs, scaling) in KERAS_NETS.items():
        folders[name] = str(root / name)
        jobs.append(
            [
                f"--net={net}",
                f"--out_dir={folders[name]}",
                f"--images={root / f'{scaling}.npy'}",
                f"--kwargs={json.dumps(kwargs)}",
            ]
        )
    command = [sys.executable, "-c", _KERAS_BATCH, HERE, json.dumps(jobs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folders


def _reference_logits(folder: str) -> np.ndarray:
    with np.load(os.path.join(folder, "reference.npz")) as data:
        return data["logits"]


def _logits(name: str, weights: str, images: np.ndarray, input_size: int | None = None):
    """Our logits with `weights`, on uint8 images scaled as the checkpoint's layout says."""
    _, scaling = checkpoint_input(name, weights)
    model = build_model(name, 1000, weights=weights, input_size=input_size)
    return model(preprocess(images, scaling), training=False)["logits"].numpy()


@pytest.mark.parametrize("name", list(KERAS_NETS))
def test_keras_h5_equals_keras_applications(name, keras_references, images, tmp_path):
    folder = keras_references[name]
    weights = os.path.join(folder, "weights.h5")
    if name in EXPORTED:
        ours = exported_logits(name, weights, str(tmp_path / "export"), images)["logits"]
    else:
        ours = _logits(name, weights, images)
    difference = assert_logits_close(ours, _reference_logits(folder), name)
    print(f"{name}: max relative logit difference {difference:.1e}")


def _as_keras2_file(source: str, target: str) -> None:
    """`source` (written by Keras 3) in the layout of the files Keras Applications publishes,
    written by Keras 2: weights named `<layer>/<weight>:0` in a subgroup named after the layer,
    and a DepthwiseConv2D's kernel called `depthwise_kernel`."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for layer in src.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = dst.create_group(layer)
            names = []
            for weight in src[layer].attrs["weight_names"]:
                weight = weight.decode() if isinstance(weight, bytes) else weight
                kind = weight.split(":")[0].rsplit("/", 1)[-1]
                if kind == "kernel" and re.search(r"(conv_dw_\d+|depthwise)$", layer):
                    kind = "depthwise_kernel"
                stored = f"{layer}/{kind}:0"
                names.append(stored.encode())
                group.create_dataset(stored, data=src[layer][weight][()])
            group.attrs["weight_names"] = names


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_keras2_file_layout_names_depthwise_kernels_as_published(
    name, keras_references, images, tmp_path
):
    folder = keras_references[name]
    keras2 = str(tmp_path / "keras2.h5")
    _as_keras2_file(os.path.join(folder, "weights.h5"), keras2)
    shapes = read_checkpoint(keras2).shapes
    block = "conv_dw_1" if name == "mobilenet_v1" else "block_1_depthwise"
    assert f"{block}/depthwise_kernel" in shapes and f"{block}/kernel" not in shapes
    assert_logits_close(_logits(name, keras2, images), _reference_logits(folder), name)


def test_mobilenet_v2_140_file_into_mobilenet_v2_is_an_error_naming_file_and_shape(
    keras_references,
):
    weights = os.path.join(keras_references["mobilenet_v2_140"], "weights.h5")
    with pytest.raises(CheckpointError) as error:
        build_model("mobilenet_v2", 1000, weights=weights)
    message = str(error.value)
    assert weights in message
    # Keras' first convolution is 48 wide at width 1.4 (make_divisible(32 x 1.4, 8)), 32 at 1.0.
    assert "'Conv1/kernel' has shape (3, 3, 3, 48)" in message
    assert "(3, 3, 3, 32)" in message


# ---------------------------------------------------------------------------------------------
# TF-slim layouts.

# nets/mobilenet_v1.py `_CONV_DEFS`: Conv2d_0 (3x3, stride 2, 32), then 13 depthwise-separable
# blocks (stride, depth).
SLIM_V1_BLOCKS = [
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
]
# nets/mobilenet/mobilenet_v2.py `V2_DEF`: Conv (3x3, stride 2, 32); expanded_conv (no expansion,
# 16); 16 expanded_conv blocks (stride, outputs), expansion 6; Conv_1 (1x1, 1280).
SLIM_V2_BLOCKS = [
    (2, 24),
    (1, 24),
    (2, 32),
    (1, 32),
    (1, 32),
    (2, 64),
    (1, 64),
    (1, 64),
    (1, 64),
    (1, 96),
    (1, 96),
    (1, 96),
    (2, 160),
    (1, 160),
    (1, 160),
    (1, 320),
]
BN_EPSILON = 0.001  # slim's batch_norm default; both arg scopes keep it
CLASSES = 1001  # slim's ImageNet checkpoints: class 0 is "background"


def _make_divisible(value, divisor=8):
    """nets/mobilenet/mobilenet.py `_make_divisible` (min_value = divisor)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SlimTensors:
    """Random tensors under slim variable names, shaped as the slim layer tables say."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, np.ndarray] = {}

    def conv(self, scope, shape, depthwise=False, batch_norm=True):
        fan_in = shape[0] * shape[1] * (1 if depthwise else shape[2])
        kernel = self.rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        self.tensors[f"{scope}/{'depthwise_weights' if depthwise else 'weights'}"] = kernel
        channels = shape[2] if depthwise else shape[3]
        if batch_norm:
            for kind, low, high in (
                ("gamma", 0.5, 1.5),
                ("beta", -0.2, 0.2),
                ("moving_mean", -0.2, 0.2),
                ("moving_variance", 0.5, 1.5),
            ):
                value = self.rng.uniform(low, high, channels).astype(np.float32)
                self.tensors[f"{scope}/BatchNorm/{kind}"] = value
        else:
            self.tensors[f"{scope}/biases"] = self.rng.uniform(-0.1, 0.1, channels).astype(
                np.float32
            )


def slim_mobilenet_v1_tensors(seed=0) -> dict[str, np.ndarray]:
    t = SlimTensors(seed)
    t.conv("MobilenetV1/Conv2d_0", [3, 3, 3, 32])
    depth = 32
    for i, (_, out) in enumerate(SLIM_V1_BLOCKS, 1):
        t.conv(f"MobilenetV1/Conv2d_{i}_depthwise", [3, 3, depth, 1], depthwise=True)
        t.conv(f"MobilenetV1/Conv2d_{i}_pointwise", [1, 1, depth, out])
        depth = out
    t.conv("MobilenetV1/Logits/Conv2d_1c_1x1", [1, 1, depth, CLASSES], batch_norm=False)
    return t.tensors


def slim_mobilenet_v2_tensors(multiplier: float, seed=0) -> dict[str, np.ndarray]:
    t = SlimTensors(seed)
    depth = _make_divisible(32 * multiplier)
    t.conv("MobilenetV2/Conv", [3, 3, 3, depth])
    t.conv("MobilenetV2/expanded_conv/depthwise", [3, 3, depth, 1], depthwise=True)
    out = _make_divisible(16 * multiplier)
    t.conv("MobilenetV2/expanded_conv/project", [1, 1, depth, out])
    depth = out
    for i, (_, outputs) in enumerate(SLIM_V2_BLOCKS, 1):
        inner, out = _make_divisible(depth * 6), _make_divisible(outputs * multiplier)
        t.conv(f"MobilenetV2/expanded_conv_{i}/expand", [1, 1, depth, inner])
        t.conv(f"MobilenetV2/expanded_conv_{i}/depthwise", [3, 3, inner, 1], depthwise=True)
        t.conv(f"MobilenetV2/expanded_conv_{i}/project", [1, 1, inner, out])
        depth = out
    last = _make_divisible(1280 * multiplier)
    t.conv("MobilenetV2/Conv_1", [1, 1, depth, last])
    t.conv("MobilenetV2/Logits/Conv2d_1c_1x1", [1, 1, last, CLASSES], batch_norm=False)
    return t.tensors


def _bn(x, t, scope):
    bn = f"{scope}/BatchNorm"
    return tf.nn.batch_normalization(
        x,
        t[f"{bn}/moving_mean"],
        t[f"{bn}/moving_variance"],
        t[f"{bn}/beta"],
        t[f"{bn}/gamma"],
        BN_EPSILON,
    )


def _conv(x, t, scope, stride=1, activation=tf.nn.relu6):
    x = _bn(tf.nn.conv2d(x, t[f"{scope}/weights"], stride, "SAME"), t, scope)
    return activation(x)


def _depthwise(x, t, scope, stride):
    kernel = t[f"{scope}/depthwise_weights"]
    return tf.nn.relu6(
        _bn(tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME"), t, scope)
    )


def _slim_logits(x, t, scope):
    # slim's global average pool (v1: a 7x7 VALID pool over the 7x7 map), then a 1x1 conv.
    pooled = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    logits = tf.nn.conv2d(pooled, t[f"{scope}/weights"], 1, "VALID") + t[f"{scope}/biases"]
    return tf.squeeze(logits, [1, 2]).numpy()


def slim_mobilenet_v1(t, x):
    x = _conv(x, t, "MobilenetV1/Conv2d_0", stride=2)
    for i, (stride, _) in enumerate(SLIM_V1_BLOCKS, 1):
        x = _depthwise(x, t, f"MobilenetV1/Conv2d_{i}_depthwise", stride)
        x = _conv(x, t, f"MobilenetV1/Conv2d_{i}_pointwise")
    return _slim_logits(x, t, "MobilenetV1/Logits/Conv2d_1c_1x1")


def slim_mobilenet_v2(t, x):
    x = _conv(x, t, "MobilenetV2/Conv", stride=2)
    blocks = [("expanded_conv", 1)] + [
        (f"expanded_conv_{i}", stride) for i, (stride, _) in enumerate(SLIM_V2_BLOCKS, 1)
    ]
    for block, stride in blocks:
        scope = f"MobilenetV2/{block}"
        inputs = x
        if f"{scope}/expand/weights" in t:
            x = _conv(x, t, f"{scope}/expand")
        x = _depthwise(x, t, f"{scope}/depthwise", stride)
        x = _conv(x, t, f"{scope}/project", activation=tf.identity)  # linear bottleneck
        if stride == 1 and inputs.shape[-1] == x.shape[-1]:
            x = x + inputs
    x = _conv(x, t, "MobilenetV2/Conv_1")
    return _slim_logits(x, t, "MobilenetV2/Logits/Conv2d_1c_1x1")


SLIM_NETS = {
    "mobilenet_v1": (slim_mobilenet_v1_tensors, slim_mobilenet_v1),
    "mobilenet_v2": (lambda: slim_mobilenet_v2_tensors(1.0), slim_mobilenet_v2),
    "mobilenet_v2_140": (lambda: slim_mobilenet_v2_tensors(1.4), slim_mobilenet_v2),
}


# 200 px: the map entering Conv2d_6_depthwise is 25 (odd), where 'SAME' pads one pixel on both
# sides; Keras' fixed bottom / right padding would give a 6x6 final map instead of slim's 7x7.
@pytest.mark.parametrize(
    "name, size",
    [
        ("mobilenet_v1", 224),
        ("mobilenet_v1", 200),
        ("mobilenet_v2", 224),
        ("mobilenet_v2_140", 224),
    ],
)
def test_slim_checkpoint_equals_the_slim_network(name, size, tmp_path):
    make_tensors, network = SLIM_NETS[name]
    tensors = make_tensors()
    prefix = write_tf_checkpoint(str(tmp_path / "model.ckpt"), tensors)
    images = uint8_images(size)
    reference = network(tensors, SCALINGS["inception"](images.astype(np.float32)))
    ours = _logits(name, prefix, images, input_size=size)
    difference = assert_logits_close(ours, reference[:, 1:], f"{name} at {size}")
    print(f"{name} at {size}: max relative logit difference {difference:.1e}")


def test_mobilenet_v1_pads_stride_2_convolutions_as_slim_does():
    # slim's 'SAME' convolutions end in a ceil(size / 32) map: 7 at 200, 2 at 33 (Keras' fixed
    # padding: 6 and 1). Maps entering the stride-2 depthwise blocks at 200: 100, 50, 25, 13.
    small = build_model("mobilenet_v1", 10, input_size=33)
    assert small.get_layer("conv_pw_13_relu").output.shape[1:3] == (2, 2)
    model = build_model("mobilenet_v1", 10, input_size=200)
    assert model.get_layer("conv_pw_13_relu").output.shape[1:3] == (7, 7)
    pads = {
        layer.name: layer.padding
        for layer in model.layers
        if isinstance(layer, keras.layers.ZeroPadding2D)
    }
    assert pads == {
        "conv_pad_2": ((0, 1), (0, 1)),
        "conv_pad_4": ((0, 1), (0, 1)),
        "conv_pad_6": ((1, 1), (1, 1)),
        "conv_pad_12": ((1, 1), (1, 1)),
    }


# Names copied from the slim sources (layer tables and scopes of nets/mobilenet_v1.py,
# nets/mobilenet/mobilenet_v2.py, nets/mobilenet/conv_blocks.py), and the number of variables the
# slim nets define: v1 = Conv2d_0 (weights + 4 BN) + 13 x (depthwise 5 + pointwise 5) + logits 2
# = 137; v2 = Conv 5 + expanded_conv (depthwise 5 + project 5) + 16 x (expand, depthwise,
# project: 15) + Conv_1 5 + logits 2 = 262. BN has γ in both: mobilenet_v1_arg_scope sets
# 'scale': True, V2_DEF's defaults set slim.batch_norm {'center': True, 'scale': True}.
PUBLISHED = {
    "mobilenet_v1": (
        137,
        [
            "MobilenetV1/Conv2d_0/weights",
            "MobilenetV1/Conv2d_0/BatchNorm/gamma",
            "MobilenetV1/Conv2d_1_depthwise/depthwise_weights",
            "MobilenetV1/Conv2d_1_depthwise/BatchNorm/moving_variance",
            "MobilenetV1/Conv2d_13_pointwise/weights",
            "MobilenetV1/Conv2d_13_pointwise/BatchNorm/beta",
            "MobilenetV1/Logits/Conv2d_1c_1x1/weights",
            "MobilenetV1/Logits/Conv2d_1c_1x1/biases",
        ],
    ),
    "mobilenet_v2": (
        262,
        [
            "MobilenetV2/Conv/weights",
            "MobilenetV2/Conv/BatchNorm/gamma",
            "MobilenetV2/expanded_conv/depthwise/depthwise_weights",
            "MobilenetV2/expanded_conv/project/BatchNorm/moving_mean",
            "MobilenetV2/expanded_conv_1/expand/weights",
            "MobilenetV2/expanded_conv_16/project/weights",
            "MobilenetV2/Conv_1/BatchNorm/moving_variance",
            "MobilenetV2/Logits/Conv2d_1c_1x1/biases",
        ],
    ),
}

# nets/mobilenet_v1.py's docstring table (100% MobileNet v1, 224): parameters per convolution.
SLIM_V1_PARAMS = {
    "Conv2d_0": 864,
    "Conv2d_1_depthwise": 288,
    "Conv2d_1_pointwise": 2_048,
    "Conv2d_12_pointwise": 524_288,
    "Conv2d_13_depthwise": 9_216,
    "Conv2d_13_pointwise": 1_048_576,
}
SLIM_V1_CONV_TOTAL = 3_185_088


def _randomise_statistics(model, seed=1):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith(("moving_mean", "beta")):
            weight.assign(rng.uniform(-0.2, 0.2, weight.shape).astype(np.float32))
        elif weight.path.endswith(("moving_variance", "gamma")):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
        elif weight.path.endswith("bias"):
            weight.assign(rng.uniform(-0.1, 0.1, weight.shape).astype(np.float32))


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_slim_name_map_round_trip_and_published_names(name, tmp_path):
    count, published = PUBLISHED[name]
    layout = REGISTRY[name].layout("tf_checkpoint")
    source = build_model(name, 1000)
    _randomise_statistics(source)
    names = layout.names(source, None)
    assert len(names) == len(source.weights) == count
    assert len(set(names.values())) == count
    assert set(published) <= set(names.values())

    tensors = {names[w.path]: w.numpy() for w in source.weights}
    # The published head is a 1x1 conv, 1001-way with class 0 "background"; the loader drops it.
    head = layout.head_bias.rsplit("/", 1)[0]
    kernel = tensors[f"{head}/weights"]
    background = np.full_like(kernel[:, :1], 9.0)
    tensors[f"{head}/weights"] = np.concatenate([background, kernel], 1)[None, None]
    tensors[f"{head}/biases"] = np.concatenate([[9.0], tensors[f"{head}/biases"]]).astype(
        np.float32
    )
    prefix = write_tf_checkpoint(str(tmp_path / "model.ckpt"), tensors)

    loaded = build_model(name, 1000, weights=prefix)
    x = preprocess(uint8_images(SIZE), get_spec(name).preprocessing)
    np.testing.assert_allclose(
        loaded(x, training=False)["logits"].numpy(),
        source(x, training=False)["logits"].numpy(),
        rtol=0,
        atol=1e-5,
    )
    if name == "mobilenet_v1":
        sizes = {
            n.split("/")[1]: v.size
            for n, v in tensors.items()
            if n.endswith("weights") and "/Logits/" not in n
        }
        assert {k: sizes[k] for k in SLIM_V1_PARAMS} == SLIM_V1_PARAMS
        assert sum(sizes.values()) == SLIM_V1_CONV_TOTAL
