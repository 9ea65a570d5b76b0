"""Readers for manually downloaded datasets: the folder layouts the official archives unpack to.

Each reader takes the folder the user passed as --manual_dir and returns `ManualData`: class
names and, per source split, a list of `ManualItem`s (id, label, image file or a loader). The
layouts are documented in the registry entries (`DatasetSpec.source.layout`). Missing files give
`ManualDataError` naming them, the layout expected and where the data comes from.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


class ManualDataError(FileNotFoundError):
    """A manual-download folder is missing files or is laid out differently."""


@dataclasses.dataclass(frozen=True)
class ManualItem:
    id: str
    label: int | tuple[int, ...]
    path: Path  # the image file (or the first of several files a loader combines)
    load: Callable[[], bytes] | None = None  # bytes of an encoded image; default: read `path`

    def read(self) -> bytes:
        return self.load() if self.load is not None else self.path.read_bytes()


@dataclasses.dataclass(frozen=True)
class ManualData:
    class_names: tuple[str, ...]
    splits: dict[str, list[ManualItem]]


def _root(
    manual_dir: str | Path, dataset: str, marker: str, top: str, spec_layout: str, url: str
) -> Path:
    """The dataset folder: `manual_dir` itself or its child `top` (the archive's top folder)."""
    if manual_dir is None:
        raise ManualDataError(
            f"dataset {dataset!r} is a manual download: pass --manual_dir. Get it from {url}; "
            f"expected layout:\n{spec_layout}"
        )
    base = Path(manual_dir)
    for root in (base, base / top):
        if (root / marker).exists():
            return root
    raise ManualDataError(
        f"dataset {dataset!r}: {base} does not contain {marker} (nor {top}/{marker}). "
        f"Download it from {url} and unpack it; expected layout:\n{spec_layout}"
    )


def check_files(
    dataset: str, items: dict[str, list[ManualItem]], url: str, allow_missing: bool
) -> dict[str, list[str]]:
    """Raises naming the missing image files, or (allow_missing) drops and returns them."""
    missing = {s: [it for it in lst if not it.path.is_file()] for s, lst in items.items()}
    total = sum(len(m) for m in missing.values())
    if total and not allow_missing:
        names = [str(it.path) for m in missing.values() for it in m]
        raise ManualDataError(
            f"dataset {dataset!r}: {total} image file(s) listed by the annotations are missing, "
            f"e.g. {', '.join(names[:10])}. The data comes from {url}; re-download or unpack "
            "it completely (or pass --allow_missing to convert without them; the manifest "
            "records their ids)."
        )
    for split, lst in items.items():
        gone = {id(it) for it in missing[split]}
        lst[:] = [it for it in lst if id(it) not in gone]
    return {s: [it.id for it in m] for s, m in missing.items() if m}


def _require(dataset: str, root: Path, names: list[str], url: str, layout: str) -> None:
    missing = [str(root / n) for n in names if not (root / n).exists()]
    if missing:
        raise ManualDataError(
            f"dataset {dataset!r}: missing {', '.join(missing)}. Get the data from {url}; "
            f"expected layout:\n{layout}"
        )


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_birdsnap(manual_dir, url, layout) -> ManualData:
    root = _root(manual_dir, "birdsnap", "images.txt", "birdsnap", layout, url)
    _require("birdsnap", root, ["species.txt", "images.txt", "test_images.txt"], url, layout)
    species = _tsv(root / "species.txt")
    index = {int(s["id"]): i for i, s in enumerate(sorted(species, key=lambda s: int(s["id"])))}
    names = tuple(s["common"] for s in sorted(species, key=lambda s: int(s["id"])))
    test_paths = {
        line.strip()
        for line in (root / "test_images.txt").read_text().splitlines()[1:]
        if line.strip()
    }
    image_root = root / "download" / "images"
    if not image_root.is_dir() and (root / "images").is_dir():
        image_root = root / "images"
    splits: dict[str, list[ManualItem]] = {"train": [], "test": []}
    for row in _tsv(root / "images.txt"):
        item = ManualItem(row["path"], index[int(row["species_id"])], image_root / row["path"])
        splits["test" if row["path"] in test_paths else "train"].append(item)
    return ManualData(names, splits)


def read_fgvc_aircraft(manual_dir, url, layout) -> ManualData:
    root = _root(
        manual_dir, "fgvc_aircraft", "data/variants.txt", "fgvc-aircraft-2013b", layout, url
    )
    lists = {s: f"data/images_variant_{s}.txt" for s in ("train", "val", "test")}
    _require("fgvc_aircraft", root, list(lists.values()), url, layout)
    names = tuple(
        v.strip() for v in (root / "data/variants.txt").read_text().splitlines() if v.strip()
    )
    index = {n: i for i, n in enumerate(names)}
    splits = {}
    for split, rel in lists.items():
        items = []
        for line in (root / rel).read_text().splitlines():
            if not line.strip():
                continue
            image_id, variant = line.strip().split(" ", 1)
            if variant not in index:
                raise ManualDataError(
                    f"{root / rel}: variant {variant!r} is not in data/variants.txt"
                )
            items.append(
                ManualItem(image_id, index[variant], root / "data/images" / f"{image_id}.jpg")
            )
        splits[split] = items
    return ManualData(names, splits)


def _mat_annotations(path: Path) -> list[tuple[str, int]]:
    """(fname, 1-based class) pairs from a Stanford Cars devkit .mat annotation struct."""
    from scipy.io import loadmat

    annos = loadmat(path, squeeze_me=True)["annotations"]
    return [(str(a["fname"]), int(a["class"])) for a in np.atleast_1d(annos)]


def read_stanford_cars(manual_dir, url, layout) -> ManualData:
    from scipy.io import loadmat

    root = _root(manual_dir, "stanford_cars", "devkit/cars_meta.mat", "stanford_cars", layout, url)
    needed = [
        "cars_train",
        "cars_test",
        "devkit/cars_train_annos.mat",
        "cars_test_annos_withlabels.mat",
    ]
    _require("stanford_cars", root, needed, url, layout)
    names = tuple(
        str(n)
        for n in np.atleast_1d(
            loadmat(root / "devkit/cars_meta.mat", squeeze_me=True)["class_names"]
        )
    )
    splits = {}
    for split, annos, folder in (
        ("train", "devkit/cars_train_annos.mat", "cars_train"),
        ("test", "cars_test_annos_withlabels.mat", "cars_test"),
    ):
        splits[split] = [
            ManualItem(f"{folder}/{fname}", cls - 1, root / folder / fname)
            for fname, cls in _mat_annotations(root / annos)
        ]
    return ManualData(names, splits)


# CCT-20's 15 animal categories (ids in the COCO-style json); 30 = empty frames, dropped.
CCT20_CATEGORIES = (1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 33, 34, 51, 99)


def read_caltech_camera_traps(manual_dir, url, layout) -> ManualData:
    ann_dir = "eccv_18_annotation_files"
    root = _root(manual_dir, "caltech_camera_traps", ann_dir, "CCT-20", layout, url)
    files = {s: f"{ann_dir}/{s}_annotations.json" for s in ("train", "cis_val", "cis_test")}
    _require("caltech_camera_traps", root, list(files.values()), url, layout)
    index = {c: i for i, c in enumerate(CCT20_CATEGORIES)}
    names = [str(c) for c in CCT20_CATEGORIES]
    splits = {}
    for split, rel in files.items():
        data = json.loads((root / rel).read_text())
        for cat in data.get("categories", []):
            if cat["id"] in index:
                names[index[cat["id"]]] = cat["name"]
        splits[split] = [
            ManualItem(
                a["image_id"],
                index[a["category_id"]],
                root / "eccv_18_all_images_sm" / f"{a['image_id']}.jpg",
            )
            for a in data["annotations"]
            if a["category_id"] in index
        ]
    return ManualData(tuple(names), splits)


def read_aptos2019(manual_dir, url, layout) -> ManualData:
    root = _root(manual_dir, "aptos2019", "train.csv", "aptos2019-blindness-detection", layout, url)
    _require("aptos2019", root, ["train_images"], url, layout)
    items = [
        ManualItem(r["id_code"], int(r["diagnosis"]), root / "train_images" / f"{r['id_code']}.png")
        for r in _csv(root / "train.csv")
    ]
    names = ("no DR", "mild", "moderate", "severe", "proliferative DR")
    return ManualData(names, {"train": items})


HPA_CLASSES = 28


def _hpa_rgb(base: Path) -> bytes:
    """One RGB PNG from the red / green / blue stain images (8-bit grayscale PNGs)."""
    from PIL import Image

    channels = [
        np.asarray(Image.open(f"{base}_{c}.png").convert("L")) for c in ("red", "green", "blue")
    ]
    buf = io.BytesIO()
    Image.fromarray(np.stack(channels, axis=-1)).save(buf, format="PNG")
    return buf.getvalue()


def read_human_protein_atlas(manual_dir, url, layout) -> ManualData:
    root = _root(
        manual_dir,
        "human_protein_atlas",
        "train.csv",
        "human-protein-atlas-image-classification",
        layout,
        url,
    )
    _require("human_protein_atlas", root, ["train"], url, layout)
    items = []
    for r in _csv(root / "train.csv"):
        labels = tuple(sorted({int(t) for t in r["Target"].split()}))
        base = root / "train" / r["Id"]
        items.append(
            ManualItem(
                r["Id"], labels, Path(f"{base}_red.png"), load=lambda base=base: _hpa_rgb(base)
            )
        )
    missing_channels = [
        f"{it.path.parent / it.id}_{c}.png"
        for it in items
        if it.path.is_file()
        for c in ("green", "blue")
        if not Path(f"{it.path.parent / it.id}_{c}.png").is_file()
    ]
    if missing_channels:
        raise ManualDataError(
            f"dataset 'human_protein_atlas': missing stain images {', '.join(missing_channels[:10])}"
            f" ({len(missing_channels)} in all). Get the data from {url}."
        )
    return ManualData(tuple(f"class_{i}" for i in range(HPA_CLASSES)), {"train": items})


def read_siim_isic(manual_dir, url, layout) -> ManualData:
    root = _root(manual_dir, "siim_isic", "train.csv", "jpeg-melanoma-512x512", layout, url)
    _require("siim_isic", root, ["train"], url, layout)
    rows = _csv(root / "train.csv")
    if rows and "tfrecord" not in rows[0]:
        raise ManualDataError(
            f"{root / 'train.csv'} has no 'tfrecord' fold column: use the re-packaged data from {url}"
        )
    # Fang et al.: np.random.seed(23); 80% of the (patient-disjoint) folds train, the rest test.
    folds = sorted({int(r["tfrecord"]) for r in rows if int(r["tfrecord"]) >= 0})
    train_folds = set(
        np.random.RandomState(23).choice(folds, int(0.8 * len(folds)), replace=False).tolist()
    )
    splits: dict[str, list[ManualItem]] = {"train": [], "test": []}
    for r in rows:
        fold = int(r["tfrecord"])
        if fold < 0:
            continue
        item = ManualItem(
            r["image_name"], int(r["target"]), root / "train" / f"{r['image_name']}.jpg"
        )
        splits["train" if fold in train_folds else "test"].append(item)
    return ManualData(("benign", "malignant"), splits)


READERS = {
    "birdsnap": read_birdsnap,
    "fgvc_aircraft": read_fgvc_aircraft,
    "stanford_cars": read_stanford_cars,
    "caltech_camera_traps": read_caltech_camera_traps,
    "aptos2019": read_aptos2019,
    "human_protein_atlas": read_human_protein_atlas,
    "siim_isic": read_siim_isic,
}
