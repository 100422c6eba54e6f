"""Model checkpoints: an Orbax directory with a ``params`` tree and a ``metadata`` JSON.

The same layout serves converted PyTorch weights, ResNet-101 feature stacks and
models exported by training, so ``ifcnn_jax.load`` reads all of them. Writes go to a
hidden temporary sibling first and are renamed into place, so a reader never sees a
half-written directory and a failure leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import temporaries

FORMAT_VERSION = 1
PARAMS_ITEM = "params"
METADATA_ITEM = "metadata"


def _orbax():
    import orbax.checkpoint as ocp  # noqa: PLC0415 - Imported lazily: it is slow to import

    return ocp


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder in the layout :func:`save_params` writes."""
    path = Path(path)
    return path.is_dir() and (path / PARAMS_ITEM).is_dir() and (path / METADATA_ITEM).exists()


def check_replaceable(path: str | os.PathLike, *, force: bool, owner: str | None = None) -> None:
    """Raises ``IFCNNError`` unless a checkpoint may be written at ``path``.

    Nothing is ever replaced that this package did not write: a missing path or an
    empty folder is fine; an existing checkpoint only with ``force`` and, when
    ``owner`` is given, only if its metadata names the same ``owner`` (a training
    run's work directory); a file, or a folder holding anything else, never.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise IFCNNError(f"{path} exists and is not a folder; refusing to replace it")
    if not any(path.iterdir()):
        return
    if not is_checkpoint(path):
        raise IFCNNError(
            f"{path} is a folder with files that are not an ifcnn-jax checkpoint; "
            "refusing to replace it (choose another output)"
        )
    if not force:
        raise IFCNNError(f"{path} already exists; pass --force to replace it")
    if owner is not None:
        written_by = read_metadata(path).get("owner")
        if written_by != owner:
            raise IFCNNError(
                f"{path} holds a checkpoint that this run did not write"
                f"{f' (it was written by {written_by})' if written_by else ''}; "
                "refusing to replace it (choose another export folder)"
            )


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, *, force: bool = False, owner: str | None = None
) -> Iterator[Path]:
    """Yields a fresh temporary directory path that becomes ``path`` on success.

    The temporary path sits next to ``path`` (same file system, so the final rename is
    atomic) and does not exist yet when yielded. If the body raises or the command is
    interrupted, it is removed and ``path`` is untouched. What may be replaced is
    decided by :func:`check_replaceable` (``force`` and ``owner``); an old checkpoint
    is swapped out only after the new directory is complete.
    """
    path = Path(path)
    check_replaceable(path, force=force, owner=owner)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    old = path.parent / f".{path.name}.old-{tag}"
    temporaries.register(tmp)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if path.exists():
            temporaries.register(old)
            os.replace(path, old)
            os.replace(tmp, path)
            temporaries.remove(old)
        else:
            os.replace(tmp, path)
    finally:
        temporaries.remove(tmp)


def save_params(
    path: str | os.PathLike,
    params: dict[str, Any],
    metadata: dict[str, Any],
    *,
    force: bool = False,
    owner: str | None = None,
) -> Path:
    """Writes a parameter tree (nested dicts of arrays) and JSON metadata to ``path``.

    ``metadata`` must be JSON-serialisable; ``format_version`` (and ``owner``, when
    given) is added. An existing ``path`` is replaced only as
    :func:`check_replaceable` allows. Only the calling process writes, so in a
    multi-process run call it on one process. A full disk is an ``IFCNNError``
    naming ``path``; nothing is left at ``path`` or beside it.
    """
    ocp = _orbax()
    params = _to_numpy(params)
    metadata = dict(metadata, format_version=FORMAT_VERSION)
    if owner is not None:
        metadata["owner"] = owner
    path = Path(path).absolute()
    check_replaceable(path, force=force, owner=owner)
    check_free_space(path, tree_bytes(params))
    try:
        with atomic_directory(path, force=force, owner=owner) as tmp, _orbax_errors_unlogged():
            with _checkpointer() as checkpointer:
                checkpointer.save(
                    tmp,
                    ocp.args.Composite(
                        **{
                            PARAMS_ITEM: ocp.args.StandardSave(params),
                            METADATA_ITEM: ocp.args.JsonSave(metadata),
                        }
                    ),
                )
    except IFCNNError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        # Orbax and TensorStore report a full disk as RESOURCE_EXHAUSTED (ValueError,
        # sometimes wrapped), with a long multi-line text.
        if not _is_disk_full(exc):
            raise
        raise IFCNNError(f"{path}: cannot write the checkpoint (no space left on device)") from None
    return path


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays in a nested-dict tree (what a checkpoint of it holds, at most)."""
    if isinstance(tree, dict):
        return sum(tree_bytes(v) for v in tree.values())
    return int(getattr(tree, "nbytes", np.asarray(tree).nbytes))


# Orbax's own files (metadata, manifests) beside the arrays.
_CHECKPOINT_OVERHEAD_BYTES = 1 << 20


def check_free_space(path: str | os.PathLike, array_bytes: int) -> None:
    """Raises ``IFCNNError`` naming ``path`` when its file system has less free space
    than a checkpoint of ``array_bytes`` needs (checked before writing: a disk that
    fills up half-way through makes Orbax print pages of tracebacks)."""
    path = Path(path)
    probe = next((p for p in path.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    needed = array_bytes + _CHECKPOINT_OVERHEAD_BYTES
    if free < needed:
        raise IFCNNError(
            f"{path}: no space left on device for the checkpoint (needs about "
            f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free)"
        )


@contextlib.contextmanager
def _orbax_errors_unlogged() -> Iterator[None]:
    # Orbax's writer threads log a failure (a full disk, say) with a long traceback
    # before the same error reaches the caller; the caller reports it, on one line.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if (
            getattr(exc, "errno", None) == errno.ENOSPC
            or "RESOURCE_EXHAUSTED" in str(exc)
            or "No space left" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def load_params(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads ``(params, metadata)`` written by :func:`save_params`; arrays come back as
    NumPy arrays."""
    ocp = _orbax()
    path = Path(path).absolute()
    if not path.is_dir():
        raise IFCNNError(f"{path}: no such checkpoint directory")
    if not (path / PARAMS_ITEM).is_dir() or not (path / METADATA_ITEM).exists():
        raise IFCNNError(
            f"{path} is not an ifcnn-jax checkpoint (expected '{PARAMS_ITEM}' and "
            f"'{METADATA_ITEM}' inside; convert .pth files with convert/from_torch.py)"
        )
    try:
        with _checkpointer() as checkpointer:
            restored = checkpointer.restore(
                path,
                ocp.args.Composite(
                    **{
                        PARAMS_ITEM: ocp.args.StandardRestore(),
                        METADATA_ITEM: ocp.args.JsonRestore(),
                    }
                ),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise IFCNNError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return _to_numpy(restored[PARAMS_ITEM]), dict(restored[METADATA_ITEM])


def _checkpointer():
    # These directories are written and read by the calling process alone (an export at
    # the end of training happens on process 0 only). Orbax's default would wait at a
    # barrier for every process of a multi-process run, forever.
    import jax  # noqa: PLC0415 - lazy: slow to import; reading metadata needs neither

    ocp = _orbax()
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"ifcnn-params-{me}"
    )
    handler = ocp.CompositeCheckpointHandler(
        composite_options=ocp.CompositeOptions(multiprocessing_options=alone),
        **{
            PARAMS_ITEM: ocp.StandardCheckpointHandler(multiprocessing_options=alone),
            METADATA_ITEM: ocp.JsonCheckpointHandler(multiprocessing_options=alone),
        },
    )
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
