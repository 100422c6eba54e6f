"""Exports trained parameters as an IFCNN checkpoint that ``ifcnn-fuse --model`` and
``ifcnn_jax.load`` read (the layout of ``ifcnn_jax.checkpoints.save_params``)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from ifcnn_jax.checkpoints import check_replaceable, save_params


def model_tree(params: dict, batch_stats: dict) -> dict:
    """Merges the Param and BatchStat pure-dict trees into the one IFCNN parameter tree
    (``conv2/bn`` holds scale, bias, mean and var)."""
    tree = {name: dict(sub) for name, sub in params.items()}
    for name, stats in batch_stats.items():
        for sub, values in stats.items():
            tree.setdefault(name, {})
            tree[name][sub] = {**tree[name].get(sub, {}), **values}
    return jax.tree.map(np.asarray, tree)


def export_owner(workdir: str | Path) -> str:
    """The ``owner`` recorded in a run's exports: its absolute work directory."""
    return str(Path(workdir).resolve())


def check_export_target(path: str | Path, workdir: str | Path) -> None:
    """Raises ``IFCNNError`` (before any training) unless ``path`` is missing, an empty
    folder, or an earlier export of the run in ``workdir``: a user's files are never
    replaced."""
    check_replaceable(path, force=True, owner=export_owner(workdir))


def export_model(path: str | Path, params: dict, batch_stats: dict, metadata: dict, *,
                 workdir: str | Path) -> Path:
    """Writes the model atomically to ``path``, replacing only an earlier export of the
    same run (the one in ``workdir``).

    ``metadata`` must hold at least ``kind='ifcnn'`` and ``fuse_rule``. Only the
    calling process writes: in a multi-process run call it on one process.
    """
    return save_params(path, model_tree(params, batch_stats), metadata, force=True,
                       owner=export_owner(workdir))
