"""transfer-logreg: the logistic-regression protocol (Sec. 4.1) on extracted features, as a sweep.

  transfer-logreg --features_dir features/effnet_lite0/flowers102 --results_dir results

Fits L2-regularised logistic regression by L-BFGS for every λ of the grid on train, chooses λ on
val with the dataset's metric, refits on train+val and scores test. Writes one JSON per cell to
<results_dir>/logreg/ (see docs/DESIGN.md, "The result schema"); a rerun skips finished cells.
"""

import sys

from absl import flags

from transfer_tf.bin import cli, features_source
from transfer_tf.protocols import logreg as logreg_lib

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "features_dir",
    None,
    "Output of transfer-extract-features: {train,val,test}.npz + manifest.json.",
)
flags.DEFINE_string("results_dir", None, "Sweep results root; cells go to <results_dir>/logreg/.")
flags.DEFINE_string(
    "model_label", None, "The results' model label of the source; default the features manifest's."
)
cli.define_renamed_flag("model", "model_label", "the label in the results")
flags.DEFINE_string("architecture", None, "Registry architecture name of the source model.")
flags.DEFINE_string(
    "settings",
    None,
    "Training-settings label of the source model (fair, inception_default, public, ...).",
)
flags.DEFINE_string("dataset", None, "Dataset name; default the features manifest's.")
flags.DEFINE_string(
    "metric", None, "top1, mean_per_class or map11; default the dataset's (manifest)."
)
flags.DEFINE_integer(
    "num_l2", logreg_lib.NUM_L2, "Number of log-spaced regularisation strengths λ.", lower_bound=1
)
flags.DEFINE_float("l2_min", logreg_lib.L2_MIN, "Weakest λ (objective: mean loss + λ/2 ‖W‖²).")
flags.DEFINE_float("l2_max", logreg_lib.L2_MAX, "Strongest λ.")
flags.DEFINE_integer(
    "per_class",
    None,
    "Train on a class-balanced random subset of N examples per class (Fig. 9).",
    lower_bound=1,
)
flags.DEFINE_integer("seed", 0, "Seed of the --per_class subset.")
flags.DEFINE_float("tol", 1e-6, "L-BFGS stops when the gradient norm is below this.")
flags.register_validator("tol", lambda v: v > 0, message="--tol must be positive")
flags.DEFINE_integer("max_iter", 1000, "L-BFGS iterations per fit.", lower_bound=1)
flags.DEFINE_enum(
    "backend",
    "numpy",
    ["numpy", "tensorflow"],
    "Who computes the passes over the training set: numpy (BLAS, CPU) or tensorflow (a GPU when "
    "one is visible, else the CPU). Same solver, same objective and stopping test.",
)
flags.DEFINE_integer(
    "blas_threads",
    None,
    "Limit BLAS threads (threadpoolctl); 1 is much faster when several processes share few cores.",
    lower_bound=1,
)
flags.mark_flag_as_required("features_dir")
flags.mark_flag_as_required("results_dir")


def main(argv):
    del argv
    features_source.limit_blas_threads(FLAGS.blas_threads)
    try:
        _, model, dataset, metric = features_source.features_labels(
            FLAGS.features_dir, FLAGS.model_label, FLAGS.dataset, FLAGS.metric
        )
        splits, inputs = features_source.load_splits(FLAGS.features_dir)
        final = logreg_lib.run_logreg(
            splits,
            FLAGS.results_dir,
            model=model,
            dataset=dataset,
            metric=metric,
            architecture=FLAGS.architecture,
            settings=FLAGS.settings,
            l2s=logreg_lib.l2_grid(FLAGS.num_l2, FLAGS.l2_min, FLAGS.l2_max),
            per_class=FLAGS.per_class,
            seed=FLAGS.seed,
            tol=FLAGS.tol,
            max_iter=FLAGS.max_iter,
            test_ids=logreg_lib.load_ids(FLAGS.features_dir, "test"),
            backend=FLAGS.backend,
            inputs=inputs,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"transfer-logreg: error: {e}", file=sys.stderr)
        return 1
    hp = final["hparams"]
    print(
        f"logreg {model} {dataset}: λ={hp['l2']:.3g} (C={hp['C']:.3g}), test {metric} = {final['test_metric']:.4f}"
    )
    return 0


def run():
    cli.run("transfer-logreg", main)


if __name__ == "__main__":
    run()
