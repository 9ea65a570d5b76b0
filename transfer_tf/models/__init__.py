"""The model zoo: the paper's 16 ImageNet networks, VGG-16 and EfficientNet-Lite0/1/2.

from transfer_tf.models import build_model, get_spec, preprocess, TrainingSettings
spec = get_spec("inception_v4")
model = build_model("inception_v4", num_classes=102, settings=TrainingSettings.fair())
outputs = model(preprocess(images_0_255, spec.preprocessing))  # {"logits", "features"}
"""

import importlib

from transfer_tf.models.preprocessing import PREPROCESSING, preprocess
from transfer_tf.models.registry import (
    PARAMETER_COUNTS,
    REGISTRY,
    ModelSpec,
    build_model,
    checkpoint_classes,
    checkpoint_input,
    checkpoint_settings,
    count_params,
    get_spec,
    list_models,
)
from transfer_tf.models.settings import TrainingSettings

# Importing a family module registers its models; this order is the order of `list_models()`
# (the paper's model table, then VGG-16 and EfficientNet-Lite).
FAMILIES = (
    "inception_v1",
    "bn_inception",
    "inception_v3",
    "inception_v4",
    "inception_resnet_v2",
    "resnet",
    "densenet",
    "mobilenet_v1",
    "mobilenet_v2",
    "nasnet",
    "vgg",
    "efficientnet_lite",
)
for _family in FAMILIES:
    importlib.import_module(f"transfer_tf.models.{_family}")

__all__ = [
    "PARAMETER_COUNTS",
    "PREPROCESSING",
    "REGISTRY",
    "ModelSpec",
    "TrainingSettings",
    "build_model",
    "checkpoint_classes",
    "checkpoint_input",
    "checkpoint_settings",
    "count_params",
    "get_spec",
    "list_models",
    "preprocess",
]
