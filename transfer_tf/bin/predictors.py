"""transfer-predictors: cheap transfer predictors on extracted features, as a sweep (issue 19).

  transfer-predictors --features_dir features/effnet_lite0/flowers102 --results_dir results \
      [--saved_model saved_models/effnet_lite0]

kNN (cosine, k chosen on val), few-shot ridge probes (1 / 5 / 10 / 25 shots, --fewshot_seeds
seeds), LogME, H-score and GBC from the features; LEEP and NCE also need the source model's
logits, read through --saved_model's serving_default signature on the records the features
manifest names (cached beside the features as source_logits.<split>.npz). Without --saved_model
the default list leaves LEEP and NCE out (and says so). One JSON per cell in <results_dir>/predictors/ (schema:
docs/DESIGN.md; which split each number is on: transfer_tf/protocols/predictor_sweep.py); a
rerun skips finished cells.
"""

import functools

from absl import flags

from transfer_tf.bin import cli, features_source
from transfer_tf.protocols import logreg as logreg_lib
from transfer_tf.protocols import predictor_sweep
from transfer_tf.protocols import predictors as predictors_lib

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "features_dir", None, "Output of transfer-extract-features: {train,val,test}.npz + manifest."
)
flags.DEFINE_string("results_dir", None, "Results root; cells go to <results_dir>/predictors/.")
flags.DEFINE_string(
    "saved_model",
    None,
    "The source model's SavedModel (transfer-export: serving_default -> logits), for LEEP / NCE.",
)
flags.DEFINE_list(
    "predictors",
    None,
    f"Which predictors (default: all that apply of {','.join(predictor_sweep.PREDICTORS)}; "
    "'fewshot' is every few-shot probe, fewshot_N N shots). LEEP and NCE need --saved_model; "
    "named predictors that cannot run are an error, the default skips them and says why.",
)
flags.DEFINE_string(
    "model_label", None, "The results' model label of the source; default the features manifest's."
)
cli.define_renamed_flag("model", "model_label", "the label in the results")
flags.DEFINE_string("architecture", None, "Registry architecture name of the source model.")
flags.DEFINE_string("settings", None, "Training-settings label of the source model.")
flags.DEFINE_string("dataset", None, "Dataset name; default the features manifest's.")
flags.DEFINE_string("metric", None, "The dataset's metric; default the manifest's.")
flags.DEFINE_integer(
    "fewshot_seeds", predictor_sweep.FEWSHOT_SEEDS, "Random draws of each few-shot probe."
)
flags.DEFINE_list("knn_k", [str(k) for k in predictors_lib.K_GRID], "k values tried on val.")
flags.DEFINE_integer("gbc_pca_dim", predictors_lib.GBC_PCA_DIM, "GBC's PCA dimension (0: none).")
flags.DEFINE_integer("batch_size", 64, "Images per call of serving_default (LEEP / NCE).")
flags.DEFINE_integer(
    "blas_threads",
    None,
    "Limit BLAS threads (threadpoolctl); 1 is much faster when several processes share few cores.",
)
flags.mark_flag_as_required("features_dir")
flags.mark_flag_as_required("results_dir")


def main(argv):
    del argv
    features_source.limit_blas_threads(FLAGS.blas_threads)
    _, model, dataset, metric = features_source.features_labels(
        FLAGS.features_dir, FLAGS.model_label, FLAGS.dataset, FLAGS.metric
    )
    try:
        k_grid = [int(k) for k in FLAGS.knn_k]
    except ValueError:
        raise ValueError(f"--knn_k must be integers, got {FLAGS.knn_k}") from None
    splits, inputs = features_source.load_splits(FLAGS.features_dir)
    source_logits = None
    if FLAGS.saved_model:
        source_logits = functools.partial(
            predictor_sweep.load_source_logits,
            FLAGS.saved_model,
            FLAGS.features_dir,
            batch_size=FLAGS.batch_size,
        )
    if FLAGS.saved_model:  # LEEP / NCE read its logits: another source computes them again
        inputs["saved_model"] = predictor_sweep.source_fingerprint(FLAGS.saved_model)
    records = predictor_sweep.run_predictors(
        splits,
        FLAGS.results_dir,
        model=model,
        dataset=dataset,
        metric=metric,
        architecture=FLAGS.architecture,
        settings=FLAGS.settings,
        predictors=FLAGS.predictors,
        source_logits=source_logits,
        fewshot_seeds=FLAGS.fewshot_seeds,
        k_grid=k_grid,
        gbc_pca_dim=FLAGS.gbc_pca_dim or None,
        test_ids=logreg_lib.load_ids(FLAGS.features_dir, "test"),
        inputs=inputs,
    )
    wall = sum(r["wall_time_s"] for r in records)
    print(f"predictors {model} {dataset}: {len(records)} cells, {wall:.1f} s in all")
    return 0


def run():
    cli.run("transfer-predictors", main)


if __name__ == "__main__":
    run()
