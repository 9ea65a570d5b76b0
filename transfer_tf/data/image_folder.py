"""An image folder as a dataset: `ROOT/<class>/<image>` or `ROOT/{train,val,test}/<class>/<image>`.

The conventions of torchvision's `ImageFolder` and Keras' `image_dataset_from_directory`: a
folder per class, its name the class name (Unicode, normalised to NFC so that a folder written
on macOS and one written on Linux are the same class); images anywhere below it, subfolders
included, in sorted path order. With split folders, `train/` must exist; `val/` and `test/` are
optional (a missing one is a fixed-seed holdout of train, `make_user_dataset`).

Every non-hidden file below a class folder is an image: a text file there is an error, not
skipped, so nothing drops out silently. Hidden files and folders (a name starting with ".",
e.g. macOS' `.DS_Store`) are not data and are not read. Example ids are the paths relative to
ROOT (`cat/001.jpg`, `train/cat/001.jpg`).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from transfer_tf.data.registry import SPLITS
from transfer_tf.data.user_spec import UserDataError, UserItem, UserListing, safe_id


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_below(folder: Path) -> list[Path]:
    found = []
    for entry in _visible(folder):
        if entry.is_dir():
            found.extend(_images_below(entry))
        else:
            found.append(entry)
    return found


def _class_items(root: Path, folder: Path, split: str) -> list[UserItem]:
    """Every image below the class folders of `folder` (ROOT or ROOT/<split>)."""
    entries = _visible(folder)
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise UserDataError(
            f"{stray[0]} is a file where class folders are expected: an image folder is "
            f"{folder}/<class>/<image> (move it into its class folder or out of {folder})"
        )
    items = []
    for class_dir in entries:
        images = _images_below(class_dir)
        if not images:
            raise UserDataError(
                f"class folder {class_dir} is empty: every class needs images (delete the folder "
                "if the class does not belong to the dataset)"
            )
        label = unicodedata.normalize("NFC", class_dir.name)
        items.extend(
            UserItem(safe_id(p.relative_to(root).as_posix()), p, (label,), split) for p in images
        )
    return items


def scan_image_folder(root) -> UserListing:
    """The images of an image folder with their class names and splits (no image is read).

    Raises `UserDataError` naming the folder or file that breaks the layout.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise UserDataError(f"--image_folder={root} is not a folder")
    entries = _visible(root)
    if not entries:
        raise UserDataError(f"--image_folder={root} is empty: expected {root}/<class>/<image>")
    split_dirs = [p for p in entries if p.is_dir() and p.name in SPLITS]
    if split_dirs:
        others = [p.name for p in entries if p not in split_dirs]
        if others or "train" not in {p.name for p in split_dirs}:
            raise UserDataError(
                f"--image_folder={root} mixes split folders "
                f"({', '.join(p.name for p in split_dirs)}) with {others or 'no train folder'}: "
                f"use {root}/<class>/<image>, or {root}/train/<class>/<image> with optional "
                "val/ and test/ beside train/"
            )
        items = [it for d in split_dirs for it in _class_items(root, d, d.name)]
        return UserListing("split_folders", str(root), tuple(items), multi_label=False)
    items = _class_items(root, root, "all")
    return UserListing("class_folders", str(root), tuple(items), multi_label=False)
