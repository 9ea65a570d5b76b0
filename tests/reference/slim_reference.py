"""Reference logits from the `tf_slim` package's own networks (run as a separate process).

    python tests/reference/slim_reference.py --net=inception_v1 --out_dir=DIR --images=IMAGES.npy

Builds the TF-slim network in a TF1 graph with random weights (non-trivial BatchNorm statistics),
saves it with a TF1 `Saver` under slim's variable names (`DIR/model.ckpt`, the format of the TF-slim
zoo's tarballs) and writes `DIR/reference.npz` with the logits (and auxiliary logits) the slim graph
computes on IMAGES (float32 [N, S, S, 3], already scaled as the checkpoint expects).

tf_slim's `batch_norm` needs the legacy Keras layers, which Keras 3 does not have; the normaliser
below creates slim's variables (`BatchNorm/beta`, `gamma`, `moving_mean`, `moving_variance`) and
computes inference-mode batch normalisation, as slim's `batch_norm(is_training=False)` does.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_slim  # noqa: E402
from tf_slim.layers import layers as slim_layers  # noqa: E402
from tf_slim.nets import inception_v1, inception_v2, inception_v3, resnet_v1, vgg  # noqa: E402
from tf_slim.ops.arg_scope import add_arg_scope  # noqa: E402

v1 = tf.compat.v1


def inference_batch_norm(
    inputs, decay=0.999, center=True, scale=False, epsilon=0.001, scope=None, **unused
):
    with v1.variable_scope(scope, "BatchNorm", [inputs]):
        channels = inputs.shape[-1]
        beta = (
            v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
            if center
            else 0.0
        )
        gamma = (
            v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
            if scale
            else 1.0
        )
        mean = v1.get_variable(
            "moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False
        )
        variance = v1.get_variable(
            "moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False
        )
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, epsilon)


# Stands in for slim's batch_norm wherever a net's own arg scope names it, and only there: VGG has
# no normaliser and Inception v2's separable stem has biases instead (as in the published
# checkpoint), which an arg scope forcing a normaliser onto every conv2d would change.
inference_batch_norm = add_arg_scope(inference_batch_norm)
slim_layers.batch_norm = tf_slim.layers.batch_norm = inference_batch_norm

# net name -> (arg scope, network function, extra kwargs)
NETS = {
    "inception_v1": (inception_v1.inception_v1_arg_scope, inception_v1.inception_v1, {}),
    "inception_v2": (inception_v2.inception_v2_arg_scope, inception_v2.inception_v2, {}),
    "inception_v3": (inception_v3.inception_v3_arg_scope, inception_v3.inception_v3, {}),
    "resnet_v1_50": (resnet_v1.resnet_arg_scope, resnet_v1.resnet_v1_50, {}),
    "resnet_v1_101": (resnet_v1.resnet_arg_scope, resnet_v1.resnet_v1_101, {}),
    "resnet_v1_152": (resnet_v1.resnet_arg_scope, resnet_v1.resnet_v1_152, {}),
    "vgg_16": (vgg.vgg_arg_scope, vgg.vgg_16, {}),
}


def randomise(session, seed: int) -> None:
    """BN statistics and offsets away from their identity initial values, so a wrong mapping of
    any of them changes the logits."""
    rng = np.random.default_rng(seed)
    assigns, feeds = [], {}
    for variable in v1.global_variables():
        name, shape = variable.op.name, variable.shape.as_list()
        if name.endswith(("beta", "moving_mean")):
            value = rng.uniform(-0.2, 0.2, shape)
        elif name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("biases", "bias")):
            value = rng.uniform(-0.1, 0.1, shape)
        else:
            continue
        placeholder = v1.placeholder(tf.float32, shape)
        assigns.append(v1.assign(variable, placeholder))
        feeds[placeholder] = value.astype(np.float32)
    # One run: a run per variable (Variable.load) grows the graph each time and costs O(graph).
    session.run(assigns, feeds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--net", required=True, choices=sorted(NETS))
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--num_classes", type=int, default=1001)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arg_scope, network, kwargs = NETS[args.net]
    images = np.load(args.images).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(args.seed)
        inputs = v1.placeholder(tf.float32, [None, *images.shape[1:]])
        with tf_slim.arg_scope(arg_scope()):
            logits, end_points = network(
                inputs, num_classes=args.num_classes, is_training=False, **kwargs
            )
        logits = tf.reshape(logits, [-1, args.num_classes])
        fetch = {"logits": logits}
        if "AuxLogits" in end_points:
            fetch["aux_logits"] = tf.reshape(end_points["AuxLogits"], [-1, args.num_classes])
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            randomise(session, args.seed)
            os.makedirs(args.out_dir, exist_ok=True)
            v1.train.Saver().save(
                session, os.path.join(args.out_dir, "model.ckpt"), write_meta_graph=False
            )
            out = session.run(fetch, {inputs: images})
    np.savez(os.path.join(args.out_dir, "reference.npz"), **out)
    saved = len(graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES))
    print(f"{args.net}: saved {saved} variables, logits {out['logits'].shape}")


if __name__ == "__main__":
    main()
