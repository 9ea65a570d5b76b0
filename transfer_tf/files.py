"""File access for local paths and URLs alike, and the one atomic writer.

Local paths use plain file operations; URLs (gs://...) go through `tf.io.gfile`, imported only
then, so reading results never needs TensorFlow. Every file the package writes for a reader to
find (a sweep cell, a run's config.json, a manifest, a step marker, a model table) is written by
`atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: a reader sees either no file or
the whole file.
"""

from __future__ import annotations

import json
import os
import uuid


def is_url(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # Only for URLs: keeps local sweeps and results.load TF-free.

    return tf.io.gfile


def join(*parts: str) -> str:
    if is_url(parts[0]):
        return "/".join(p.rstrip("/") for p in parts)
    return os.path.join(*parts)


def dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1] if is_url(path) else os.path.basename(path)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_url(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def read_bytes(path: str) -> bytes:
    if is_url(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def listdir(path: str) -> list[str]:
    if is_url(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to a hidden temporary file beside `path`, then renames it into place.

    Temporary names start with "." and do not end in ".json", so `results.load` never mistakes
    one left by a kill for a cell.
    """
    path = os.fspath(path)
    tmp = join(dirname(path), f".{basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if is_url(path):
        gfile = _gfile()
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
        return
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, value, **dump_args) -> None:
    """`value` as JSON (with `dump_args` for json.dumps, e.g. indent=1), newline-terminated."""
    atomic_write_text(path, json.dumps(value, **dump_args) + "\n")
