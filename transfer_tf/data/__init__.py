"""Datasets: the registry, TFRecord conversion, input pipelines.

from transfer_tf.data import DATASETS, get_dataset, write_tfrecords, make_input
write_tfrecords("sklearn_digits", "/tmp/records")             # -> {split: manifest}
ds = make_input("/tmp/records", "sklearn_digits", "train", image_size=224,
                preprocessing="inception", training=True, batch_size=32)
"""

from transfer_tf.data.registry import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    EmbeddedSource,
    Holdout,
    ManualSource,
    TfdsSource,
    get_dataset,
)
from transfer_tf.data.tfrecords import (
    CountMismatchError,
    RecordsNotFoundError,
    read_manifest,
    split_manifests,
    split_size,
    write_tfrecords,
)


def __getattr__(name):
    # `make_input` loads TensorFlow; the registry alone does not need it.
    if name == "make_input":
        from transfer_tf.data.pipeline import make_input

        return make_input
    raise AttributeError(f"module 'transfer_tf.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "SPLITS",
    "CountMismatchError",
    "DatasetSpec",
    "EmbeddedSource",
    "Holdout",
    "ManualSource",
    "RecordsNotFoundError",
    "TfdsSource",
    "get_dataset",
    "make_input",
    "read_manifest",
    "split_manifests",
    "split_size",
    "write_tfrecords",
]
