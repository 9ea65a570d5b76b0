"""A full check of written TFRecords: shard checksums, record counts, every image decodes."""

from __future__ import annotations

from pathlib import Path

from transfer_tf.data.tfrecords import CorruptRecordsError, _sha256, read_manifest

__all__ = ["CorruptRecordsError", "verify_records"]


def verify_records(records_dir, dataset: str, split: str, *, decode: bool = True) -> int:
    """Checks one split against its manifest; returns the number of examples checked.

    Raises `CorruptRecordsError` naming the shard and the record (number and id).
    """
    import tensorflow as tf

    manifest = read_manifest(records_dir, dataset, split)
    folder = Path(records_dir) / dataset
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    checked = 0
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            raise CorruptRecordsError(f"shard {path} listed in the manifest does not exist")
        if _sha256(path) != shard["sha256"]:
            raise CorruptRecordsError(
                f"shard {path}: sha256 differs from the manifest (the file changed or is "
                "corrupt); re-create the records with transfer-make-tfrecords"
            )
        index, last_id = 0, None
        iterator = iter(tf.data.TFRecordDataset(str(path)))
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise CorruptRecordsError(
                    f"shard {path}: record number {index} (after id {last_id!r}) cannot be read: "
                    f"{e.message}"
                ) from None
            example = tf.io.parse_single_example(record, features)
            last_id = example["image/id"].numpy().decode()
            if decode:
                try:
                    tf.io.decode_image(
                        example["image/encoded"], channels=3, expand_animations=False
                    )
                except tf.errors.OpError as e:
                    raise CorruptRecordsError(
                        f"shard {path}: record number {index}, id {last_id!r}: the image does not "
                        f"decode ({e.message.splitlines()[-1]})"
                    ) from None
            index += 1
        if index != shard["num_examples"]:
            raise CorruptRecordsError(
                f"shard {path}: {index} records, the manifest says {shard['num_examples']}"
            )
        checked += index
    return checked
