"""Reads a PyTorch `.pth` state dict into numpy arrays without importing torch.

A `.pth` file is pickled Python objects whose tensors point at raw storages by a persistent id.
Two layouts exist: the legacy one (torch < 1.6; a magic number, the pickled object, the list of
storage keys, then each storage as int64 element count + raw little-endian bytes) and the zip
one (torch >= 1.6; `<archive>/data.pkl` plus one file per storage under `<archive>/data/`). The
unpickler below maps torch's rebuild functions and storage classes onto numpy; anything else in
the pickle is refused, so a checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes are filled in after the object pickle (legacy layout)."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.array: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = (
            storage,
            offset,
            tuple(size),
            tuple(stride),
        )

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError("torch checkpoint: a tensor refers to a storage that was never read")
        if not self.size:
            return flat[self.offset].copy()
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage_source):
        super().__init__(file)
        self._storage_source = storage_source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"torch checkpoint: refusing to load {module}.{name} (only tensors and "
                f"OrderedDicts are expected in a state dict)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"torch checkpoint: unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self.storages:
            storage = _Storage(storage_type.dtype)
            if self._storage_source is not None:
                storage.array = self._storage_source(key, storage_type.dtype)
            self.storages[key] = storage
        return self.storages[key]


def _materialize(obj):
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    return obj


def _read_legacy(f) -> dict:
    # Every pickle in the file, header included, goes through the restricted unpickler: a plain
    # `pickle.load` of the header would run whatever a crafted file asks for.
    def header():
        return _Unpickler(f, storage_source=None).load()

    if header() != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    header()  # protocol version
    header()  # sys info
    unpickler = _Unpickler(f, storage_source=None)
    obj = unpickler.load()
    keys = header()
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        data = f.read(count * storage.dtype.itemsize)
        storage.array = np.frombuffer(data, dtype=storage.dtype.newbyteorder("<"), count=count)
    return _materialize(obj)


def _read_zip(path: str) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(
                f"{path}: expected one data.pkl in the zip checkpoint, found {pickles}"
            )
        root = pickles[0][: -len("data.pkl")]

        def source(key, dtype):
            return np.frombuffer(archive.read(f"{root}data/{key}"), dtype=dtype.newbyteorder("<"))

        obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), source).load()
        return _materialize(obj)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Returns the state dict in `path` as an OrderedDict of name -> numpy array."""
    try:
        if zipfile.is_zipfile(path):
            state = _read_zip(path)
        else:
            with open(path, "rb") as f:
                state = _read_legacy(f)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError) as error:
        raise ValueError(f"{path}: cannot read as a PyTorch state dict ({error})") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state
