"""Atomic file writes: readers see the old file or the new one, never a part, and an
interrupted or failed write leaves no temporary file (a light module: no OpenCV)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import temporaries


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (``.NAME.XXXXXXXX.tmp`` in the same
    folder) for the caller to write; when the ``with`` block ends normally it is
    renamed over ``path``, so readers see the old file or the new one, never a part.
    Creates missing parent folders.

    On any exception (and on Ctrl-C, through ``temporaries``) the temporary file is
    removed and ``path`` is left as it was; an ``OSError`` (a full disk, a read-only
    folder) becomes an ``IFCNNError`` naming ``path``.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    temporaries.register(tmp)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise IFCNNError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        temporaries.remove(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``:
    readers see the old file or the new one, never a part. Creates missing parent
    folders; the file gets the usual permissions (0666 less the umask).

    Raises ``IFCNNError`` naming ``path`` when it cannot be written (a full disk, a
    read-only folder); the temporary file is removed then, and on Ctrl-C.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return path
