"""A CSV file as a dataset: one row per image.

Columns (a header row names them; others are ignored):
  path    the image file, relative to the CSV's folder (or absolute);
  label   its class (single-label data), or
  labels  its classes separated by "|" (multi-label data; empty = no class present);
  split   optional: train, val or test on every row (the user's splits; a missing val / test
          is drawn from train as `make_user_dataset` says).
The file is read as UTF-8 (a byte-order mark, as spreadsheets write it, is allowed). Example ids
are the paths as written.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from transfer_tf.data.registry import SPLITS
from transfer_tf.data.user_spec import UserDataError, UserItem, UserListing, safe_id

LABEL_SEPARATOR = "|"


def _labels(row: dict, multi_label: bool, where: str) -> tuple[str, ...]:
    if multi_label:
        parts = [p.strip() for p in (row["labels"] or "").split(LABEL_SEPARATOR)]
        return tuple(sorted({p for p in parts if p}))
    label = (row["label"] or "").strip()
    if not label:
        raise UserDataError(f"{where}: the label is empty")
    return (label,)


def read_csv(path) -> UserListing:
    """The rows of a CSV file (no image is read); raises `UserDataError` naming the line."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise UserDataError(f"--csv={path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        if "path" not in columns or ("label" in columns) == ("labels" in columns):
            raise UserDataError(
                f"{path}: the header is {columns}; a dataset CSV has a 'path' column and either "
                "'label' (one class per image) or 'labels' (classes separated by '|'), and "
                "optionally 'split' (train / val / test)"
            )
        multi_label = "labels" in columns
        has_split = "split" in columns
        items, first_line = [], {}
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row:
                raise UserDataError(f"{where}: more fields than the header has")
            name = (row["path"] or "").strip()
            if not name:
                raise UserDataError(f"{where}: the path is empty")
            file = Path(os.path.normpath(path.parent / name))
            if file in first_line:
                raise UserDataError(
                    f"{where}: {name!r} is listed twice (first on line {first_line[file]}); "
                    "each image must appear once (multi-label data: one row with 'labels')"
                )
            first_line[file] = reader.line_num
            if not file.is_file():
                raise UserDataError(
                    f"{where}: image {name!r} does not exist ({file}); paths are relative to the "
                    "CSV's folder"
                )
            split = "all"
            if has_split:
                split = (row["split"] or "").strip()
                if split not in SPLITS:
                    raise UserDataError(
                        f"{where}: split {split!r}; the split column takes train, val or test"
                    )
            items.append(UserItem(safe_id(name), file, _labels(row, multi_label, where), split))
    if not items:
        raise UserDataError(f"{path} has a header but no rows")
    layout = "csv_splits" if has_split else "csv"
    return UserListing(layout, str(path), tuple(items), multi_label=multi_label)
