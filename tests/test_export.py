"""The exported model is an IFCNN checkpoint that ifcnn_jax.load reads back exactly."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

import ifcnn_jax
from ifcnn_jax.checkpoints import load_params
from train.export import export_model, model_tree


def test_export_round_trips_through_ifcnn_load(tmp_path):
    from ifcnn_jax.model import new_ifcnn

    model = new_ifcnn("sum", seed=3)
    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
    stats = jax.tree.map(lambda v: np.asarray(v) + 0.25, stats)  # not the defaults
    tree = model_tree(params, stats)
    assert set(tree["conv2"]["bn"]) == {"scale", "bias", "mean", "var"}
    path = export_model(tmp_path / "model", params, stats, {"kind": "ifcnn", "fuse_rule": "sum", "step": 7})
    loaded, metadata = load_params(path)
    assert metadata["step"] == 7 and metadata["fuse_rule"] == "sum"
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
    reloaded = ifcnn_jax.load(str(path))
    assert reloaded.fuse_rule == "sum"
    np.testing.assert_array_equal(np.asarray(reloaded.conv3.bn.var[...]), tree["conv3"]["bn"]["var"])
    # A second export replaces the first atomically.
    export_model(tmp_path / "model", params, stats, {"kind": "ifcnn", "fuse_rule": "sum", "step": 8})
    assert load_params(path)[1]["step"] == 8
