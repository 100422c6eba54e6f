"""Reading PyTorch state-dict files without PyTorch.

``ifcnn_jax.load("IFCNN-MAX.pth")`` uses this, so the released weights fuse images on
a machine without torch. Both of PyTorch's file layouts are understood: the legacy
one (a sequence of pickles followed by the raw storages; the authors' release uses
it) and the zip archive written since PyTorch 1.6 (``archive/data.pkl`` plus one
file per storage). Only plain tensors in (ordered) dicts are accepted: the unpickler
resolves a short allow-list of names and nothing else, so a file cannot run code.

The converter (``convert/from_torch.py``) still reads files with ``torch.load``; this
module is the torch-free path and is tested against it.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ifcnn_jax.errors import IFCNNError

# Bytes that open a legacy file: the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported tensor storage {name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_ignored) -> np.ndarray:
    if not size:
        return np.array(storage[offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a state dict")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unsupported storage type")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        return self._storages[key]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file into NumPy arrays (their own dtypes), without torch.

    Raises ``IFCNNError`` naming the file when it is missing or is not a state dict of
    plain tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise IFCNNError(f"{path}: no such file")
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile) as exc:
        raise IFCNNError(f"{path}: not a PyTorch state dict this reader understands "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise IFCNNError(f"{path}: not a state dict of tensors (found {type(obj).__name__})")
    return {str(k): v for k, v in obj.items()}


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)
    magic = pickle.load(stream)
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file (no magic number)")
    pickle.load(stream)  # protocol version
    sys_info = pickle.load(stream)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian files are not supported")
    pending: dict[str, tuple[np.dtype, int]] = {}

    def defer(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        # The raw bytes follow the object pickle; hand out placeholders filled below.
        array = np.empty(numel, dtype)
        pending[key] = (dtype, numel)
        return array

    unpickler = _StateDictUnpickler(stream, defer)
    # Tensors are rebuilt while unpickling, before the storages are read, so unpickle
    # twice: first to learn the storage keys and sizes, then with the data at hand.
    unpickler.load()
    keys = pickle.load(stream)
    offset = stream.tell()
    storages = {}
    for key in keys:
        dtype, numel = pending[str(key)]
        count = int(np.frombuffer(data, "<i8", 1, offset)[0])
        if count != numel:
            raise ValueError(f"storage {key} holds {count} elements, expected {numel}")
        offset += 8
        storages[str(key)] = np.frombuffer(data, dtype, numel, offset)
        offset += numel * dtype.itemsize
    stream = io.BytesIO(data)
    for _ in range(3):
        pickle.load(stream)
    return _StateDictUnpickler(stream, lambda key, dtype, numel: storages[key]).load()


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise pickle.UnpicklingError("zip file without data.pkl")
        root = pickles[0][: -len("data.pkl")]
        byteorder = f"{root}byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise pickle.UnpicklingError("big-endian files are not supported")

        def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            raw = archive.read(f"{root}data/{key}")
            return np.frombuffer(raw, dtype, numel)

        with archive.open(pickles[0]) as f:
            return _StateDictUnpickler(io.BytesIO(f.read()), load_storage).load()
