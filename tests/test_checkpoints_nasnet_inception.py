"""Published checkpoints of NASNet-A Mobile / Large, Inception-ResNet v2 and Inception v4.

Keras Applications `.h5` files: keras.applications builds the network with random weights and
saves the legacy `.h5` (tests/reference/keras_reference.py); our exported SavedModel, loaded from
that file, gives the same logits on uint8 images at the native size.

TF-slim checkpoints: no reference network is on PyPI (the `tf_slim` package has none of these), so
the name maps rest on TF-slim's sources (tensorflow/models research/slim/nets/). A zoo model with
random weights is written under the slim names (1001-way heads, plus tensors the model lacks: the
NASNet auxiliary head, `global_step`) and loaded into a fresh model: equal outputs. What makes the
maps more than self-consistent: the tensor count of each slim net, derived from its source, and
names copied from the sources with the shapes the sources give them; and, beyond shapes, the
graph: slim's Branch_k is the k-th input of its block's concatenation, and each NASNet separable
stack reads the hidden state slim's cell definition gives its comb_iter.

The Keras references run in their own processes, in the background from the module's first test
(the slim round trips come first and run meanwhile).
"""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference.equivalence import (
    SCALINGS,
    assert_logits_close,
    exported_logits,
    run_reference,
    uint8_images,
)

from transfer_tf.models import TrainingSettings, build_model, get_spec
from transfer_tf.models.checkpoints import CheckpointError, layer_of
from transfer_tf.models.registry import REGISTRY


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


# ---------------------------------------------------------------------------------------------
# TF-slim layouts: round trips and published facts.

# Tensors of each slim net (global_step aside), counted from its source:
# - inception_v4.py: 149 BN convolutions in the trunk (stem 11, 4 Inception-A x 7, Reduction-A 4,
#   7 Inception-B x 10, Reduction-B 6, 3 Inception-C x 10) and 2 in AuxLogits, each with weights,
#   beta, moving mean and variance (no gamma); AuxLogits/Aux_logits and Logits/Logits: 2 each.
#   151 x 4 + 4 = 608.
# - inception_resnet_v2.py: 204 BN convolutions in the trunk (stem 5, Mixed_5b 7, 10 x block35
#   6, Mixed_6a 4, 20 x block17 4, Mixed_7a 7, 10 x block8 4, Conv2d_7b_1x1) and 2 in AuxLogits;
#   40 residual Conv2d_1x1 with weights and biases; 2 fully connected. 206 x 4 + 40 x 2 + 4 = 908.
# - nasnet.py / nasnet_utils.py: every cell has 65 (its 1x1 + beginning_bn: 5; five stacks of
#   two separable convolutions with their BN: 5 x 12), plus 6 where the previous output is
#   reduced (path1_conv, path2_conv, final_path_bn) or 5 where it is projected (prev_1x1,
#   prev_bn); conv0 + conv0_bn 5, final_layer/FC 2, the aux head 12 (proj, aux_bn0, Conv,
#   aux_bn1, FC). Mobile: 16 cells, adjustments 79 -> 1040 + 79 + 5 + 2 + 12 = 1138; Large:
#   22 cells, adjustments 109 -> 1430 + 109 + 5 + 2 + 12 = 1558.
SLIM_TENSORS = {
    "inception_v4": 608,
    "inception_resnet_v2": 908,
    "nasnet_mobile": 1138,
    "nasnet_large": 1558,
}

# Names copied from the slim sources (or from published code that reads these checkpoints), with
# the shapes the sources give them at the native input size (heads 1001-way).
PUBLISHED = {
    "inception_v4": {
        "InceptionV4/Conv2d_1a_3x3/weights": (3, 3, 3, 32),
        "InceptionV4/Mixed_3a/Branch_1/Conv2d_0a_3x3/weights": (3, 3, 64, 96),
        "InceptionV4/Mixed_4a/Branch_1/Conv2d_0c_7x1/weights": (7, 1, 64, 64),
        "InceptionV4/Mixed_5e/Branch_3/Conv2d_0b_1x1/weights": (1, 1, 384, 96),
        "InceptionV4/Mixed_6a/Branch_1/Conv2d_1a_3x3/weights": (3, 3, 224, 256),
        "InceptionV4/Mixed_6h/Branch_2/Conv2d_0e_1x7/weights": (1, 7, 224, 256),
        "InceptionV4/Mixed_7a/Branch_1/Conv2d_0c_7x1/weights": (7, 1, 256, 320),
        "InceptionV4/Mixed_7d/Branch_2/Conv2d_0e_3x1/BatchNorm/beta": (256,),
        "InceptionV4/AuxLogits/Conv2d_1b_1x1/BatchNorm/moving_mean": (128,),
        "InceptionV4/AuxLogits/Conv2d_2a/weights": (5, 5, 128, 768),
        "InceptionV4/AuxLogits/Aux_logits/weights": (768, 1001),
        "InceptionV4/Logits/Logits/weights": (1536, 1001),
    },
    "inception_resnet_v2": {
        "InceptionResnetV2/Conv2d_1a_3x3/weights": (3, 3, 3, 32),
        "InceptionResnetV2/Conv2d_4a_3x3/BatchNorm/moving_variance": (192,),
        "InceptionResnetV2/Mixed_5b/Branch_1/Conv2d_0b_5x5/weights": (5, 5, 48, 64),
        "InceptionResnetV2/Repeat/block35_1/Branch_2/Conv2d_0c_3x3/weights": (3, 3, 48, 64),
        "InceptionResnetV2/Repeat/block35_10/Conv2d_1x1/biases": (320,),
        "InceptionResnetV2/Mixed_6a/Branch_1/Conv2d_1a_3x3/weights": (3, 3, 256, 384),
        "InceptionResnetV2/Repeat_1/block17_2/Branch_1/Conv2d_0c_7x1/weights": (7, 1, 160, 192),
        "InceptionResnetV2/Repeat_1/block17_20/Conv2d_1x1/weights": (1, 1, 384, 1088),
        "InceptionResnetV2/Mixed_7a/Branch_2/Conv2d_0b_3x3/weights": (3, 3, 256, 288),
        "InceptionResnetV2/Repeat_2/block8_9/Branch_1/Conv2d_0c_3x1/weights": (3, 1, 224, 256),
        "InceptionResnetV2/Block8/Conv2d_1x1/weights": (1, 1, 448, 2080),
        "InceptionResnetV2/Conv2d_7b_1x1/BatchNorm/beta": (1536,),
        "InceptionResnetV2/AuxLogits/Conv2d_1b_1x1/weights": (1, 1, 1088, 128),
        "InceptionResnetV2/AuxLogits/Conv2d_2a_5x5/weights": (5, 5, 128, 768),
        "InceptionResnetV2/AuxLogits/Logits/biases": (1001,),
        "InceptionResnetV2/Logits/Logits/weights": (1536, 1001),
    },
    "nasnet_mobile": {
        "conv0/weights": (3, 3, 3, 32),
        "conv0_bn/gamma": (32,),
        "cell_stem_0/1x1/weights": (1, 1, 32, 11),
        "cell_stem_0/comb_iter_0/left/separable_5x5_1/depthwise_weights": (5, 5, 11, 1),
        "cell_stem_0/comb_iter_0/right/separable_7x7_1/depthwise_weights": (7, 7, 32, 1),
        "cell_stem_1/path1_conv/weights": (1, 1, 32, 11),
        "cell_stem_1/final_path_bn/beta": (22,),
        "cell_0/comb_iter_0/left/separable_5x5_1/depthwise_weights": (5, 5, 44, 1),
        "cell_1/prev_1x1/weights": (1, 1, 88, 44),
        "cell_4/path2_conv/weights": (1, 1, 264, 44),
        "cell_11/comb_iter_4/left/bn_sep_3x3_2/beta": (176,),
        "reduction_cell_0/comb_iter_2/right/bn_sep_5x5_1/moving_mean": (88,),
        "reduction_cell_1/comb_iter_1/right/separable_7x7_2/pointwise_weights": (1, 1, 176, 176),
        "final_layer/FC/weights": (1056, 1001),
    },
    "nasnet_large": {
        "conv0/weights": (3, 3, 3, 96),
        "cell_stem_0/comb_iter_0/right/separable_7x7_1/depthwise_weights": (7, 7, 96, 1),
        "cell_stem_1/final_path_bn/moving_variance": (84,),
        # skip_reduction_layer_input: the cell after a reduction cell reads the output two cells
        # back from the reduction (1008 = 6 x 168 channels), not the reduction cell's input.
        "cell_6/path1_conv/weights": (1, 1, 1008, 168),
        "cell_7/prev_1x1/weights": (1, 1, 1344, 336),
        "cell_17/comb_iter_4/left/bn_sep_3x3_2/gamma": (672,),
        "reduction_cell_1/1x1/weights": (1, 1, 2016, 672),
        "final_layer/FC/biases": (1001,),
    },
}

# The NASNet checkpoints' auxiliary head, which the zoo does not build (slim: `aux_{cell}` after
# the cell before the second reduction; cell 7 of Mobile, cell 11 of Large), its input channels
# and pooled map size at the native input.
NASNET_AUX = {"nasnet_mobile": ("aux_7", 528, 4), "nasnet_large": ("aux_11", 2016, 6)}
# slim's NASNet training saved a second global step under this scope (published code that
# restores these checkpoints excludes it by name).
NASNET_STRAY_STEP = "cell_stem_0/comb_iter_0/left/global_step"

# slim's cell definitions (nasnet_utils.py, NasNetANormalCell / NasNetAReductionCell): the
# operation of each comb_iter's left and right input, and which hidden state it reads (0: the
# cell's own 1x1 of its input, 1: the previous cell's output, 2 + i: comb_iter_i's output).
NASNET_CELLS = {
    "normal": (
        [
            "separable_5x5_2",
            "separable_3x3_2",
            "separable_5x5_2",
            "separable_3x3_2",
            "avg_pool_3x3",
            "none",
            "avg_pool_3x3",
            "avg_pool_3x3",
            "separable_3x3_2",
            "none",
        ],
        [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
    ),
    "reduction": (
        [
            "separable_5x5_2",
            "separable_7x7_2",
            "max_pool_3x3",
            "separable_7x7_2",
            "avg_pool_3x3",
            "separable_5x5_2",
            "none",
            "avg_pool_3x3",
            "separable_3x3_2",
            "max_pool_3x3",
        ],
        [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
    ),
}
# The concatenation that closes each slim block whose branches are `Branch_0`, `Branch_1`, ...
BLOCK_CONCATENATIONS = {
    "inception_v4": r"^Mixed_\d[a-h]$",
    "inception_resnet_v2": r"^(mixed_\d[ab]|block\d+_\d+_mixed)$",
}

# name -> (settings of the written model, input size of the round trip). The Inception nets at
# 299, where the auxiliary head's 5x5 convolution has slim's shape; NASNet's weights do not depend
# on the input size: a small input keeps Large's forward passes short.
ROUND_TRIPS = {
    "inception_v4": (TrainingSettings(bn_scale=False, aux_head=True), 299),
    "inception_resnet_v2": (TrainingSettings(bn_scale=False, aux_head=True), 299),
    "nasnet_mobile": (TrainingSettings(bn_scale=True), 224),
    "nasnet_large": (TrainingSettings(bn_scale=True), 96),
}
HEADS = ("logits", "aux_logits")


def _randomise(model, seed):
    """BN statistics, offsets and biases away from 0 / 1, so a misplaced one changes the output."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        kind, shape = weight.path.rsplit("/", 1)[-1], tuple(weight.shape)
        if kind in ("beta", "moving_mean", "bias"):
            weight.assign(rng.uniform(-0.2, 0.2, shape).astype("float32"))
        elif kind in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))


def _slim_tensors(name, model, names, rng):
    """The model's weights under the slim names, heads 1001-way (a background class in front),
    plus the tensors a published checkpoint has that the model does not use."""
    tensors = {}
    for weight in model.weights:
        value = np.asarray(weight.numpy())
        if layer_of(weight.path) in HEADS:
            background = rng.normal(0, 0.1, (*value.shape[:-1], 1)).astype(value.dtype)
            value = np.concatenate([background, value], axis=-1)
        tensors[names[weight.path]] = value
    tensors["global_step"] = np.array(123456, np.int64)
    if name in NASNET_AUX:
        scope, channels, pooled = NASNET_AUX[name]
        aux = {
            "proj/weights": (1, 1, channels, 128),
            "Conv/weights": (pooled, pooled, 128, 768),
            "FC/weights": (768, 1001),
            "FC/biases": (1001,),
            **{
                f"aux_bn{i}/{k}": (128 if i == 0 else 768,)
                for i in (0, 1)
                for k in ("gamma", "beta", "moving_mean", "moving_variance")
            },
        }
        for key, shape in aux.items():
            tensors[f"{scope}/aux_logits/{key}"] = rng.normal(0, 0.1, shape).astype(np.float32)
        tensors[NASNET_STRAY_STEP] = np.array(123456, np.int64)
    return tensors


def _write_checkpoint(prefix, tensors):
    """The TF checkpoint a TF1 `Saver` writes (`prefix.index`, `prefix.data-00000-of-00001`,
    exact names) through the op the Saver runs, `SaveV2`: seconds where building a TF1 graph of
    the variables takes a minute for NASNet-Large."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )
    return prefix


def _inputs(layer):
    return [t for node in layer._inbound_nodes for t in node.input_tensors]


def _producer(tensor):
    return tensor._keras_history.operation


def _upstream(tensor):
    """Names of the layers `tensor` depends on."""
    seen, stack = set(), [tensor]
    while stack:
        layer = _producer(stack.pop())
        if layer.name not in seen:
            seen.add(layer.name)
            stack.extend(_inputs(layer))
    return seen


def _layer_scopes(model, names):
    """{layer name: slim scope} from the name map (the variable name without its last part,
    BatchNorm/ and the kind)."""
    return {
        layer_of(path): re.sub(r"(/BatchNorm)?/[a-z_]+$", "", name) for path, name in names.items()
    }


def _assert_branches_are_concatenated_in_order(name, model, names):
    """slim concatenates Branch_0, Branch_1, ... of a block in that order: the convolutions on
    the k-th input of a block's concatenation alone are all in `<block>/Branch_k/`."""
    scopes = _layer_scopes(model, names)
    blocks = [layer for layer in model.layers if re.match(BLOCK_CONCATENATIONS[name], layer.name)]
    assert blocks
    for block in blocks:
        upstream = [_upstream(t) for t in _inputs(block)]
        block_scopes = set()
        for k, mine in enumerate(upstream):
            others = set().union(*(u for j, u in enumerate(upstream) if j != k))
            for layer in mine - others:
                scope = scopes.get(layer)
                if scope is not None:
                    match = re.match(r"^(.*)/Branch_(\d)/", scope)
                    assert match and int(match[2]) == k, (block.name, k, layer, scope)
                    block_scopes.add(match[1])
        assert len(block_scopes) == 1, (block.name, block_scopes)


def _assert_nasnet_cells_read_slims_hidden_states(model, names):
    """Every separable stack mapped to `<cell>/comb_iter_i/<side>` has slim's kernel for that
    operation and reads slim's hidden state for it (NASNET_CELLS)."""
    scopes = _layer_scopes(model, names)
    checked = 0
    for layer in model.layers:
        scope = scopes.get(layer.name, "")
        match = re.match(r"^(\w+)/comb_iter_(\d)/(left|right)/separable_(\d)x\d_1$", scope)
        if not match:
            continue
        cell, index, side, kernel = match[1], int(match[2]), match[3], int(match[4])
        operations, states = NASNET_CELLS[
            "reduction" if "stem" in cell or "reduction" in cell else "normal"
        ]
        position = 2 * index + (side == "right")
        assert operations[position] == f"separable_{kernel}x{kernel}_2", scope
        assert tuple(layer.depthwise_kernel.shape[:2]) == (kernel, kernel), scope
        source = _producer(_inputs(layer)[0])
        while isinstance(source, (keras.layers.Activation, keras.layers.ZeroPadding2D)):
            source = _producer(_inputs(source)[0])
        if scopes.get(source.name) == f"{cell}/beginning_bn":
            state = 0
        elif isinstance(source, keras.layers.Add):  # a comb_iter's output: its BN inputs say which
            feeding = {scopes.get(_producer(t).name, "") for t in _inputs(source)}
            combs = {int(m[1]) for f in feeding if (m := re.match(rf"^{cell}/comb_iter_(\d)/", f))}
            assert len(combs) == 1, (scope, feeding)
            state = 2 + combs.pop()
        else:  # the previous cell's output, as it is or reduced / projected in this cell
            assert not scopes.get(source.name, "").startswith(f"{cell}/") or scopes[
                source.name
            ] in (f"{cell}/final_path_bn", f"{cell}/prev_bn"), (scope, source.name)
            state = 1
        assert state == states[position], (scope, source.name, state)
        checked += 1
    assert checked == 5 * sum(1 for s in set(scopes.values()) if s.endswith("/beginning_bn"))


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_slim_layout_round_trip_with_published_names_and_counts(name, tmp_path):
    start = time.perf_counter()
    settings, size = ROUND_TRIPS[name]
    written = build_model(name, 1000, settings, input_size=size)
    _randomise(written, seed=1)
    names = REGISTRY[name].layout("tf_checkpoint").names(written, None)
    tensors = _slim_tensors(name, written, names, np.random.default_rng(2))

    model_tensors = {k: v for k, v in tensors.items() if not k.endswith("global_step")}
    assert len(model_tensors) == SLIM_TENSORS[name]
    shapes = {k: v.shape for k, v in tensors.items()}
    for published, shape in PUBLISHED[name].items():
        assert shapes.get(published) == shape, (published, shapes.get(published), shape)
    if name.startswith("inception"):
        # slim's kernel-size suffixes (`Conv2d_0b_1x7`) agree with the kernels mapped to them.
        for key, shape in shapes.items():
            if match := re.search(r"_(\d)x(\d)/weights$", key):
                assert shape[:2] == (int(match[1]), int(match[2])), key
        assert not any(k.endswith("gamma") for k in tensors)  # slim's Inception BN has no γ
        _assert_branches_are_concatenated_in_order(name, written, names)
    else:
        _assert_nasnet_cells_read_slims_hidden_states(written, names)

    prefix = _write_checkpoint(str(tmp_path / "model.ckpt"), tensors)
    loaded = build_model(name, 1000, settings, input_size=size, weights=prefix)
    images = np.random.default_rng(3).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    expected, got = written(images, training=False), loaded(images, training=False)
    assert sorted(got) == sorted(expected)
    for output in expected:
        np.testing.assert_allclose(
            got[output], expected[output], rtol=1e-5, atol=1e-5, err_msg=f"{name} {output}"
        )
    print(f"{name}: {len(model_tensors)} tensors, {time.perf_counter() - start:.0f} s")


# ---------------------------------------------------------------------------------------------
# Keras Applications files.

# registry name -> (keras.applications function, images); one image for NASNet-Large (its export
# dominates the file's run time).
KERAS_NETS = {
    "inception_resnet_v2": ("InceptionResNetV2", 2),
    "nasnet_mobile": ("NASNetMobile", 2),
    "nasnet_large": ("NASNetLarge", 1),
}


def _keras_reference(name, folder):
    net, count = KERAS_NETS[name]
    images = uint8_images(get_spec(name).input_size, count)
    scaled = SCALINGS["inception"](images.astype(np.float32))
    reference = run_reference("keras_reference.py", folder, scaled, f"--net={net}")
    return folder, images, reference["logits"]


def reads(*names):
    """Marks a test that is not parametrized by `name` with the references it reads."""

    def mark(test):
        test.reads = names
        return test

    return mark


@pytest.fixture(scope="module", autouse=True)
def keras_references(request, tmp_path_factory):
    """name -> future of (folder with weights.h5, uint8 images, reference logits). The references
    the selected tests read start with the module's first test, in test order, one process at a
    time beside the test process (the slim round trips above run meanwhile)."""
    needed = []
    for item in request.session.items:
        if item.module is request.module and "keras_reference" in item.fixturenames:
            callspec = getattr(item, "callspec", None)
            wanted = [callspec.params["name"]] if callspec else item.function.reads
            needed += [name for name in wanted if name not in needed]
    pool = ThreadPoolExecutor(max_workers=1)
    root = tmp_path_factory.mktemp("keras")
    yield {name: pool.submit(_keras_reference, name, str(root / name)) for name in needed}
    pool.shutdown(cancel_futures=True)


@pytest.fixture
def keras_reference(keras_references):
    return lambda name: keras_references[name].result()


@pytest.mark.parametrize("name", list(KERAS_NETS))
def test_keras_h5_gives_keras_applications_logits(name, keras_reference, tmp_path):
    start = time.perf_counter()
    folder, images, reference = keras_reference(name)
    waited = time.perf_counter() - start
    ours = exported_logits(name, os.path.join(folder, "weights.h5"), str(tmp_path), images)
    difference = assert_logits_close(ours["logits"], reference, name)
    print(
        f"{name}: max |logit difference| {difference:.1e} of the scale; waited {waited:.0f} s "
        f"for the reference, exported and ran in {time.perf_counter() - start - waited:.0f} s"
    )


@reads("nasnet_mobile")
def test_nasnet_mobile_h5_into_nasnet_large_is_an_error_naming_file_and_mismatch(
    keras_reference,
):
    folder, _, _ = keras_reference("nasnet_mobile")
    path = os.path.join(folder, "weights.h5")
    with pytest.raises(CheckpointError) as error:
        build_model("nasnet_large", 1000, weights=path)
    message = str(error.value)
    assert path in message and "does not fit nasnet_large" in message
    # Mobile's first reduction cell (`reduce_4`) sits where Large has its normal cell 4.
    assert re.search(r"\d+ model weights unmatched \[.*normal_conv_1_4/kernel", message), message
    assert re.search(r"\d+ checkpoint tensors unused \[.*reduce_4/", message), message
