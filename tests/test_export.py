"""The exported model is an IFCNN checkpoint that ifcnn_jax.load reads back exactly."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import ifcnn_jax
from ifcnn_jax import param_trees
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.checkpoints import load_params
from ifcnn_jax.model import new_ifcnn
from train.checkpointing import check_export_target, export_model


def test_export_round_trips_through_ifcnn_load(tmp_path):

    model = new_ifcnn("sum", seed=3)
    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
    stats = jax.tree.map(lambda v: np.asarray(v) + 0.25, stats)  # not the defaults
    tree = param_trees.merge(params, stats)
    assert set(tree["conv2"]["bn"]) == {"scale", "bias", "mean", "var"}
    path = export_model(
        tmp_path / "model", params, stats, {"kind": "ifcnn", "fuse_rule": "sum", "step": 7}, workdir=tmp_path
    )
    loaded, metadata = load_params(path)
    assert metadata["step"] == 7 and metadata["fuse_rule"] == "sum"
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
    reloaded = ifcnn_jax.load(str(path))
    assert reloaded.fuse_rule == "sum"
    np.testing.assert_array_equal(np.asarray(reloaded.conv3.bn.var[...]), tree["conv3"]["bn"]["var"])
    # A second export of the same run replaces the first atomically.
    export_model(
        tmp_path / "model", params, stats, {"kind": "ifcnn", "fuse_rule": "sum", "step": 8}, workdir=tmp_path
    )
    assert load_params(path)[1]["step"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _small_tree():

    _, params, stats = nnx.split(new_ifcnn("max", seed=1), nnx.Param, nnx.BatchStat)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


class TestExportNeverReplacesUserFiles:
    def test_a_folder_of_user_files_is_kept(self, tmp_path):
        target = tmp_path / "mine"
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
        with pytest.raises(IFCNNError, match="not an ifcnn-jax checkpoint; refusing"):
            check_export_target(target, tmp_path / "run")
        with pytest.raises(IFCNNError, match="refusing"):
            export_model(
                target, *_small_tree(), {"kind": "ifcnn", "fuse_rule": "max"}, workdir=tmp_path / "run"
            )
        assert [p.name for p in target.iterdir()] == ["thesis.tex"]
        assert (target / "thesis.tex").read_text() == "years of work"

    def test_a_file_is_kept_and_not_turned_into_a_folder(self, tmp_path):
        target = tmp_path / "model"
        target.write_text("a file")
        with pytest.raises(IFCNNError, match="not a folder; refusing"):
            check_export_target(target, tmp_path / "run")
        assert target.read_text() == "a file"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    def test_another_runs_export_is_kept(self, tmp_path):
        params, stats = _small_tree()
        export_model(
            tmp_path / "model",
            params,
            stats,
            {"kind": "ifcnn", "fuse_rule": "max", "step": 1},
            workdir=tmp_path / "run-a",
        )
        with pytest.raises(IFCNNError, match="did not write"):
            check_export_target(tmp_path / "model", tmp_path / "run-b")
        assert load_params(tmp_path / "model")[1]["step"] == 1

    def test_an_empty_folder_may_be_used(self, tmp_path):
        (tmp_path / "model").mkdir()
        check_export_target(tmp_path / "model", tmp_path / "run")
