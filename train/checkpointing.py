"""Checkpoints of a training run (Orbax, with the data iterator's state, resumable
exactly) and the export of the trained model in the layout ``ifcnn-fuse --model`` and
``ifcnn_jax.load`` read (``ifcnn_jax.io.checkpoints.save_params``)."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ifcnn_jax import param_trees
from ifcnn_jax.io.checkpoints import check_free_space, check_replaceable, save_params
from train.step import TrainState

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_manager(workdir: Path, config: ml_collections.ConfigDict):

    # The loop decides when to save (every checkpoint_every_steps and at the end).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager((workdir / CHECKPOINT_SUBDIR).absolute(), options=options)


def save_checkpoint(manager, step: int, state: TrainState, data_state: dict) -> None:
    """Saves the train state and the data iterator state as checkpoint ``step`` (in the
    background; Orbax writes to a temporary folder and renames it when complete, so a
    killed run leaves the earlier checkpoints intact)."""

    # A full disk is found before writing: Orbax would fail in a background thread.
    check_free_space(
        Path(manager.directory) / str(step), sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(state))
    )
    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
        force=True,
    )


def restore_checkpoint(manager, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:

    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
    )
    return restored["state"], dict(restored["data"])


def export_owner(workdir: str | Path) -> str:
    """The ``owner`` recorded in a run's exports: its absolute work directory."""
    return str(Path(workdir).resolve())


def check_export_target(path: str | Path, workdir: str | Path) -> None:
    """Raises ``IFCNNError`` (before any training) unless ``path`` is missing, an empty
    folder, or an earlier export of the run in ``workdir``: a user's files are never
    replaced."""
    check_replaceable(path, force=True, owner=export_owner(workdir))


def export_model(
    path: str | Path, params: dict, batch_stats: dict, metadata: dict, *, workdir: str | Path
) -> Path:
    """Writes the model atomically to ``path``, replacing only an earlier export of the
    same run (the one in ``workdir``).

    ``metadata`` must hold at least ``kind='ifcnn'`` and ``fuse_rule``. Only the
    calling process writes: in a multi-process run call it on one process.
    """
    return save_params(
        path, param_trees.merge(params, batch_stats), metadata, force=True, owner=export_owner(workdir)
    )
