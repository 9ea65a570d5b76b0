"""NASNet-A Mobile (4 @ 1056) and Large (6 @ 4032) (Zoph et al. 2018) from
`keras.applications.NASNetMobile` / `NASNetLarge` (ports of the TF-slim networks). TF-slim's
NASNet also has an auxiliary head; it is not part of the paper's Inception-default study and is
not offered here."""

from __future__ import annotations

import keras

from transfer_tf.models import sources
from transfer_tf.models.layers import keras_application
from transfer_tf.models.registry import ModelSpec, Trunk, register


def _trunk_builder(factory):
    def build(input_size, settings):
        base = keras_application(factory, input_size, settings.bn_scale)
        return Trunk(base.input, base.output)

    return build


for _name, _factory, _size, _dim, _top1, _params, _slim in (
    (
        "nasnet_mobile",
        keras.applications.NASNetMobile,
        224,
        1056,
        0.740,
        5_300_000,
        "NASNet-A_Mobile_224",
    ),
    (
        "nasnet_large",
        keras.applications.NASNetLarge,
        331,
        4032,
        0.827,
        88_900_000,
        "NASNet-A_Large_331",
    ),
):
    register(
        ModelSpec(
            name=_name,
            family="nasnet",
            input_size=_size,
            preprocessing="inception",
            feature_dim=_dim,
            imagenet_top1=_top1,
            top1_source=f"{sources.SLIM_README}: {_slim}",
            published_params=_params,
            params_source=f"{sources.SLIM_NASNET}: {_slim}",
            min_input_size=32,
        ),
        _trunk_builder(_factory),
    )
