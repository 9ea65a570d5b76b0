"""What transfer-logreg and transfer-predictors share: the labels of a features folder (flags
first, else its manifest) and the BLAS thread limit for processes that share few cores."""

from __future__ import annotations

from transfer_tf.protocols import logreg as logreg_lib


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
