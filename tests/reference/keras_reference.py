"""Reference logits from `keras.applications` networks (run as a separate process).

    python tests/reference/keras_reference.py --net=DenseNet121 --out_dir=DIR --images=IMAGES.npy \
        [--kwargs='{"alpha": 1.4}']

Builds `keras.applications.<net>(weights=None, classifier_activation=None)` with random weights
(BatchNorm statistics moved away from 0 / 1), writes them as a legacy Keras HDF5 weights file
(`DIR/weights.h5`, the layout of the files `keras.applications` downloads: root attribute
`layer_names`, one group per layer with `weight_names`) and `DIR/reference.npz` with the logits on
IMAGES (float32 [N, S, S, 3], already scaled as the network expects).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402


def randomise(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        kind = weight.path.rsplit("/", 1)[-1]
        shape = tuple(weight.shape)
        if kind in ("beta", "moving_mean"):
            weight.assign(rng.uniform(-0.2, 0.2, shape).astype("float32"))
        elif kind in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif kind == "bias":
            weight.assign(rng.uniform(-0.1, 0.1, shape).astype("float32"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--net", required=True, help="a keras.applications function name")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--kwargs", default="{}", help="JSON: extra arguments, e.g. alpha")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = np.load(args.images).astype(np.float32)
    keras.utils.set_random_seed(args.seed)
    model = getattr(keras.applications, args.net)(
        weights=None,
        input_shape=images.shape[1:],
        classifier_activation=None,
        **json.loads(args.kwargs),
    )
    randomise(model, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    with h5py.File(os.path.join(args.out_dir, "weights.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    logits = np.asarray(model.predict(images, verbose=0))
    np.savez(os.path.join(args.out_dir, "reference.npz"), logits=logits)
    print(f"{args.net}: {len(model.weights)} weights, logits {logits.shape}")


if __name__ == "__main__":
    main()
