"""Atomic file writes: readers see the old file or the new one, never a part, and an
interrupted or failed write leaves no temporary file (a light module: no OpenCV)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import temporaries


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``:
    readers see the old file or the new one, never a part. Creates missing parent
    folders; the file gets the usual permissions (0666 less the umask).

    Raises ``IFCNNError`` naming ``path`` when it cannot be written (a full disk, a
    read-only folder); the temporary file is removed then, and on Ctrl-C.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    temporaries.register(tmp)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise IFCNNError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        temporaries.remove(tmp)
    return path
