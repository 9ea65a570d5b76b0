"""The model zoo: every registry model against its published size, the four training-setting
flags, input sizes, preprocessing and building under a tf.distribute strategy."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.models import (
    PREPROCESSING,
    TrainingSettings,
    build_model,
    count_params,
    get_spec,
    list_models,
    preprocess,
)

PAPER_MODELS = [
    "inception_v1",
    "bn_inception",
    "inception_v3",
    "inception_v4",
    "inception_resnet_v2",
    "resnet_50",
    "resnet_101",
    "resnet_152",
    "densenet_121",
    "densenet_169",
    "densenet_201",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v2_140",
    "nasnet_mobile",
    "nasnet_large",
]
EXTRA_MODELS = ["vgg_16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
# Written here from TF-slim definitions (no Keras reference): the issue allows 4% on these.
SLIM_ONLY = {"inception_v1", "bn_inception", "inception_v4"}
# Feature (penultimate) widths as published by the architecture papers.
PUBLISHED_FEATURE_DIM = {
    "inception_v1": 1024,
    "bn_inception": 1024,
    "inception_v3": 2048,
    "inception_v4": 1536,
    "inception_resnet_v2": 1536,
    "resnet_50": 2048,
    "resnet_101": 2048,
    "resnet_152": 2048,
    "densenet_121": 1024,
    "densenet_169": 1664,
    "densenet_201": 1920,
    "mobilenet_v1": 1024,
    "mobilenet_v2": 1280,
    "mobilenet_v2_140": 1792,
    "nasnet_mobile": 1056,
    "nasnet_large": 4032,
    "vgg_16": 4096,
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
}
NATIVE_SIZE = {
    "inception_v3": 299,
    "inception_v4": 299,
    "inception_resnet_v2": 299,
    "nasnet_large": 331,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
}


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _rounding_unit(published: int) -> int:
    """Published counts such as 8,100,000 are rounded to 0.1M; 25,557,032 is exact."""
    unit = 1
    while published % (unit * 10) == 0:
        unit *= 10
    return unit


def _random_images(size, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


def test_registry_lists_the_papers_models_vgg_and_efficientnet_lite():
    assert list_models() == PAPER_MODELS + EXTRA_MODELS
    for name in list_models():
        spec = get_spec(name)
        assert spec.name == name
        assert spec.preprocessing in PREPROCESSING
        assert spec.input_size == NATIVE_SIZE.get(name, 224)
        assert 0.69 <= spec.imagenet_top1 <= 0.83  # published ImageNet top-1 as a fraction
        assert spec.top1_source and spec.params_source
        assert spec.has_aux_head == (
            name in {"inception_v3", "inception_v4", "inception_resnet_v2"}
        )


def test_unknown_model_is_an_error_that_lists_the_registry():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*resnet_50"):
        get_spec("resnet50")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet", 10)


@pytest.mark.parametrize("name", PAPER_MODELS + EXTRA_MODELS)
def test_model_table_row(name):
    """Parameter count with a 1000-way head, feature width and one forward pass at the ImageNet
    input size (batch 1). (No build-time bound: timings belong in benchmarks/, not tests.)"""
    spec = get_spec(name)
    model = build_model(name, 1000)

    params = count_params(model, spec.params_counted)
    tolerance = max(
        (0.04 if name in SLIM_ONLY else 0.01) * spec.published_params,
        _rounding_unit(spec.published_params) / 2,
    )
    assert abs(params - spec.published_params) <= tolerance, (params, spec.published_params)

    assert spec.feature_dim == PUBLISHED_FEATURE_DIM[name]
    assert tuple(model.output["features"].shape) == (None, spec.feature_dim)
    assert tuple(model.input.shape) == (None, spec.input_size, spec.input_size, 3)

    images = preprocess(_random_images(spec.input_size), spec.preprocessing)
    outputs = model(images, training=False)
    assert sorted(outputs) == ["features", "logits"]
    assert outputs["logits"].shape == (1, 1000)
    assert outputs["features"].shape == (1, spec.feature_dim)
    assert np.isfinite(outputs["logits"].numpy()).all()
    # The logits are a linear map of the returned features (no hidden layer in between).
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(
        outputs["features"].numpy() @ kernel + bias, outputs["logits"].numpy(), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "name, slim_params, aux_channels",
    [
        ("inception_v1", 6_617_624, None),
        ("bn_inception", 11_178_336, None),
        ("inception_v3", 27_143_152, 768),
        ("inception_v4", 46_006_800, 1024),
        ("inception_resnet_v2", 59_179_952, 1088),
    ],
)
def test_inception_nets_match_tf_slim_layer_for_layer(name, slim_params, aux_channels):
    """TF-slim builds Inception nets with BN without γ and (v3, v4, Inception-ResNet v2) with
    the auxiliary head; its profiled trainable-parameter counts (1000 classes) are reproduced
    exactly, and the auxiliary head reads the 17x17 grid."""
    has_aux = aux_channels is not None
    model = build_model(name, 1000, TrainingSettings(bn_scale=False, aux_head=has_aux))
    assert count_params(model, "trainable") == slim_params
    if has_aux:
        assert tuple(model.get_layer("aux_pool").input.shape) == (None, 17, 17, aux_channels)
        assert tuple(model.output["aux_logits"].shape) == (None, 1000)


def test_resnet_is_slim_resnet_v1_with_the_stride_in_each_blocks_last_unit():
    model = build_model("resnet_50", 10, input_size=64)
    for block, units in (("block1", 3), ("block2", 4), ("block3", 6)):
        assert model.get_layer(f"{block}_unit{units}_conv1_conv").strides == (1, 1)
        assert model.get_layer(f"{block}_unit{units}_conv2_conv").strides == (2, 2)
        # The identity shortcut is subsampled there; the first unit's projection has stride 1.
        assert isinstance(
            model.get_layer(f"{block}_unit{units}_shortcut"), keras.layers.MaxPooling2D
        )
        assert model.get_layer(f"{block}_unit1_shortcut_conv").strides == (1, 1)
    assert model.get_layer("block4_unit3_conv2_conv").strides == (1, 1)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(conv.use_bias for conv in convs)
    # v1: the unit output is ReLU(BN(conv) + shortcut), no pre-activation BN before the 1x1.
    assert isinstance(model.get_layer("block1_unit1_out"), keras.layers.ReLU)
    assert isinstance(model.get_layer("block1_unit1_add"), keras.layers.Add)


# Each way a network gets its BatchNormalization layers: handwritten conv_bn (Inception v1,
# BN-Inception, v4, ResNet v1 after TF-slim), the MBConv blocks, keras.applications built with γ
# off (Inception v3) or on (MobileNet) and then edited, and VGG without BN. Small inputs: counts do not depend on it.
FAMILY_REPRESENTATIVES = [
    ("inception_v1", 32),
    ("bn_inception", 32),
    ("inception_v3", 75),
    ("inception_v4", 75),
    ("resnet_50", 32),
    ("mobilenet_v1", 32),
    ("vgg_16", 32),
    ("efficientnet_lite0", 32),
]


@pytest.mark.parametrize("name, size", FAMILY_REPRESENTATIVES)
def test_bn_scale_false_removes_exactly_one_gamma_per_bn_channel(name, size):
    with_gamma = build_model(name, 10, TrainingSettings(bn_scale=True), input_size=size)
    bn_with = _bn_layers(with_gamma)
    channels = sum(layer.moving_mean.shape[0] for layer in bn_with)
    assert all(layer.scale and layer.gamma.shape == layer.moving_mean.shape for layer in bn_with)

    without_gamma = build_model(name, 10, TrainingSettings(bn_scale=False), input_size=size)
    bn_without = _bn_layers(without_gamma)
    assert len(bn_without) == len(bn_with)
    assert all(not layer.scale and layer.gamma is None for layer in bn_without)
    assert (
        count_params(with_gamma, "trainable") - count_params(without_gamma, "trainable") == channels
    )
    assert count_params(with_gamma, "all") - count_params(without_gamma, "all") == channels
    if name == "vgg_16":
        assert channels == 0  # VGG has no BatchNormalization: the flag changes nothing
    else:
        assert channels > 0


# Inception-ResNet v2's head is checked at 299 px by the TF-slim parameter count above.
@pytest.mark.parametrize("name, size", [("inception_v3", 75), ("inception_v4", 96)])
def test_aux_head_adds_aux_logits(name, size):
    plain = build_model(name, 7, input_size=size)
    model = build_model(name, 7, TrainingSettings(aux_head=True), input_size=size)
    assert sorted(plain.output) == ["features", "logits"]
    assert sorted(model.output) == ["aux_logits", "features", "logits"]
    outputs = model(_random_images(size, batch=2) / 127.5 - 1, training=False)
    assert outputs["aux_logits"].shape == (2, 7)
    # The head adds exactly slim's aux parameters: 5x5/3 average pool, 1x1 conv to 128 (+BN γ, β),
    # conv to 768 covering the pooled map (+BN γ, β), linear layer to the classes.
    _, height, _, channels = model.get_layer("aux_pool").input.shape
    pooled = (height - min(5, height)) // 3 + 1
    expected = channels * 128 + 2 * 128 + pooled**2 * 128 * 768 + 2 * 768 + 768 * 7 + 7
    assert count_params(model, "trainable") - count_params(plain, "trainable") == expected


def test_aux_head_on_a_family_without_one_is_an_error_naming_the_model():
    for name in ("resnet_50", "mobilenet_v2", "efficientnet_lite0", "inception_v1"):
        with pytest.raises(ValueError, match=f"{name} has no auxiliary classifier head"):
            build_model(name, 10, TrainingSettings(aux_head=True), input_size=64)


def test_dropout_rate_adds_a_dropout_layer_before_the_logits():
    settings = TrainingSettings(dropout_rate=0.3)
    model = build_model("mobilenet_v2", 5, settings, input_size=32)
    dropout = model.get_layer("dropout")
    assert isinstance(dropout, keras.layers.Dropout) and dropout.rate == pytest.approx(0.3)
    assert model.get_layer("logits").input is dropout.output
    assert dropout.input is model.output["features"]

    kernel, bias = model.get_layer("logits").get_weights()
    x = _random_images(32, batch=4) / 127.5 - 1
    evaluation = model(x, training=False)
    np.testing.assert_allclose(
        evaluation["features"].numpy() @ kernel + bias, evaluation["logits"].numpy(), atol=1e-4
    )
    training = model(x, training=True)
    linear = training["features"].numpy() @ kernel + bias
    assert not np.allclose(linear, training["logits"].numpy(), atol=1e-3)  # units were dropped

    plain = build_model("mobilenet_v2", 5, input_size=32)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)
    assert count_params(plain, "all") == count_params(model, "all")


@pytest.mark.parametrize(
    "name", ["mobilenet_v2", "resnet_50", "inception_v1", "efficientnet_lite0"]
)
@pytest.mark.parametrize("size", [32, 64])
def test_small_input_size_for_the_mini_study(name, size):
    model = build_model(name, 10, input_size=size)
    assert tuple(model.input.shape) == (None, size, size, 3)
    outputs = model(_random_images(size, batch=2) / 127.5 - 1, training=True)
    assert outputs["logits"].shape == (2, 10)
    assert outputs["features"].shape == (2, get_spec(name).feature_dim)


@pytest.mark.parametrize("name", ["resnet_50", "inception_v3", "inception_v4"])
def test_input_size_below_the_family_minimum_is_an_error(name):
    minimum = get_spec(name).min_input_size
    with pytest.raises(ValueError, match=f"at least {minimum} pixels"):
        build_model(name, 10, input_size=minimum - 1)


def test_bad_arguments_are_errors_that_say_what_to_do():
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("mobilenet_v2", 0, input_size=32)
    with pytest.raises(ValueError, match="no offline ImageNet weights exist for resnet_50"):
        build_model("resnet_50", 1000, weights="imagenet")
    with pytest.raises(ValueError, match=r"checkpoint /tmp/no_such.h5: no such file"):
        build_model("efficientnet_lite0", 1000, weights="/tmp/no_such.h5")
    with pytest.raises(ValueError, match="weights must be None, 'imagenet' or a checkpoint path"):
        build_model("efficientnet_lite0", 1000, weights=3)
    with pytest.raises(TypeError, match="settings must be a TrainingSettings"):
        build_model("mobilenet_v2", 10, {"bn_scale": False}, input_size=32)


def test_builds_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model("mobilenet_v2", 10, input_size=32)
    assert all(
        isinstance(w.value, tf.distribute.DistributedValues) for w in model.trainable_weights
    )
    logits = strategy.run(
        lambda x: model(x, training=False)["logits"],
        args=(tf.constant(_random_images(32, batch=2)),),
    )
    assert strategy.experimental_local_results(logits)[0].shape == (2, 10)


def test_training_settings():
    assert TrainingSettings() == TrainingSettings.fair()
    fair = TrainingSettings.fair()
    assert (fair.bn_scale, fair.dropout_rate, fair.aux_head, fair.label_smoothing) == (
        True,
        0.0,
        False,
        0.0,
    )
    default = TrainingSettings.inception_default()
    assert (default.bn_scale, default.dropout_rate, default.aux_head, default.label_smoothing) == (
        False,
        0.2,
        True,
        0.1,
    )
    assert TrainingSettings.from_dict(default.to_dict()) == default
    assert default.to_dict() == {
        "bn_scale": False,
        "dropout_rate": 0.2,
        "aux_head": True,
        "label_smoothing": 0.1,
    }
    with pytest.raises(ValueError, match="unknown keys \\['scale'\\]"):
        TrainingSettings.from_dict({"scale": True})
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        TrainingSettings(dropout_rate=1.0)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        TrainingSettings(label_smoothing=-0.1)
    with pytest.raises(TypeError, match="must be bool"):
        TrainingSettings(bn_scale="no")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fair.bn_scale = False


def test_preprocess_against_hand_computed_values():
    pixels = np.array([[[0.0, 127.5, 255.0]]], np.float32)  # one RGB pixel
    np.testing.assert_allclose(preprocess(pixels, "inception").numpy(), [[[-1.0, 0.0, 1.0]]])
    np.testing.assert_allclose(
        preprocess(pixels, "efficientnet_lite").numpy(), [[[-127.5 / 128, 0.0, 127.5 / 128]]]
    )
    np.testing.assert_allclose(  # BGR order, minus the Caffe ImageNet means
        preprocess(pixels, "caffe").numpy(),
        [[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        preprocess(pixels, "torch").numpy(),
        [[[(0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225]]],
        rtol=1e-5,
    )
    assert preprocess(np.zeros((2, 8, 8, 3), np.uint8), "inception").dtype == tf.float32
    np.testing.assert_allclose(  # TF-slim's vgg_preprocessing: RGB order, minus the RGB means
        preprocess(pixels, "vgg").numpy(), [[[0 - 123.68, 127.5 - 116.78, 255 - 103.94]]], rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown preprocessing 'vgg16'"):
        preprocess(pixels, "vgg16")
    with pytest.raises(ValueError, match="3 RGB channels"):
        preprocess(np.zeros((2, 8, 8, 1), np.float32), "inception")
