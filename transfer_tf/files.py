"""File access for local paths and URLs alike, and the one atomic writer.

Local paths use plain file operations; URLs (gs://...) go through `tf.io.gfile`, imported only
then, so reading results never needs TensorFlow. Every file the package writes for a reader to
find (a sweep cell, a run's config.json, a manifest, a step marker, a model table) is written by
`atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: a reader sees either no file or
the whole file. `exclusive_lock` keeps two runs out of one study folder or one sweep cell.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
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


def remove(path: str) -> None:
    """Deletes the file at `path`."""
    if is_url(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def move_tree(src: str, dst: str) -> None:
    """Moves the folder `src` to `dst`: one rename locally; under a URL (object stores have no
    folders to rename) file by file, then `src` is removed. Not atomic under a URL."""
    if not is_url(src):
        os.rename(src, dst)
        return
    gfile = _gfile()
    for folder, _, names in gfile.walk(src):
        target = dst + folder[len(src.rstrip("/")) :]
        gfile.makedirs(target)
        for name in names:
            if gfile.exists(join(folder, name)):  # ram:// lists by prefix: skip what is not
                gfile.rename(join(folder, name), join(target, name), overwrite=False)
    try:
        gfile.rmtree(src)  # what is left: empty folders, where a store has them
    except _tf_errors().NotFoundError:
        pass  # object stores: no objects, no folder


def _tf_errors():
    import tensorflow as tf  # Only for URLs, as `_gfile`.

    return tf.errors


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


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (local or URL), read in chunks."""
    digest = hashlib.sha256()
    opener = _gfile().GFile if is_url(path) else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class BusyError(RuntimeError):
    """Another process holds the lock of a folder or a sweep cell."""


@contextlib.contextmanager
def exclusive_lock(path: str, what: str, fix: str):
    """Holds an exclusive, non-blocking `flock` on `path` (created, with its parent) while the
    block runs; another holder makes it raise `BusyError` naming `what`, the holder's pid and
    `fix`. The kernel drops the lock when its process dies, even by SIGKILL, so a killed run
    never leaves a stale lock. URLs are not locked (object stores have no flock)."""
    if is_url(path):
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise BusyError(f"{what} is in use by another process ({holder}); {fix}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
