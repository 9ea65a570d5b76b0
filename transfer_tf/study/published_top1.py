"""The registry's published ImageNet top-1 figures, readable without TensorFlow.

The model table of a study needs only these two fields of each public checkpoint's `ModelSpec`,
but importing `transfer_tf.models` loads TensorFlow and the zoo (the `model-table` step's whole
cost; docs/measurements/2026-12-01-study-overhead.md). The registry stays the source of truth:
tests/test_study_published_top1.py checks this table equals it, name for name and figure for
figure, so a model added there fails that test until its row is added here. A name missing here
falls back to the registry.
"""

from __future__ import annotations

_SLIM = (
    "TF-slim README, pre-trained models table "
    "(github.com/tensorflow/models/tree/master/research/slim)"
)
_KERAS = "Keras Applications table (keras.io/api/applications), 'Size/Parameters'"
_LITE = (
    "EfficientNet-Lite README (github.com/tensorflow/tpu/tree/master/models/official/"
    "efficientnet/lite), FP32 accuracy / params"
)

# name -> (imagenet_top1, top1_source), as `transfer_tf.models.get_spec(name)` has them.
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


def published_top1(name: str) -> tuple[float, str]:
    """(imagenet_top1, top1_source) of registry model `name`; TensorFlow is imported only for a
    name this table lacks (the registry then answers, or names the known models)."""
    if name in PUBLISHED_TOP1:
        return PUBLISHED_TOP1[name]
    from transfer_tf.models import get_spec  # TensorFlow: only for a name not in the table

    spec = get_spec(name)
    return spec.imagenet_top1, spec.top1_source
