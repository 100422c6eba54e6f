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
import math
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

# The largest uncompressed zip member (one storage) read; ResNet-101's largest is 9 MB.
MAX_MEMBER_BYTES = 1 << 31

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
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
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported tensor storage {name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _as_index_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of integers")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored) -> np.ndarray:
    """A copy of the view ``storage[offset + sum(i_k * stride_k)]``, checked to lie inside
    the storage (so no crafted view reaches memory the file does not hold)."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor without a storage")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset {offset!r} is not a non-negative integer")
    size, stride = _as_index_tuple(size, "size"), _as_index_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"negative tensor size or stride ({size}, {stride})")
    count = math.prod(size)
    if count == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor view (offset {offset}, size {size}, stride {stride}) "
            f"reaches past its storage of {storage.size} elements"
        )
    if count > storage.size:
        raise pickle.UnpicklingError(
            f"tensor of {count} elements is larger than its storage of {storage.size}"
        )
    if not size:
        return np.array(storage[offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, lists, dicts): the legacy header records."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a PyTorch file header")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("unexpected persistent id in a PyTorch file header")


def _load_plain(stream: io.BytesIO) -> Any:
    return _PlainUnpickler(stream).load()


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage, max_bytes: int):
        super().__init__(file)
        self._load_storage = load_storage
        self._max_bytes = max_bytes
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
        # ("storage", type, key, location, numel), plus view metadata (None) in legacy files.
        if len(pid) not in (5, 6) or (len(pid) == 6 and pid[5] is not None):
            raise pickle.UnpicklingError(f"unsupported storage record of {len(pid)} fields")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unsupported storage type")
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise pickle.UnpicklingError(f"storage key {key!r} is not a string")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise pickle.UnpicklingError(f"storage size {numel!r} is not a non-negative integer")
        dtype, key = storage_type.dtype, str(key)
        if numel * dtype.itemsize > self._max_bytes:
            raise pickle.UnpicklingError(
                f"storage {key} declares {numel * dtype.itemsize} bytes, more than the file holds"
            )
        if key in self._storages:
            known = self._storages[key]
            if known.dtype != dtype or known.size != numel:
                raise pickle.UnpicklingError(f"storage {key} is used with two types or sizes")
        else:
            self._storages[key] = self._load_storage(key, dtype, numel)
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
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed input, whatever it trips over
        detail = " ".join(str(exc).split())[:120]
        raise IFCNNError(
            f"{path}: not a PyTorch state dict this reader understands ({type(exc).__name__}: {detail})"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise IFCNNError(f"{path}: not a state dict of tensors (found {type(obj).__name__})")
    return {str(k): v for k, v in obj.items()}


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)
    magic = _load_plain(stream)
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file (no magic number)")
    _load_plain(stream)  # protocol version
    sys_info = _load_plain(stream)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian files are not supported")
    pending: dict[str, tuple[np.dtype, int]] = {}

    def defer(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        # The raw bytes follow the object pickle; hand out placeholders filled below.
        array = np.empty(numel, dtype)
        pending[key] = (dtype, numel)
        return array

    unpickler = _StateDictUnpickler(stream, defer, len(data))
    # Tensors are rebuilt while unpickling, before the storages are read, so unpickle
    # twice: first to learn the storage keys and sizes, then with the data at hand.
    unpickler.load()
    keys = _load_plain(stream)
    if not isinstance(keys, list) or set(map(str, keys)) != set(pending):
        raise pickle.UnpicklingError("storage key list does not match the tensors")
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
        _load_plain(stream)
    return _StateDictUnpickler(stream, lambda key, dtype, numel: storages[key], len(data)).load()


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
            info = _member(archive, f"{root}data/{key}")
            if info.file_size < numel * dtype.itemsize:
                raise pickle.UnpicklingError(
                    f"storage {key} holds {info.file_size} bytes, expected {numel * dtype.itemsize}"
                )
            with archive.open(info) as member:
                raw = member.read(numel * dtype.itemsize)
            return np.frombuffer(raw, dtype, numel)

        info = _member(archive, pickles[0])
        with archive.open(info) as f:
            return _StateDictUnpickler(
                io.BytesIO(f.read(MAX_MEMBER_BYTES)), load_storage, MAX_MEMBER_BYTES
            ).load()


def _member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The archive member ``name``, refused when it would inflate beyond reason (PyTorch
    stores members uncompressed; a deflated one may grow at most 100-fold)."""
    info = archive.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES or (
        info.compress_type != zipfile.ZIP_STORED and info.file_size > 100 * info.compress_size + 4096
    ):
        raise pickle.UnpicklingError(
            f"{name} declares {info.file_size} bytes uncompressed from {info.compress_size}"
        )
    return info
