"""One interface over the three kinds of source: tensorflow-datasets, manual folders, embedded.

`open_source(spec, ...)` returns `SourceData`: class names and, per source split, the example
ids and labels (known before any image is read, so splits can be drawn first) and a `read`
function that yields `(index, encoded image bytes)` for chosen indices.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from transfer_tf.data import embedded, manual
from transfer_tf.data.registry import DatasetSpec, EmbeddedSource, ManualSource, TfdsSource

Label = int | tuple[int, ...]


@dataclasses.dataclass
class SourceSplit:
    ids: list[str]
    labels: list[Label]
    # Yields (index, bytes) for `indices`: in the given order when `random_access`, otherwise in
    # increasing index order (a stream that can only be read front to back).
    read: Callable[[Sequence[int]], Iterator[tuple[int, bytes]]]
    random_access: bool
    origin: Callable[[int], str]  # where example i comes from, for error messages


@dataclasses.dataclass
class SourceData:
    class_names: tuple[str, ...]
    splits: dict[str, SourceSplit]
    description: dict
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)


class SourceNotReadyError(FileNotFoundError):
    """A tensorflow-datasets dataset is not prepared in --data_dir."""


# ---- tensorflow-datasets ----------------------------------------------------------------------


def _tfds_class_names(feature) -> tuple[str, ...]:
    # ClassLabel, or Sequence(ClassLabel) for multi-label sets.
    inner = getattr(feature, "feature", feature)
    return tuple(inner.names)


def _open_tfds(
    spec: DatasetSpec, src: TfdsSource, *, data_dir, manual_dir, download, **_
) -> SourceData:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(src.builder, data_dir=data_dir)
    if download:
        if src.manual_download and manual_dir is None:
            raise SourceNotReadyError(
                f"dataset {spec.name!r}: tfds builder {src.builder!r} needs the archives in "
                f"--manual_dir. {spec.notes}"
            )
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    class_names = _tfds_class_names(builder.info.features[src.label_key])

    def as_dataset(split):
        try:
            return builder.as_dataset(
                split=split,
                shuffle_files=False,
                decoders={src.image_key: tfds.decode.SkipDecoding()},
                read_config=tfds.ReadConfig(interleave_cycle_length=1),
            )
        except (AssertionError, tfds.core.registered.DatasetNotFoundError, FileNotFoundError) as e:
            raise SourceNotReadyError(
                f"dataset {spec.name!r}: tensorflow-datasets {src.builder!r} is not prepared in "
                f"data_dir={data_dir or '~/tensorflow_datasets'} ({e}). Pass --data_dir where it "
                "was prepared, or --download to let tfds fetch and prepare it"
                + (" (with --manual_dir holding the archives)" if src.manual_download else "")
                + "."
            ) from e

    keys = tuple(k for k in (src.label_key, src.id_key) if k is not None)
    splits = {}
    for split in spec.source_splits:
        ds = as_dataset(split)
        ids, labels = [], []
        for i, row in enumerate(ds.map(lambda ex: {k: ex[k] for k in keys}).as_numpy_iterator()):
            label = row[src.label_key]
            labels.append(
                tuple(sorted({int(v) for v in np.ravel(label)})) if spec.multi_label else int(label)
            )
            ids.append(row[src.id_key].decode() if src.id_key else f"{split}/{i:07d}")

        def read(indices, split=split, ids=ids):
            mask = np.zeros(len(ids), bool)
            mask[np.asarray(indices, np.int64)] = True
            keep = tf.constant(mask)
            ds = as_dataset(split).enumerate().filter(lambda i, ex: keep[i])
            for i, image in ds.map(lambda i, ex: (i, ex[src.image_key])).as_numpy_iterator():
                yield int(i), bytes(image)

        splits[split] = SourceSplit(
            ids,
            labels,
            read,
            random_access=False,
            origin=lambda i, split=split, ids=ids: f"tfds {src.builder}[{split}] example {ids[i]}",
        )
    return SourceData(
        class_names,
        splits,
        {"kind": "tfds", "builder": src.builder, "data_dir": str(data_dir) if data_dir else None},
    )


# ---- manual folders ---------------------------------------------------------------------------


def _open_manual(
    spec: DatasetSpec, src: ManualSource, *, manual_dir, allow_missing, **_
) -> SourceData:
    data = manual.READERS[src.reader](manual_dir, src.url, src.layout)
    missing = manual.check_files(spec.name, data.splits, src.url, allow_missing)
    splits = {}
    for split, items in data.splits.items():

        def read(indices, items=items):
            for i in indices:
                yield int(i), items[i].read()

        splits[split] = SourceSplit(
            [it.id for it in items],
            [it.label for it in items],
            read,
            random_access=True,
            origin=lambda i, items=items: str(items[i].path),
        )
    return SourceData(
        data.class_names,
        splits,
        {"kind": "manual", "reader": src.reader, "manual_dir": str(manual_dir)},
        missing,
    )


# ---- embedded ----------------------------------------------------------------------------------


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _open_embedded(spec: DatasetSpec, src: EmbeddedSource, **_) -> SourceData:
    data = embedded.LOADERS[src.loader]()
    splits = {}
    for split, images in data.images.items():

        def read(indices, images=images):
            for i in indices:
                yield int(i), encode_png(images[i])

        splits[split] = SourceSplit(
            list(data.ids[split]),
            [int(v) for v in data.labels[split]],
            read,
            random_access=True,
            origin=lambda i, split=split: f"{src.package} [{split}] #{i}",
        )
    return SourceData(data.class_names, splits, {"kind": "embedded", "package": src.package})


_OPENERS = {
    TfdsSource: _open_tfds,
    ManualSource: _open_manual,
    EmbeddedSource: _open_embedded,
}


def open_source(
    spec: DatasetSpec, *, data_dir=None, manual_dir=None, download=False, allow_missing=False
) -> SourceData:
    """The source of a registry entry, its splits indexed (ids and labels) but no image read."""
    options = dict(
        data_dir=data_dir, manual_dir=manual_dir, download=download, allow_missing=allow_missing
    )
    data = _OPENERS[type(spec.source)](spec, spec.source, **options)
    absent = [s for s in spec.source_splits if s not in data.splits]
    if absent:
        raise ValueError(
            f"dataset {spec.name!r}: source has no split(s) {absent}; it has {sorted(data.splits)}"
        )
    if len(data.class_names) != spec.num_classes:
        raise ValueError(
            f"dataset {spec.name!r}: the source has {len(data.class_names)} classes, "
            f"the registry says {spec.num_classes}"
        )
    return data
