"""Weights shipped inside the package: one ``.npz`` file per model, read without pickle.

A file holds every array of the parameter tree under its ``/``-joined path
(``conv2/bn/scale``) and the model's JSON metadata under ``__metadata__``. NumPy reads
it with ``allow_pickle=False``, so a file cannot run code. ``ifcnn_jax.load`` and
``--model`` take a shipped model by name (``ifcnn-jax-mf``), or any such file by path.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ifcnn_jax import param_trees
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.atomic import write_bytes_atomic

METADATA_KEY = "__metadata__"
# name -> file inside the package's ``weights/`` folder
SHIPPED: dict[str, str] = {"ifcnn-jax-mf": "ifcnn-jax-mf.npz"}


def shipped_path(name: str) -> Path | None:
    """The file of the shipped model ``name`` (any case), or None when there is none."""
    file = SHIPPED.get(str(name).strip().lower())
    if file is None:
        return None
    path = Path(str(resources.files("ifcnn_jax") / "weights" / file))
    return path if path.is_file() else None


def save_npz(path: str | os.PathLike, params: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Writes ``params`` (nested dicts of arrays) and JSON ``metadata`` atomically."""
    buffer = io.BytesIO()
    flat = {name: np.asarray(value) for name, value in param_trees.flatten(params).items()}
    np.savez(buffer, **flat, **{METADATA_KEY: np.array(json.dumps(metadata, sort_keys=True))})
    return write_bytes_atomic(path, buffer.getvalue())


def load_npz(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads ``(params, metadata)`` written by :func:`save_npz` (no pickle). Raises
    ``IFCNNError`` naming the file when it is not such a file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            flat = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise IFCNNError(f"{path}: not a weights file ({type(exc).__name__}: {str(exc)[:100]})") from None
    if METADATA_KEY not in flat:
        raise IFCNNError(f"{path}: not an ifcnn-jax weights file (no {METADATA_KEY})")
    metadata = json.loads(str(flat.pop(METADATA_KEY)))
    return param_trees.unflatten(flat), metadata
