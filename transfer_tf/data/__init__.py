"""Datasets: the registry, TFRecord conversion, input pipelines.

from transfer_tf.data import DATASETS, get_dataset, write_tfrecords, make_input
write_tfrecords("sklearn_digits", "/tmp/records")             # -> {split: manifest}
ds = make_input("/tmp/records", "sklearn_digits", "train", image_size=224,
                preprocessing="inception", training=True, batch_size=32)

Your own data (an image folder or a CSV), found later by name in its records folder:
make_user_dataset("my_photos", "/tmp/records", scan_image_folder("photos/"))
get_dataset("my_photos", records_dir="/tmp/records")
"""

from transfer_tf.data.csv_source import read_csv
from transfer_tf.data.image_folder import scan_image_folder
from transfer_tf.data.registry import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    EmbeddedSource,
    Holdout,
    ManualSource,
    TfdsSource,
    UserSource,
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
from transfer_tf.data.user_spec import UserDataError, make_user_dataset


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
    "UserDataError",
    "UserSource",
    "get_dataset",
    "make_input",
    "make_user_dataset",
    "read_csv",
    "read_manifest",
    "scan_image_folder",
    "split_manifests",
    "split_size",
    "write_tfrecords",
]
