"""DenseNet-121 / 169 / 201 (Huang et al. 2017) from `keras.applications.DenseNet*`.

Published checkpoints (`build_model("densenet_121", 1000, weights=PATH)`): Keras Applications'
`densenet121_weights_tf_dim_ordering_tf_kernels.h5` (and `_notop`), which were trained with
torchvision's scaling (ImageNet mean / std), not the [-1, 1] the zoo retrains with.
"""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.checkpoints import keras_h5_layout
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _trunk_builder(factory):
    def build(input_size, settings):
        base = keras_application(factory, input_size, settings.bn_scale)
        return Trunk(base.input, base.output)

    return build


KERAS_H5 = keras_h5_layout(
    "keras/src/applications/densenet.py (keras.applications.DenseNet121/169/201)",
    preprocessing="torch",
)


for _name, _factory, _dim, _top1, _params in (
    ("densenet_121", keras.applications.DenseNet121, 1024, 0.750, 8_100_000),
    ("densenet_169", keras.applications.DenseNet169, 1664, 0.762, 14_300_000),
    ("densenet_201", keras.applications.DenseNet201, 1920, 0.773, 20_200_000),
):
    _keras_name = _factory.__name__
    register(
        ModelSpec(
            name=_name,
            family="densenet",
            input_size=224,
            preprocessing="inception",
            feature_dim=_dim,
            imagenet_top1=_top1,
            top1_source=f"{sources.DENSENET_KERAS}: {_keras_name}",
            published_params=_params,
            params_source=f"{sources.KERAS_DOCS}: {_keras_name} {_params / 1e6:.1f}M",
            params_counted="all",
            min_input_size=32,
        ),
        _trunk_builder(_factory),
        checkpoints=(KERAS_H5,),
    )
