"""Input scaling: float32 images in [0, 255] to the range a network was trained with."""

from __future__ import annotations

import tensorflow as tf

# Per-channel RGB statistics of the ImageNet training set (Caffe / PyTorch conventions).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
# TF-slim's vgg_preprocessing (its ResNet v1 and VGG checkpoints): RGB order, means subtracted.
_VGG_RGB_MEAN = (123.68, 116.78, 103.94)
_TORCH_STD = (0.229, 0.224, 0.225)


def _inception(x):
    return x / 127.5 - 1.0


def _caffe(x):
    return x[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN, x.dtype)


def _vgg(x):
    return x - tf.constant(_VGG_RGB_MEAN, x.dtype)


def _torch(x):
    return (x / 255.0 - tf.constant(_TORCH_MEAN, x.dtype)) / tf.constant(_TORCH_STD, x.dtype)


def _efficientnet_lite(x):
    return (x - 127.5) / 128.0


PREPROCESSING = {
    # The paper retrained every network with Inception preprocessing: [-1, 1].
    "inception": _inception,
    # VGG / Caffe ResNet: BGR, mean-subtracted, no scaling.
    "caffe": _caffe,
    # TF-slim ResNet v1 / VGG checkpoints: RGB, mean-subtracted, no scaling.
    "vgg": _vgg,
    # torchvision (and Keras' DenseNet): [0, 1], then ImageNet mean / std per channel.
    "torch": _torch,
    # EfficientNet-Lite checkpoints (the TF release's lite builder: mean 127.5, std 128).
    "efficientnet_lite": _efficientnet_lite,
}


def preprocess(images, preprocessing: str) -> tf.Tensor:
    """Scales float images in [0, 255] (any leading shape, RGB last) for a model.

    Args:
      images: array or tensor [..., 3] with values in [0, 255]; cast to float32.
      preprocessing: a key of `PREPROCESSING`, usually `get_spec(name).preprocessing`.
    """
    try:
        fn = PREPROCESSING[preprocessing]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing {preprocessing!r}; choose one of {sorted(PREPROCESSING)}"
        ) from None
    x = tf.convert_to_tensor(images)
    if x.shape.rank is not None and (x.shape.rank < 1 or x.shape[-1] != 3):
        raise ValueError(f"preprocess: images must end in 3 RGB channels, got shape {x.shape}")
    return fn(tf.cast(x, tf.float32))
