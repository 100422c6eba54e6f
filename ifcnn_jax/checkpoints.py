"""Model checkpoints: an Orbax directory with a ``params`` tree and a ``metadata`` JSON.

The same layout serves converted PyTorch weights, ResNet-101 feature stacks and
models exported by training, so ``ifcnn_jax.load`` reads all of them. Writes go to a
hidden temporary sibling first and are renamed into place, so a reader never sees a
half-written directory and a failure leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ifcnn_jax.errors import IFCNNError

FORMAT_VERSION = 1
PARAMS_ITEM = "params"
METADATA_ITEM = "metadata"


def _orbax():
    import orbax.checkpoint as ocp  # Imported lazily: it is slow to import.

    return ocp


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yields a fresh temporary directory path that becomes ``path`` on success.

    The temporary path sits next to ``path`` (same file system, so the final rename is
    atomic) and does not exist yet when yielded. If the body raises, it is removed and
    ``path`` is untouched. An existing ``path`` is an error unless ``force``; then it
    is replaced only after the new directory is complete.
    """
    path = Path(path)
    if path.exists() and not force:
        raise IFCNNError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.old-{tag}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_params(path: str | os.PathLike, params: dict[str, Any], metadata: dict[str, Any], *,
                force: bool = False) -> Path:
    """Writes a parameter tree (nested dicts of arrays) and JSON metadata to ``path``.

    ``metadata`` must be JSON-serialisable; ``format_version`` is added. Only the
    calling process writes, so in a multi-process run call it on one process.
    """
    ocp = _orbax()
    params = _to_numpy(params)
    metadata = dict(metadata, format_version=FORMAT_VERSION)
    path = Path(path).absolute()
    with atomic_directory(path, force=force) as tmp:
        with _checkpointer() as checkpointer:
            checkpointer.save(tmp, ocp.args.Composite(**{
                PARAMS_ITEM: ocp.args.StandardSave(params),
                METADATA_ITEM: ocp.args.JsonSave(metadata),
            }))
    return path


def load_params(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads ``(params, metadata)`` written by :func:`save_params`; arrays come back as
    NumPy arrays."""
    ocp = _orbax()
    path = Path(path).absolute()
    if not path.is_dir():
        raise IFCNNError(f"{path}: no such checkpoint directory")
    if not (path / PARAMS_ITEM).is_dir() or not (path / METADATA_ITEM).exists():
        raise IFCNNError(f"{path} is not an ifcnn-jax checkpoint (expected '{PARAMS_ITEM}' and "
                         f"'{METADATA_ITEM}' inside; convert .pth files with convert/from_torch.py)")
    try:
        with _checkpointer() as checkpointer:
            restored = checkpointer.restore(path, ocp.args.Composite(**{
                PARAMS_ITEM: ocp.args.StandardRestore(),
                METADATA_ITEM: ocp.args.JsonRestore(),
            }))
    except (OSError, ValueError, KeyError) as exc:
        raise IFCNNError(f"{path}: cannot read checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return _to_numpy(restored[PARAMS_ITEM]), dict(restored[METADATA_ITEM])


def _checkpointer():
    # These directories are written and read by the calling process alone (an export at
    # the end of training happens on process 0 only). Orbax's default would wait at a
    # barrier for every process of a multi-process run, forever.
    import jax

    ocp = _orbax()
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                               barrier_sync_key_prefix=f"ifcnn-params-{me}")
    handler = ocp.CompositeCheckpointHandler(
        composite_options=ocp.CompositeOptions(multiprocessing_options=alone),
        **{PARAMS_ITEM: ocp.StandardCheckpointHandler(multiprocessing_options=alone),
           METADATA_ITEM: ocp.JsonCheckpointHandler(multiprocessing_options=alone)})
    return ocp.Checkpointer(handler, multiprocessing_options=alone)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Reads only the metadata of a checkpoint (fast; no arrays are loaded)."""
    meta_file = Path(path) / METADATA_ITEM / METADATA_ITEM
    if meta_file.is_file():
        try:
            return json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    _, metadata = load_params(path)
    return metadata
