"""ImageNet (ILSVRC-2012) class names in the standard class-index order, read from files that
tensorflow-datasets installs (no download): the synset ids of `imagenet2012/labels.txt` and
the human-readable names that the SI-Score dataset module ships for the same 1000 classes."""

from __future__ import annotations

import ast
import functools
import importlib.util
import os


def _tfds_file(*parts: str) -> str:
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ImageNet class names come from tensorflow-datasets; install it")
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"ImageNet labels: {path} is missing from tensorflow-datasets")
    return path


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """WordNet ids, e.g. 'n01440764' for class 0."""
    with open(_tfds_file("datasets", "imagenet2012", "labels.txt")) as f:
        synsets = tuple(line.strip() for line in f if line.strip())
    if len(synsets) != 1000:
        raise ValueError(f"imagenet2012/labels.txt: expected 1000 synsets, found {len(synsets)}")
    return synsets


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """Human-readable names, e.g. 'tench, Tinca tinca' for class 0 and 'tabby, tabby cat' for 281.

    Read as a literal from `tensorflow_datasets/datasets/siscore/labels.py`
    (`IMAGENET_LABELS_LIST`), without importing tensorflow-datasets.
    """
    path = _tfds_file("datasets", "siscore", "labels.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and getattr(node.targets[0], "id", None) == "IMAGENET_LABELS_LIST"
        ):
            names = tuple(ast.literal_eval(node.value))
            if len(names) != 1000:
                raise ValueError(f"{path}: expected 1000 ImageNet names, found {len(names)}")
            return names
    raise ValueError(f"{path}: IMAGENET_LABELS_LIST not found")
