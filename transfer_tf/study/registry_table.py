"""What the study needs of the model registry, readable without TensorFlow: the model names
(the planner checks the flags' names), which have an auxiliary head (the planner's settings
flags) and the published ImageNet top-1 (the `model-table` step).

Importing `transfer_tf.models` loads TensorFlow, Keras and the zoo: it was the planner's and the
`model-table` step's whole start-up (docs/measurements/2026-12-01-study-overhead.md). The
registry stays the source of truth: tests/test_study_registry_table.py checks this table equals
it, name for name, in its order, figure for figure, so a model added there fails that test until
its row is added here.
"""

from __future__ import annotations

_SLIM = (
    "TF-slim README, pre-trained models table "
    "(github.com/tensorflow/models/tree/master/research/slim)"
)
_KERAS = "Keras Applications table (keras.io/api/applications), 'Top-1 Accuracy'"
_LITE = (
    "EfficientNet-Lite README (github.com/tensorflow/tpu/tree/master/models/official/"
    "efficientnet/lite), FP32 accuracy / params"
)

# name -> (imagenet_top1, top1_source), as `transfer_tf.models.get_spec(name)` has them, in the
# order of `transfer_tf.models.list_models()`.
PUBLISHED_TOP1: dict[str, tuple[float, str]] = {
    "inception_v1": (0.698, f"{_SLIM}: Inception V1"),
    "bn_inception": (0.739, f"{_SLIM}: Inception V2 (BN-Inception)"),
    "inception_v3": (0.780, f"{_SLIM}: Inception V3"),
    "inception_v4": (0.802, f"{_SLIM}: Inception V4"),
    "inception_resnet_v2": (0.804, f"{_SLIM}: Inception-ResNet-v2"),
    "resnet_50": (0.752, f"{_SLIM}: ResNet V1 50"),
    "resnet_101": (0.764, f"{_SLIM}: ResNet V1 101"),
    "resnet_152": (0.768, f"{_SLIM}: ResNet V1 152"),
    "densenet_121": (0.750, f"{_KERAS}: DenseNet121"),
    "densenet_169": (0.762, f"{_KERAS}: DenseNet169"),
    "densenet_201": (0.773, f"{_KERAS}: DenseNet201"),
    "mobilenet_v1": (0.709, f"{_SLIM}: MobileNet_v1_1.0_224"),
    "mobilenet_v2": (0.719, f"{_SLIM}: MobileNet_v2_1.0_224"),
    "mobilenet_v2_140": (0.749, f"{_SLIM}: MobileNet_v2_1.4_224"),
    "nasnet_mobile": (0.740, f"{_SLIM}: NASNet-A_Mobile_224"),
    "nasnet_large": (0.827, f"{_SLIM}: NASNet-A_Large_331"),
    "vgg_16": (0.715, f"{_SLIM}: VGG 16"),
    "efficientnet_lite0": (0.751, f"{_LITE}: efficientnet-lite0"),
    "efficientnet_lite1": (0.767, f"{_LITE}: efficientnet-lite1"),
    "efficientnet_lite2": (0.776, f"{_LITE}: efficientnet-lite2"),
}


# The models whose `ModelSpec.has_aux_head` is True.
AUX_HEAD = frozenset({"inception_v3", "inception_v4", "inception_resnet_v2"})


def model_names() -> list[str]:
    """The registry's names, in the order of `transfer_tf.models.list_models()`."""
    return list(PUBLISHED_TOP1)


def has_aux_head(name: str) -> bool:
    if name not in PUBLISHED_TOP1:
        raise KeyError(f"unknown model {name!r}; registry models: {', '.join(PUBLISHED_TOP1)}")
    return name in AUX_HEAD


def published_top1(name: str) -> tuple[float, str]:
    """(imagenet_top1, top1_source) of registry model `name`."""
    if name not in PUBLISHED_TOP1:
        raise KeyError(f"unknown model {name!r}; registry models: {', '.join(PUBLISHED_TOP1)}")
    return PUBLISHED_TOP1[name]
