"""What transfer-logreg and transfer-predictors share: the labels of a features folder (flags
first, else its manifest) and the BLAS thread limit for processes that share few cores."""

from __future__ import annotations

from transfer_tf.protocols import logreg as logreg_lib
from transfer_tf.protocols import sweep

SPLITS = ("train", "val", "test")


def limit_blas_threads(threads: int | None) -> None:
    if threads:
        import threadpoolctl  # installed with scikit-learn; only needed when limiting

        threadpoolctl.threadpool_limits(threads)


def features_labels(features_dir: str, model=None, dataset=None, metric=None):
    """(manifest, model, dataset, metric): each flag value, else the features manifest's; a value
    neither gives is a ValueError naming the flag and the file."""
    manifest = logreg_lib.load_manifest(features_dir)
    model = model or manifest.get("model")
    dataset = dataset or manifest.get("dataset")
    metric = metric or manifest.get("metric")
    for name, value in (("model_label", model), ("dataset", dataset), ("metric", metric)):
        if value is None:
            raise ValueError(
                f"--{name} is not set and {features_dir}/manifest.json does not say it"
            )
    return manifest, model, dataset, metric


def load_splits(features_dir: str) -> tuple[dict, dict[str, str]]:
    """({split: (features, labels)} of train, val and test; the `inputs` fingerprints of their
    files): what every cell is computed from, so a rerun on other features computes it again."""
    splits = {s: logreg_lib.load_features(features_dir, s) for s in SPLITS}
    inputs = sweep.file_fingerprints(
        {f"{s}.npz": sweep.join(features_dir, f"{s}.npz") for s in SPLITS}
    )
    return splits, inputs
